package gateway_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
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
	js := newKeySet(t, jwkOf("r1", k1))
	fetches, failing, setKeys := &js.fetches, &js.failing, js.set
	jwk := jwkOf

	ts := startServer(t, "epoll", func(c *config.Config) { c.Auth.JWKSURL = js.URL })
	good := userClaims("carol", []string{"doc:*"}, nil, time.Hour)
	sign := func(k *rsa.PrivateKey, kid string) string { return rsToken(t, good, k, kid) }
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

// keySet is a real JWKS server on a loopback port that counts its fetches
// and can be made to fail or to change its keys.
type keySet struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []map[string]string
	fetches atomic.Int32
	failing atomic.Bool
}

func newKeySet(t *testing.T, keys ...map[string]string) *keySet {
	js := &keySet{keys: keys}
	js.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		js.fetches.Add(1)
		if js.failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		js.mu.Lock()
		defer js.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"keys": js.keys})
	}))
	t.Cleanup(js.Close)
	return js
}

func (js *keySet) set(keys ...map[string]string) { js.mu.Lock(); js.keys = keys; js.mu.Unlock() }

func jwkOf(kid string, k *rsa.PrivateKey) map[string]string {
	b64 := base64.RawURLEncoding
	return map[string]string{"kty": "RSA", "kid": kid, "use": "sig",
		"n": b64.EncodeToString(k.N.Bytes()), "e": b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
}

func rsToken(t testing.TB, c claims, k *rsa.PrivateKey, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims(c))
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestJWKSRemovedKeyCutsConnections: rotating the signing key cuts the
// open connections its tokens opened (docs/security.md). Against a real
// key-set server, with no new token arriving (the node's own sweep
// refetches a set older than 5 minutes; time passing is simulated by
// ageing the cache):
//   - a failed fetch, or a set with no usable key, cuts nobody;
//   - a set without r1 cuts the connection whose token r1 signed
//     (`token_revoked`, reconnect true, close status 1008, counted), not
//     the one signed by r2 nor the one that renewed its token with an r2
//     one (`refresh`); the old token is then refused.
func TestJWKSRemovedKeyCutsConnections(t *testing.T) {
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := rsa.GenerateKey(rand.Reader, 2048)
	js := newKeySet(t, jwkOf("r1", k1), jwkOf("r2", k2))
	forModes(t, func(t *testing.T, mode string) {
		js.set(jwkOf("r1", k1), jwkOf("r2", k2))
		js.failing.Store(false)
		js.fetches.Store(0)
		ts := startServer(t, mode, func(c *config.Config) { c.Auth.JWKSURL = js.URL })
		good := userClaims("carol", []string{"doc:*"}, nil, time.Hour)
		old, fresh := rsToken(t, good, k1, "r1"), rsToken(t, good, k2, "r2")
		connect := func(tok string) *wstest.Client {
			c := dial(t, ts)
			c.MustCall("connect", map[string]any{"token": tok}, "connected")
			return c
		}
		a, b, renewed := connect(old), connect(fresh), connect(old)
		renewed.MustCall("refresh", map[string]any{"token": fresh}, "refreshed")
		alive := func() {
			t.Helper()
			for _, c := range []*wstest.Client{a, b, renewed} {
				c.MustCall("ping", nil, "pong")
			}
		}
		age := func(d time.Duration) { gateway.AgeJWKSForTest(ts.srv, d) }
		fetchNo := func(n int32) {
			t.Helper()
			waitFor(t, 5*time.Second, fmt.Sprintf("JWKS fetch %d", n), func() bool { return js.fetches.Load() >= n })
			time.Sleep(100 * time.Millisecond) // the fetch's answer applied (or not)
		}

		// r1 removed while the key server fails: no fetch, no cut.
		js.set(jwkOf("r2", k2))
		js.failing.Store(true)
		age(5*time.Minute + time.Second)
		fetchNo(2)
		alive() // after a failed fetch
		// A set with no usable key is a failed fetch too.
		js.failing.Store(false)
		js.set()
		age(11 * time.Second)
		fetchNo(3)
		alive() // after an empty set
		if n := js.fetches.Load(); n != 3 {
			t.Fatalf("%d fetches, want 3 (the sweep refetches at most every 10 s)", n)
		}

		// The set without r1 is fetched by the sweep: a is cut.
		js.set(jwkOf("r2", k2))
		age(11 * time.Second)
		d := a.NextWithin(5*time.Second, "the disconnect", func(m wstest.Msg) bool { return m.Op() == "disconnect" })
		if d.Str("code") != "token_revoked" || d["reconnect"] != true {
			t.Fatalf("disconnect %v, want token_revoked with reconnect true", d)
		}
		if s := websocket.CloseStatus(a.WaitClosed()); s != 1008 {
			t.Fatalf("close status %d, want 1008", s)
		}
		for _, c := range []*wstest.Client{b, renewed} {
			c.MustCall("ping", nil, "pong")
		}
		assertMetric(t, ts, "syncgate_jwks_key_removed_disconnects_total", 1)
		assertMetric(t, ts, `syncgate_disconnects_total{code="token_revoked"}`, 1)
		again := dial(t, ts)
		if r := again.Call("connect", map[string]any{"token": old}); r.Str("code") != "unauthorized" {
			t.Fatalf("the old token after the cut: %v, want unauthorized", r)
		}
		connect(fresh)
	})
}
