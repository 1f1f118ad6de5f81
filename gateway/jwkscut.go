package gateway

import (
	"context"
	"time"

	"github.com/gobwas/ws"
)

// Key removal cuts the connections the removed key verified.
//
// Rotating the signing key (publish a new kid in the JWKS, remove the old
// one) is how an operator invalidates every token signed by the old key.
// New tokens signed by it are refused once the node refetches the set; the
// connections they opened are disconnected then too, with `token_revoked`
// (reconnect: true, close status 1008): the client reconnects with a token
// signed by a key the set still holds, and the old token is refused with
// `unauthorized`. One sweep of the node's connections per fetch that
// removed keys (fetches happen at most every jwksMinRefetch), run by one
// owned goroutine: no work per connection beyond a field compare.

// watchJWKS makes a key removal cut its connections.
func (s *Server) watchJWKS() {
	if s.auth == nil || s.auth.jwks == nil {
		return
	}
	s.auth.jwks.removed = func(kids map[string]bool) {
		s.goOwned(func() { s.cutRemovedKeys(kids) })
	}
}

// refreshJWKS refetches a stale key set off the heartbeat sweep, at most
// one fetch at a time.
func (s *Server) refreshJWKS() {
	if s.auth == nil || s.auth.jwks == nil || !s.auth.jwks.due() || !s.jwksBusy.CompareAndSwap(false, true) {
		return
	}
	s.goOwned(func() {
		defer s.jwksBusy.Store(false)
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		defer cancel()
		s.auth.jwks.refreshStale(ctx)
	})
}

// cutRemovedKeys disconnects the connections whose token was verified by
// a JWKS key in kids. A connection that renewed its token (`refresh`)
// holds the identity of the new token, and is cut only if that one's key
// went too.
func (s *Server) cutRemovedKeys(kids map[string]bool) {
	n := 0
	s.eachConn(func(c *conn) {
		if !c.authed.Load() {
			return
		}
		if id := c.identity(); id != nil && id.viaJWKS && kids[id.kid] {
			if c.closeWith("token_revoked", "the token's signing key was removed from the key set; reconnect with a new token", true, ws.StatusPolicyViolation, false) {
				s.metrics.jwksCuts.Inc()
				n++
			}
		}
	})
	s.log.Info("JWKS key removal: connections cut", "connections", n)
}
