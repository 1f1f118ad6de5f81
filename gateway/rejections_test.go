package gateway_test

import (
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
)

// TestRejectionsCountedByKind proves docs/security.md's "Refusals are
// counted in syncgate_limit_rejections_total{kind}" for the kinds no other
// test reads (max_connections, http_connections, handshake_timeout,
// origin, channels, frame_timeout, partial_bytes and control_rate are
// asserted where their limits are tested): each refusal below is answered
// as the limits table says and counts exactly once under its kind.
func TestRejectionsCountedByKind(t *testing.T) {
	counted := func(t *testing.T, ts *testServer, kind string, want float64) {
		t.Helper()
		series := `syncgate_limit_rejections_total{kind="` + kind + `"}`
		assertMetric(t, ts, series, want)
		if v := scrape(t, ts, series); v != want {
			t.Fatalf("%s = %v, want %v", series, v, want)
		}
	}
	t.Run("accept_rate", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) { c.Server.AcceptRate = 2 })
		refused := 0.0
		for range 6 {
			if code, _ := dialRefusal(t, ts.url(), nil); code == 503 {
				refused++
			}
		}
		if refused == 0 {
			t.Fatal("6 dials at accept_rate 2/s: none refused")
		}
		counted(t, ts, "accept_rate", refused)
	})
	t.Run("user_connections", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) { c.Client.MaxConnectionsPerUser = 1 })
		dial(t, ts).Connect("alice")
		if r := dial(t, ts).Call("connect", map[string]any{"user": "alice"}); r.Str("code") != "forbidden" {
			t.Fatalf("second alice = %v", r)
		}
		counted(t, ts, "user_connections", 1)
	})
	t.Run("publish_rate", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) {
			c.Client.PublishRate = 1
			c.Client.PublishBurst = 1
		})
		c := dial(t, ts)
		limited := 0.0
		for range 5 {
			if r := c.Call("pub", map[string]any{"ch": "doc:r", "data": 1}); r.Str("code") == "rate_limited" {
				limited++
			}
		}
		if limited == 0 {
			t.Fatal("5 fast pubs at 1/s burst 1: none rate_limited")
		}
		counted(t, ts, "publish_rate", limited)
	})
	t.Run("subscriptions", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) { c.Client.MaxSubscriptions = 1 })
		c := dial(t, ts)
		c.Sub("doc:1")
		if r := c.Call("sub", map[string]any{"ch": "doc:2"}); r.Op() != "error" {
			t.Fatalf("second sub past max_subscriptions 1 = %v", r)
		}
		counted(t, ts, "subscriptions", 1)
	})
	t.Run("message_size", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) { c.Client.MaxMessageSize = 1024 })
		c := dial(t, ts)
		c.SendRaw(`{"op":"pub","ch":"doc:1","data":"` + strings.Repeat("x", 2048) + `"}`)
		if e := c.NextOp("error"); e.Str("code") != "too_large" {
			t.Fatalf("oversize message = %v", e)
		}
		counted(t, ts, "message_size", 1)
	})
	t.Run("unauthorized and forbidden", func(t *testing.T) {
		ts := startServer(t, "epoll", withHMAC)
		c := dial(t, ts)
		if r := c.Call("sub", map[string]any{"ch": "doc:1"}); r.Str("code") != "unauthorized" {
			t.Fatalf("sub before connect = %v", r)
		}
		counted(t, ts, "unauthorized", 1)
		c.MustCall("connect", map[string]any{"token": hsToken(t, userClaims("alice", []string{"doc:1"}, nil, time.Hour))}, "connected")
		if r := c.Call("sub", map[string]any{"ch": "secret:1"}); r.Str("code") != "forbidden" {
			t.Fatalf("sub outside the token's channels = %v", r)
		}
		counted(t, ts, "forbidden", 1)
	})
}
