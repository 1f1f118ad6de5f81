package gateway

import (
	"context"
	"log/slog"
	"time"
)

// VerifyTokenForTest runs the token verifier on an HS256 configuration.
func VerifyTokenForTest(secret, token string) bool {
	a, err := newAuthenticator(AuthConfig{HMACSecret: secret, ChannelsClaim: "channels"}, slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	_, err = a.verify(context.Background(), token)
	return err == nil
}

// AgeJWKSForTest moves the JWKS cache's last fetch and last fetch attempt
// back by d, as if d had passed since (the cache reads the wall clock).
func AgeJWKSForTest(s *Server, d time.Duration) {
	c := s.auth.jwks
	c.mu.Lock()
	c.fetched = c.fetched.Add(-d)
	c.tried = c.tried.Add(-d)
	c.mu.Unlock()
}

// ClosingForTest counts the connections that are closing (a disconnect
// queued, the socket not yet closed): cheaper to poll than /metrics.
func ClosingForTest(s *Server) int {
	n := 0
	s.eachConn(func(c *conn) {
		if c.isClosing() {
			n++
		}
	})
	return n
}

// SetCloseGraceForTest sets how long a closing connection may take to
// flush its last frames (closeGrace, 1 s).
func SetCloseGraceForTest(s *Server, d time.Duration) { s.graceNs.Store(int64(d)) }
