package gateway

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Authentication: JWTs verified with github.com/golang-jwt/jwt/v5.
//
// A token names the user in `sub`, must carry `exp`, and lists the user's
// channels in the claim auth.channels_claim (default "channels"):
//
//	{"sub": "alice", "exp": 1767225600,
//	 "channels": {"sub": ["doc:*", "lobby:main"], "pub": ["doc:123"]}}
//
// Patterns match whole channel names; `*` matches any run of characters.
// Namespaces in auth.public_namespaces may be subscribed by every
// authenticated user. Presence of a channel is visible to those who may
// subscribe to it.
//
// Algorithms are pinned to the configured keys: HS256 only with
// auth.hmac_secret, RS256/ES256 only with a public key or JWKS of the
// matching type. "none" and HS/RS confusion (an RS public key used as an
// HMAC secret) are refused.

// identity is what a verified token grants.
type identity struct {
	user    string
	expires time.Time
	issued  int64    // the token's iat, unix seconds; 0 when it has none
	sub     []string // channel patterns the user may subscribe to
	pub     []string // channel patterns the user may publish to
	proxied bool     // granted by the event proxy's connect hook, not a token
	// viaJWKS: the token was verified by the JWKS key kid; when a refetched
	// set no longer holds that key, the connection is cut (jwksCut).
	viaJWKS bool
	kid     string
}

type authenticator struct {
	cfg     AuthConfig
	hmac    []byte
	pubKey  crypto.PublicKey // RSA or ECDSA, from auth.public_key_file
	jwks    *jwksCache
	methods []string
}

func newAuthenticator(cfg AuthConfig, log *slog.Logger) (*authenticator, error) {
	if !cfg.On() {
		return nil, nil
	}
	a := &authenticator{cfg: cfg}
	if cfg.HMACSecret != "" {
		a.hmac = []byte(cfg.HMACSecret)
		a.methods = append(a.methods, "HS256")
	}
	if cfg.PublicKeyFile != "" {
		pem, err := os.ReadFile(cfg.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("gateway: auth.public_key_file: %w", err)
		}
		if k, err := jwt.ParseRSAPublicKeyFromPEM(pem); err == nil {
			a.pubKey = k
			a.methods = append(a.methods, "RS256")
		} else if k, err := jwt.ParseECPublicKeyFromPEM(pem); err == nil {
			a.pubKey = k
			a.methods = append(a.methods, "ES256")
		} else {
			return nil, fmt.Errorf("gateway: auth.public_key_file %s: want a PEM RSA or ECDSA public key", cfg.PublicKeyFile)
		}
	}
	if cfg.JWKSURL != "" {
		a.jwks = newJWKSCache(cfg.JWKSURL, log)
		a.methods = append(a.methods, "RS256", "ES256")
	}
	return a, nil
}

var (
	errNoToken = errors.New("a token is required: connect with \"token\" or ?token= on the URL")
	errNoSub   = errors.New("token has no sub (user id)")
)

// verify checks a token and returns what it grants. Its error text is safe
// to show to the client.
func (a *authenticator) verify(ctx context.Context, token string) (*identity, error) {
	if token == "" {
		return nil, errNoToken
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(a.methods), jwt.WithExpirationRequired(), jwt.WithLeeway(5 * time.Second)}
	if a.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(a.cfg.Issuer))
	}
	if a.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(a.cfg.Audience))
	}
	claims := jwt.MapClaims{}
	var (
		viaJWKS bool
		kid     string
	)
	_, err := jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		k, jwksKid, err := a.key(ctx, t)
		viaJWKS, kid = jwksKid != nil, deref(jwksKid)
		return k, err
	}, opts...)
	if err != nil {
		return nil, tokenError(err)
	}
	sub, _ := claims.GetSubject()
	if sub == "" || len(sub) > maxUserLen {
		return nil, errNoSub
	}
	id := &identity{user: sub, viaJWKS: viaJWKS, kid: kid}
	if exp, _ := claims.GetExpirationTime(); exp != nil {
		id.expires = exp.Time
	}
	if iat, _ := claims.GetIssuedAt(); iat != nil {
		id.issued = iat.Unix()
	}
	if perms, ok := claims[a.cfg.ChannelsClaim].(map[string]any); ok {
		id.sub = stringList(perms["sub"])
		id.pub = stringList(perms["pub"])
	}
	return id, nil
}

// key picks the verification key for t's algorithm; a key of the wrong type
// for the algorithm is never returned. jwksKid is the kid of the JWKS key
// returned (nil when the key is not from the JWKS).
func (a *authenticator) key(ctx context.Context, t *jwt.Token) (k any, jwksKid *string, err error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if a.hmac == nil {
			return nil, nil, errors.New("HMAC tokens are not accepted")
		}
		return a.hmac, nil, nil
	case *jwt.SigningMethodRSA, *jwt.SigningMethodECDSA:
		var pk crypto.PublicKey
		if kid, _ := t.Header["kid"].(string); a.jwks != nil && (kid != "" || a.pubKey == nil) {
			var found string
			if pk, found, err = a.jwks.get(ctx, kid); err != nil {
				return nil, nil, err
			}
			jwksKid = &found
		} else {
			pk = a.pubKey
		}
		switch pk.(type) {
		case *rsa.PublicKey:
			if _, ok := t.Method.(*jwt.SigningMethodRSA); ok {
				return pk, jwksKid, nil
			}
		case *ecdsa.PublicKey:
			if _, ok := t.Method.(*jwt.SigningMethodECDSA); ok {
				return pk, jwksKid, nil
			}
		}
		return nil, nil, errors.New("no key of the token's type is configured")
	}
	return nil, nil, fmt.Errorf("algorithm %s is not accepted", t.Method.Alg())
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func tokenError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return errors.New("token expired")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return errors.New("token has no exp")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return errors.New("token signature is invalid")
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errors.New("token is malformed")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errors.New("token is not valid yet")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errors.New("token is for another issuer or audience")
	}
	return errors.New("token rejected: " + err.Error())
}

func stringList(v any) []string {
	items, _ := v.([]any)
	out := make([]string, 0, len(items))
	for _, it := range items {
		if s, ok := it.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

// matchChannel reports whether ch matches pattern, where `*` matches any
// run of characters (channel names cannot contain `*`).
func matchChannel(pattern, ch string) bool {
	star := strings.IndexByte(pattern, '*')
	if star < 0 {
		return pattern == ch
	}
	if !strings.HasPrefix(ch, pattern[:star]) {
		return false
	}
	rest := pattern[star+1:]
	ch = ch[star:]
	if rest == "" {
		return true
	}
	for i := 0; i <= len(ch); i++ {
		if matchChannel(rest, ch[i:]) {
			return true
		}
	}
	return false
}

func matchAny(patterns []string, ch string) bool {
	for _, p := range patterns {
		if matchChannel(p, ch) {
			return true
		}
	}
	return false
}

// ---- JWKS ----

// jwksCache holds a JSON Web Key Set fetched from a URL: refreshed every
// jwksRefresh (when a token arrives, and by the heartbeat sweep while the
// node holds a set: refreshStale), and on demand (at most every
// jwksMinRefetch) when a token names an unknown kid, so key rotation needs
// no restart. When a fetch drops a key (or gives its kid another key),
// removed is called with the kids that went, after the cache's lock is
// released: the server cuts the connections those keys verified.
type jwksCache struct {
	url     string
	log     *slog.Logger
	http    *http.Client
	removed func(kids map[string]bool)

	mu      sync.Mutex
	keys    map[string]crypto.PublicKey
	fetched time.Time
	tried   time.Time
}

const (
	jwksRefresh    = 5 * time.Minute
	jwksMinRefetch = 10 * time.Second
)

func newJWKSCache(url string, log *slog.Logger) *jwksCache {
	return &jwksCache{url: url, log: log, http: &http.Client{Timeout: 5 * time.Second}}
}

// get returns the key for kid and the kid it is filed under (an empty kid
// matches a set of one key).
func (c *jwksCache) get(ctx context.Context, kid string) (crypto.PublicKey, string, error) {
	c.mu.Lock()
	k, found, ok := c.lookup(kid)
	stale := time.Since(c.fetched) > jwksRefresh
	if (ok && !stale) || time.Since(c.tried) < jwksMinRefetch {
		c.mu.Unlock()
		if ok {
			return k, found, nil
		}
		return nil, "", fmt.Errorf("unknown key id %q", kid)
	}
	gone := c.fetchLocked(ctx)
	k, found, ok = c.lookup(kid)
	c.mu.Unlock()
	c.report(gone)
	if ok {
		return k, found, nil
	}
	return nil, "", fmt.Errorf("unknown key id %q", kid)
}

// refreshStale refetches a set the node holds once it is older than
// jwksRefresh (and no fetch was tried within jwksMinRefetch), so a removed
// key cuts its connections even when no new token arrives.
func (c *jwksCache) refreshStale(ctx context.Context) {
	c.mu.Lock()
	if c.keys == nil || time.Since(c.fetched) <= jwksRefresh || time.Since(c.tried) < jwksMinRefetch {
		c.mu.Unlock()
		return
	}
	gone := c.fetchLocked(ctx)
	c.mu.Unlock()
	c.report(gone)
}

// due reports whether refreshStale would fetch. It never waits: the
// heartbeat sweep asks, and a fetch (up to the HTTP timeout) holds c.mu,
// so a held lock answers false.
func (c *jwksCache) due() bool {
	if !c.mu.TryLock() {
		return false
	}
	defer c.mu.Unlock()
	return c.keys != nil && time.Since(c.fetched) > jwksRefresh && time.Since(c.tried) >= jwksMinRefetch
}

// fetchLocked fetches the set and, when it succeeds, replaces the keys and
// returns the kids whose key is gone. A failed fetch, or a set with no
// usable signing key (a misconfigured key server, never a rotation),
// keeps the keys the node has. c.mu is held.
func (c *jwksCache) fetchLocked(ctx context.Context) map[string]bool {
	c.tried = time.Now()
	keys, err := fetchJWKS(ctx, c.http, c.url)
	if err == nil && len(keys) == 0 {
		err = errors.New("the set holds no usable signing key")
	}
	if err != nil {
		c.log.Warn("JWKS fetch failed", "url", c.url, "err", err)
		return nil
	}
	var gone map[string]bool
	for kid, old := range c.keys {
		if k, ok := keys[kid]; !ok || !sameKey(old, k) {
			if gone == nil {
				gone = make(map[string]bool)
			}
			gone[kid] = true
		}
	}
	c.keys, c.fetched = keys, time.Now()
	return gone
}

func (c *jwksCache) report(gone map[string]bool) {
	if len(gone) > 0 && c.removed != nil {
		c.log.Info("JWKS keys removed: cutting the connections they verified", "kids", len(gone))
		c.removed(gone)
	}
}

func sameKey(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// lookup finds kid; an empty kid matches a set with exactly one key.
func (c *jwksCache) lookup(kid string) (crypto.PublicKey, string, bool) {
	if kid == "" && len(c.keys) == 1 {
		for id, k := range c.keys {
			return k, id, true
		}
	}
	k, ok := c.keys[kid]
	return k, kid, ok
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func fetchJWKS(ctx context.Context, client *http.Client, url string) (map[string]crypto.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, err
	}
	keys := make(map[string]crypto.PublicKey)
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if pk, err := k.publicKey(); err == nil {
			keys[k.Kid] = pk
		}
	}
	return keys, nil
}

func (k jwk) publicKey() (crypto.PublicKey, error) {
	b64 := base64.RawURLEncoding
	switch k.Kty {
	case "RSA":
		n, err1 := b64.DecodeString(k.N)
		e, err2 := b64.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(e) > 4 {
			return nil, errors.New("bad RSA key")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	case "EC":
		if k.Crv != "P-256" {
			return nil, errors.New("unsupported curve")
		}
		x, err1 := b64.DecodeString(k.X)
		y, err2 := b64.DecodeString(k.Y)
		if err1 != nil || err2 != nil {
			return nil, errors.New("bad EC key")
		}
		pk := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
		if !pk.Curve.IsOnCurve(pk.X, pk.Y) {
			return nil, errors.New("EC point not on curve")
		}
		return pk, nil
	}
	return nil, errors.New("unsupported key type")
}
