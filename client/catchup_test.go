package client_test

import (
	"strings"
	"testing"

	"github.com/syncgate/syncgate/client"
	"github.com/syncgate/syncgate/internal/config"
)

// TestStreamedCatchUp: the history missed while away is far larger than
// the node's per-client queue; the client takes it in pages (it asks with
// "stream": true) and gets every message once, in order, then Recovered.
// Without streaming the node would have to refuse it (Reset).
func TestStreamedCatchUp(t *testing.T) {
	n := startMemoryNode(t, func(c *config.Config) {
		c.History.Size = 1000
		c.Client.MaxQueueBytes = 64 << 10
		c.Client.MaxMessageSize = 8 << 10
		c.History.PageBytes = 16 << 10
	})
	px := newProxy(t, n.addr)
	sub := dial(t, px.url(), client.Options{User: "sub"})
	pub := dial(t, n.url(), client.Options{User: "pub"})
	s := subscribe(t, sub, "doc:big")
	pad := strings.Repeat("x", 4<<10)
	if _, err := pub.Publish(bg(), "doc:big", pad); err != nil {
		t.Fatal(err)
	}
	nextOf(t, s, client.Message)
	px.refuse.Store(true)
	px.cut()
	for range 200 { // 800 KB missed against a 64 KB queue
		if _, err := pub.Publish(bg(), "doc:big", pad); err != nil {
			t.Fatal(err)
		}
	}
	px.refuse.Store(false)
	counts := map[client.EventType]int{}
	seqs := collect(t, s, 200, counts)
	checkContiguous(t, seqs, 2)
	if r := next(t, s); r.Type != client.Recovered || r.Missed != 200 || r.Seq != 201 {
		t.Fatalf("after the replay: %+v (events %v)", r, counts)
	}
	if counts[client.Reset] != 0 || counts[client.Gap] != 0 {
		t.Fatalf("events %v", counts)
	}
	if _, err := pub.Publish(bg(), "doc:big", "live"); err != nil {
		t.Fatal(err)
	}
	if m := nextOf(t, s, client.Message); m.Seq != 202 {
		t.Fatalf("live after catch-up: %+v", m)
	}
}
