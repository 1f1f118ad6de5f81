package gateway_test

import (
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestPresenceOutlivesTTL: a connected member is refreshed, so it stays
// listed, with no leave, for several TTLs (docs/brokers.md: entries
// outlive the TTL only while their node is alive).
func TestPresenceOutlivesTTL(t *testing.T) {
	const ttl = time.Second // the smallest allowed
	ts := startServer(t, "epoll", func(c *config.Config) { c.Presence.TTL = ttl })
	a, b := dial(t, ts), dial(t, ts)
	a.Connect("alice")
	bid := b.Connect("bob").Str("client")
	a.Sub("doc:live")
	b.Sub("doc:live")
	a.PresenceEvent("join", "doc:live", "client", bid, 5*time.Second)
	a.None(3*ttl, func(m wstest.Msg) bool { return m.Op() == "leave" })
	if got := a.Members("doc:live"); len(got) != 2 || got[bid] != "bob" {
		t.Fatalf("presence after %v (TTL %v) = %v, want alice and bob", 3*ttl, ttl, got)
	}
}
