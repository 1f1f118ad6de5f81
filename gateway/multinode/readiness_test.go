package multinode_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
)

// TestJetStreamStreamsDeleted: the streams are deleted under a running
// gateway (from another client of the NATS server). Before, publishes
// were acked provisionally and every sub failed `unavailable` for as long
// as it was watched, while /readyz said 200. Now the node re-creates the
// streams by itself: within a bounded time a new sub is answered, a
// publish is acked with a real (not provisional) epoch and delivered to a
// subscriber from before the deletion, and /readyz is 200 again.
func TestJetStreamStreamsDeleted(t *testing.T) {
	srv := natstest.RunServer(t)
	n := startNode(t, jetstream.New(jetstream.Config{URL: srv.URL()}), nil)
	ready := func() int {
		resp, err := http.Get("http://" + n.addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	old := dial(t, n, "old")
	old.Connect("u-old")
	old.Sub("doc.old")
	if code := ready(); code != http.StatusOK {
		t.Fatalf("/readyz before: %d", code)
	}

	natstest.DeleteStreams(t, srv.URL(), "SG_HISTORY", "SG_PRESENCE")
	// A publish right after the deletion (accepted into the outbox, as
	// before, or stored once the stream is back).
	p := dial(t, n, "p")
	p.Connect("u-p")
	p.MustCall("pub", map[string]any{"ch": "doc.old", "data": "during"}, "ack")

	deadline := time.Now().Add(20 * time.Second)
	for {
		c := dial(t, n, "new")
		c.Connect("u-new")
		r := c.Call("sub", map[string]any{"ch": "doc.new"})
		c.Close()
		if r.Op() == "subscribed" {
			break
		}
		if r.Str("code") != "unavailable" || time.Now().After(deadline) {
			t.Fatalf("sub after the deletion: %v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		ack := p.MustCall("pub", map[string]any{"ch": "doc.old", "data": "after"}, "ack")
		if e := ack.Str("epoch"); e != "" && e[0] != '~' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish after the deletion still acked provisionally: %v", ack)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		m := old.Msgs("doc.old", 1, wait)
		if len(m) == 0 {
			t.FailNow()
		}
		if m[0]["data"] == "after" {
			if e := m[0].Str("epoch"); e == "" || e[0] == '~' {
				t.Fatalf("delivered %v, want a real epoch", m[0])
			}
			break
		}
	}
	for ready() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz not 200 after the repair")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
