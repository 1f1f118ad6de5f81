package gateway_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
)

// TestJWKSRefetchBounds: the JWKS cache rules docs/security.md states,
// against a real key-set server that counts its fetches and can be made to
// fail. Time passing is simulated by ageing the cache's timestamps.
//   - a known kid is served from the cache for 5 minutes, then the set is
//     refetched (a removed key stops validating then, not before);
//   - an unknown kid refetches at most every 10 s;
//   - a failed fetch keeps the keys the node has.
func TestJWKSRefetchBounds(t *testing.T) {
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := rsa.GenerateKey(rand.Reader, 2048)
	b64 := base64.RawURLEncoding
	jwk := func(kid string, k *rsa.PrivateKey) map[string]string {
		return map[string]string{"kty": "RSA", "kid": kid, "use": "sig",
			"n": b64.EncodeToString(k.N.Bytes()), "e": b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
	}
	var (
		mu      sync.Mutex
		keys    = []map[string]string{jwk("r1", k1)}
		fetches atomic.Int32
		failing atomic.Bool
	)
	js := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	defer js.Close()
	setKeys := func(ks ...map[string]string) { mu.Lock(); keys = ks; mu.Unlock() }

	ts := startServer(t, "epoll", func(c *config.Config) { c.Auth.JWKSURL = js.URL })
	good := userClaims("carol", []string{"doc:*"}, nil, time.Hour)
	sign := func(k *rsa.PrivateKey, kid string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims(good))
		tok.Header["kid"] = kid
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	expect := func(step string, k *rsa.PrivateKey, kid string, ok bool, wantFetches int32) {
		t.Helper()
		c := dial(t, ts)
		defer c.Close()
		r := c.Call("connect", map[string]any{"token": sign(k, kid)})
		if got := r.Op() == "connected"; got != ok || (!ok && r.Str("code") != "unauthorized") {
			t.Fatalf("%s: connect with kid %s = %v, want connected %v", step, kid, r, ok)
		}
		if n := fetches.Load(); n != wantFetches {
			t.Fatalf("%s: %d JWKS fetches, want %d", step, n, wantFetches)
		}
	}
	age := func(d time.Duration) { gateway.AgeJWKSForTest(ts.srv, d) }

	expect("first token", k1, "r1", true, 1)
	expect("known kid, fresh set", k1, "r1", true, 1)

	// Rotation: r2 published. Within 10 s of the last fetch an unknown kid
	// does not refetch; past 10 s it does.
	setKeys(jwk("r1", k1), jwk("r2", k2))
	expect("unknown kid at once", k2, "r2", false, 1)
	age(9 * time.Second)
	expect("unknown kid 9 s on", k2, "r2", false, 1)
	age(2 * time.Second)
	expect("unknown kid 11 s on", k2, "r2", true, 2)
	expect("unknown kid again at once", k1, "nope", false, 2)

	// The key-set server fails: the fetch is tried, the keys stay.
	failing.Store(true)
	age(11 * time.Second)
	expect("unknown kid, fetch fails", k1, "nope", false, 3)
	expect("old key after the failed fetch", k1, "r1", true, 3)
	expect("new key after the failed fetch", k2, "r2", true, 3)
	age(5*time.Minute + time.Second)
	expect("stale set, fetch fails", k1, "r1", true, 4)

	// The server is back: the next unknown kid past 10 s refetches.
	failing.Store(false)
	age(11 * time.Second)
	expect("unknown kid, server back", k1, "other", false, 5)

	// r1 removed: it keeps validating until the set is 5 minutes old, then
	// the set is refetched and it is refused.
	setKeys(jwk("r2", k2))
	expect("removed key, fresh set", k1, "r1", true, 5)
	age(4*time.Minute + 50*time.Second)
	expect("removed key, set 4m50s old", k1, "r1", true, 5)
	age(11 * time.Second)
	expect("removed key, set over 5 min old", k1, "r1", false, 6)
	expect("new key after the refetch", k2, "r2", true, 6)
}
