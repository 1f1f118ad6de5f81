package gateway_test

import (
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
)

// TestMaxChannels: anonymous clients name channels freely, and each new
// one costs the node a broker subscription and state. Past
// server.max_channels a subscribe that needs a new channel is refused with
// a clear `unavailable` (counted as kind "channels"); channels the node
// serves already stay open to everyone, and a slot frees once a channel's
// last subscriber left.
func TestMaxChannels(t *testing.T) {
	ts := startServer(t, "epoll", func(c *config.Config) { c.Server.MaxChannels = 3 })
	a := dial(t, ts)
	for _, ch := range []string{"doc:1", "doc:2", "doc:3"} {
		a.MustCall("sub", map[string]any{"ch": ch}, "subscribed")
	}
	r := a.Call("sub", map[string]any{"ch": "doc:4"})
	if r.Op() != "error" || r.Str("code") != "unavailable" || !strings.Contains(r.Str("message"), "server.max_channels (3)") {
		t.Fatalf("fourth channel: %v, want error unavailable naming server.max_channels", r)
	}
	assertMetric(t, ts, `syncgate_limit_rejections_total{kind="channels"}`, 1)

	// A channel the node serves already costs nothing new.
	b := dial(t, ts)
	b.MustCall("sub", map[string]any{"ch": "doc:2"}, "subscribed")

	// The refused subscribe left nothing behind: after doc:1 is dropped
	// (its last subscriber left, the broker subscription lingers a
	// moment), doc:4 fits.
	a.MustCall("unsub", map[string]any{"ch": "doc:1"}, "unsubscribed")
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := a.Call("sub", map[string]any{"ch": "doc:4"})
		if r.Op() == "subscribed" {
			break
		}
		if r.Str("code") != "unavailable" || time.Now().After(deadline) {
			t.Fatalf("doc:4 after doc:1 was dropped: %v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.Pub("doc:4", "hello")
	if m := a.Msgs("doc:4", 1, 5*time.Second); m[0].Str("ch") != "doc:4" {
		t.Fatalf("doc:4 delivery: %v", m)
	}
}
