package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

var testSecret = strings.Repeat("s", 32)

type claims map[string]any

func hsToken(t testing.TB, c claims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(c)).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func userClaims(user string, sub, pub []string, ttl time.Duration) claims {
	return claims{"sub": user, "exp": time.Now().Add(ttl).Unix(), "channels": map[string]any{"sub": sub, "pub": pub}}
}

func withHMAC(c *config.Config) {
	c.Auth.HMACSecret = testSecret
	c.Auth.PublicNamespaces = []string{"lobby"}
}

func TestAuthTokens(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, withHMAC)
		good := userClaims("alice", []string{"doc:*"}, []string{"doc:1"}, time.Hour)

		c := dial(t, ts)
		// Nothing before connect.
		if r := c.Call("sub", map[string]any{"ch": "doc:1"}); r.Str("code") != "unauthorized" {
			t.Fatalf("sub before connect = %v", r)
		}
		for _, tc := range []struct {
			name, token, msg string
		}{
			{"missing", "", "token is required"},
			{"garbage", "not.a.jwt", "malformed"},
			{"expired", hsToken(t, userClaims("alice", nil, nil, -time.Minute)), "expired"},
			{"no exp", hsToken(t, claims{"sub": "alice"}), "no exp"},
			{"no sub", hsToken(t, claims{"exp": time.Now().Add(time.Hour).Unix()}), "no sub"},
			{"wrong secret", func() string {
				s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(good)).SignedString([]byte(strings.Repeat("x", 32)))
				return s
			}(), "signature"},
			{"alg none", func() string {
				s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims(good)).SignedString(jwt.UnsafeAllowNoneSignatureType)
				return s
			}(), ""},
			{"HS512 not allowed", func() string {
				s, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims(good)).SignedString([]byte(testSecret))
				return s
			}(), ""},
		} {
			r := c.Call("connect", map[string]any{"token": tc.token})
			if r.Op() != "error" || r.Str("code") != "unauthorized" || !strings.Contains(r.Str("message"), tc.msg) {
				t.Fatalf("%s: connect = %v", tc.name, r)
			}
		}
		// A valid token after failures: the connection is usable.
		r := c.MustCall("connect", map[string]any{"token": hsToken(t, good), "user": "mallory"}, "connected")
		if r.Str("user") != "alice" || r.Num("exp") == 0 {
			t.Fatalf("connected = %v", r)
		}

		// Permissions.
		c.Sub("doc:7")       // doc:* may subscribe
		c.Sub("lobby:main")  // public namespace
		c.Pub("doc:1", "ok") // may publish doc:1
		for _, tc := range []struct{ op, ch string }{
			{"sub", "secret:1"}, {"pub", "doc:7"}, {"pub", "lobby:main"}, {"presence", "secret:1"},
		} {
			r := c.Call(tc.op, map[string]any{"ch": tc.ch, "data": 1})
			if r.Str("code") != "forbidden" {
				t.Fatalf("%s %s = %v", tc.op, tc.ch, r)
			}
		}
		c.MustCall("presence", map[string]any{"ch": "doc:7"}, "presence")

		// Token on the URL.
		u := wstest.Dial(t, ts.url()+"?token="+hsToken(t, userClaims("bob", []string{"doc:1"}, nil, time.Hour)))
		if r := u.Connect("ignored"); r.Str("user") != "bob" {
			t.Fatalf("connected = %v", r)
		}

		// refresh: same user extends; another user is refused.
		later := userClaims("alice", []string{"doc:*"}, nil, 2*time.Hour)
		rr := c.MustCall("refresh", map[string]any{"token": hsToken(t, later)}, "refreshed")
		if rr.Num("exp") != uint64(later["exp"].(int64)) {
			t.Fatalf("refreshed = %v", rr)
		}
		if r := c.Call("refresh", map[string]any{"token": hsToken(t, userClaims("eve", nil, nil, time.Hour))}); r.Str("code") != "unauthorized" {
			t.Fatalf("refresh as another user = %v", r)
		}
		// The refreshed token has no pub rights: publishing is now forbidden.
		if r := c.Call("pub", map[string]any{"ch": "doc:1", "data": 1}); r.Str("code") != "forbidden" {
			t.Fatalf("pub after refresh = %v", r)
		}
	})
}

func TestAuthTokenExpiryDisconnects(t *testing.T) {
	ts := startServer(t, "epoll", withHMAC)
	c := dial(t, ts)
	c.MustCall("connect", map[string]any{"token": hsToken(t, userClaims("alice", nil, nil, 1500*time.Millisecond))}, "connected")
	d := c.NextOp("disconnect")
	if d.Str("code") != "token_expired" || d["reconnect"] != true {
		t.Fatalf("disconnect = %v", d)
	}
	c.WaitClosed()
}

func TestAuthConnectDeadline(t *testing.T) {
	ts := startServer(t, "epoll", func(c *config.Config) {
		withHMAC(c)
		c.Client.HandshakeTimeout = time.Second
	})
	c := dial(t, ts)
	d := c.NextOp("disconnect")
	if d.Str("code") != "unauthorized" || d["reconnect"] != false {
		t.Fatalf("disconnect = %v", d)
	}
}

// TestAuthPublicKeys checks RS256 and ES256 from key files, JWKS with key
// rotation, and that an RS public key cannot be used as an HMAC secret.
func TestAuthPublicKeys(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dir := t.TempDir()
	writePub := func(name string, pub any) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
		return p
	}
	rsaFile, ecFile := writePub("rsa.pem", &rsaKey.PublicKey), writePub("ec.pem", &ecKey.PublicKey)
	good := userClaims("carol", []string{"doc:*"}, nil, time.Hour)
	sign := func(m jwt.SigningMethod, key any, kid string) string {
		tok := jwt.NewWithClaims(m, jwt.MapClaims(good))
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	try := func(ts *testServer, token string) wstest.Msg {
		c := dial(t, ts)
		return c.Call("connect", map[string]any{"token": token})
	}

	t.Run("rsa file", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) { c.Auth.PublicKeyFile = rsaFile })
		if r := try(ts, sign(jwt.SigningMethodRS256, rsaKey, "")); r.Op() != "connected" {
			t.Fatalf("RS256 = %v", r)
		}
		pemBytes, _ := os.ReadFile(rsaFile)
		if r := try(ts, sign(jwt.SigningMethodHS256, pemBytes, "")); r.Str("code") != "unauthorized" {
			t.Fatalf("HS256 signed with the RSA public key = %v", r)
		}
		if r := try(ts, sign(jwt.SigningMethodES256, ecKey, "")); r.Str("code") != "unauthorized" {
			t.Fatalf("ES256 on an RSA-only node = %v", r)
		}
	})
	t.Run("ec file", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) { c.Auth.PublicKeyFile = ecFile })
		if r := try(ts, sign(jwt.SigningMethodES256, ecKey, "")); r.Op() != "connected" {
			t.Fatalf("ES256 = %v", r)
		}
	})
	t.Run("jwks", func(t *testing.T) {
		b64 := base64.RawURLEncoding
		keys := []map[string]string{{
			"kty": "RSA", "kid": "r1", "use": "sig",
			"n": b64.EncodeToString(rsaKey.N.Bytes()), "e": b64.EncodeToString(big.NewInt(int64(rsaKey.E)).Bytes()),
		}}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(map[string]any{"keys": keys})
		}))
		defer srv.Close()
		ts := startServer(t, "epoll", func(c *config.Config) { c.Auth.JWKSURL = srv.URL })
		if r := try(ts, sign(jwt.SigningMethodRS256, rsaKey, "r1")); r.Op() != "connected" {
			t.Fatalf("RS256 via JWKS = %v", r)
		}
		if r := try(ts, sign(jwt.SigningMethodRS256, rsaKey, "nope")); r.Str("code") != "unauthorized" {
			t.Fatalf("unknown kid = %v", r)
		}
	})
}

// FuzzVerifyToken feeds arbitrary tokens to the verifier: it must never
// panic, and must accept only tokens the jwt library itself verifies with
// our secret.
func FuzzVerifyToken(f *testing.F) {
	f.Add(hsToken(f, userClaims("alice", []string{"doc:*"}, nil, time.Hour)))
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, token string) {
		ok := gateway.VerifyTokenForTest(testSecret, token)
		ref, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return []byte(testSecret), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
		refOK := err == nil && ref.Valid
		if ok && !refOK {
			t.Fatalf("accepted a token the library rejects: %q", token)
		}
	})
}

// TestAuthClaimsChecked: the claim checks docs/security.md states. exp has
// a 5 s leeway (2 s past is accepted, 8 s past refused), a future nbf is
// refused, and iss / aud must match auth.issuer / auth.audience when set.
func TestAuthClaimsChecked(t *testing.T) {
	ts := startServer(t, "epoll", func(c *config.Config) {
		withHMAC(c)
		c.Auth.Issuer = "https://idp.example"
		c.Auth.Audience = "syncgate"
	})
	now := time.Now()
	tok := func(edit func(claims)) string {
		c := claims{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "iss": "https://idp.example", "aud": "syncgate"}
		edit(c)
		return hsToken(t, c)
	}
	for _, tc := range []struct {
		name  string
		edit  func(claims)
		valid bool
	}{
		{"all good", func(claims) {}, true},
		{"exp 2 s past: within the leeway", func(c claims) { c["exp"] = now.Add(-2 * time.Second).Unix() }, true},
		{"exp 8 s past", func(c claims) { c["exp"] = now.Add(-8 * time.Second).Unix() }, false},
		{"nbf in a minute", func(c claims) { c["nbf"] = now.Add(time.Minute).Unix() }, false},
		{"other issuer", func(c claims) { c["iss"] = "https://evil.example" }, false},
		{"no issuer", func(c claims) { delete(c, "iss") }, false},
		{"other audience", func(c claims) { c["aud"] = "other" }, false},
		{"no audience", func(c claims) { delete(c, "aud") }, false},
	} {
		c := dial(t, ts)
		r := c.Call("connect", map[string]any{"token": tok(tc.edit)})
		if tc.valid && r.Op() != "connected" || !tc.valid && (r.Op() != "error" || r.Str("code") != "unauthorized") {
			t.Errorf("%s: %v", tc.name, r)
		}
		c.Close()
	}
}

// TestFromIsTheTokenSub: `from` on a message is the publisher's token
// `sub`, set by the server; a `from` the publisher puts in its command is
// ignored (docs/security.md: a user cannot publish as someone else).
func TestFromIsTheTokenSub(t *testing.T) {
	ts := startServer(t, "epoll", withHMAC)
	sub := dial(t, ts)
	sub.MustCall("connect", map[string]any{"token": hsToken(t, userClaims("bob", []string{"doc:*"}, nil, time.Hour))}, "connected")
	sub.Sub("doc:1")
	pub := dial(t, ts)
	pub.MustCall("connect", map[string]any{"token": hsToken(t, userClaims("alice", nil, []string{"doc:1"}, time.Hour))}, "connected")
	pub.SendRaw(`{"op":"pub","id":7,"ch":"doc:1","from":"ceo","user":"ceo","data":{"from":"ceo"}}`)
	if a := pub.NextOp("ack"); a.Num("id") != 7 {
		t.Fatalf("ack %v", a)
	}
	m := sub.NextOp("msg")
	if m.Str("from") != "alice" {
		t.Fatalf("msg from %q, want the token's sub alice: %v", m.Str("from"), m)
	}
}
