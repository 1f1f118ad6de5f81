package jetstream_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestInFlightOrder: a publication whose ack is awaited when the node
// goes into an outage (here: the network stops forwarding, and another
// channel's publish times out) must not be overtaken by the channel's
// later publications on that node. The node reaches the server through a
// TCP proxy that holds everything back for a while.
//
// Acked: m1's ack comes after the heal. Before the fix, m2 and m3 went to
// the outbox and were delivered at once under outage positions while m1
// waited, and m1 only after the heal under its real one: a subscriber
// applying the client rule (protocol.md) got m2, m3, m1.
//
// Unknown: m1's wait ends (its deadline) before the heal, its outcome
// unknown, so it joins the outbox; another node, not cut off, publishes y
// meanwhile, so m1's held-back write is refused when it arrives. Before
// the fix m1 joined the outbox behind m2 and m3, which were then stored
// first: the stream held y, m2, m3, m1. (On this node m1 is still
// delivered only under its real position, after m2 and m3 under their
// outage ones: it may have been stored already, without Sg-Was.)
func TestInFlightOrder(t *testing.T) {
	t.Run("Acked", func(t *testing.T) { inFlightOrder(t, 5*time.Second, false) })
	t.Run("Unknown", func(t *testing.T) { inFlightOrder(t, 500*time.Millisecond, true) })
}

func inFlightOrder(t *testing.T, m1Timeout time.Duration, unknown bool) {
	srv := natstest.RunServer(t)
	proxy := redistest.StartProxy(t, srv.Server().Addr().String())
	n := startNode(t, jetstream.Config{URL: "nats://" + proxy.Addr(), HistorySize: 100})
	other := startNode(t, jetstream.Config{URL: srv.URL(), HistorySize: 100})
	ctx := t.Context()
	const ch = "doc.inflight"
	if err := n.b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if _, err := n.b.Publish(ctx, ch, []byte("before")); err != nil {
		t.Fatal(err)
	}
	n.rec.WaitPublications(t, ch, 1, 10*time.Second)

	proxy.Partition()
	type result struct {
		pos brokers.Position
		err error
	}
	publish := func(ch, data string, timeout time.Duration) chan result {
		c := make(chan result, 1)
		go func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			pos, err := n.b.Publish(pctx, ch, []byte(data))
			c <- result{pos, err}
		}()
		return c
	}
	m1 := publish(ch, "m1", m1Timeout)
	time.Sleep(100 * time.Millisecond)
	want := []string{"before", "m1", "m2", "m3"}
	if unknown {
		if _, err := other.b.Publish(ctx, ch, []byte("y")); err != nil {
			t.Fatal(err)
		}
		want = []string{"before", "y", "m1", "m2", "m3"}
	}
	// Another channel's publish times out with its outcome unknown: the
	// node is in an outage from then on (publishes go to the outbox).
	if r := <-publish("doc.other", "x", 200*time.Millisecond); r.err != nil || !brokers.IsProvisional(r.pos.Epoch) {
		t.Fatalf("publish on another channel during the partition: %+v, %v; want a provisional position", r.pos, r.err)
	}
	m2 := publish(ch, "m2", 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	m3 := publish(ch, "m3", 5*time.Second)
	time.Sleep(400 * time.Millisecond)
	proxy.Heal()
	for i, c := range []chan result{m1, m2, m3} {
		if r := <-c; r.err != nil {
			t.Fatalf("m%d: %v", i+1, r.err)
		}
	}
	brokertest.Eventually(t, 10*time.Second, "outbox flushed", func() bool { return n.b.OutboxLen() == 0 })
	var stored []string
	brokertest.Eventually(t, 10*time.Second, "history", func() bool {
		hist, _, err := n.b.Since(ctx, ch, 0, 100)
		stored = stored[:0]
		for _, p := range hist {
			stored = append(stored, string(p.Data))
		}
		return err == nil && len(stored) >= len(want)
	})
	if fmt.Sprint(stored) != fmt.Sprint(want) {
		t.Errorf("stored %v, want %v", stored, want)
	}
	if unknown {
		return
	}
	var applied []string
	n.rec.WaitFor(t, 10*time.Second, fmt.Sprint(want), func(evs []brokertest.Event) bool {
		applied = clientApplied(evs, ch)
		return len(applied) >= len(want)
	})
	if fmt.Sprint(applied) != fmt.Sprint(want) {
		t.Errorf("applied %v, want %v", applied, want)
	}
}

// clientApplied applies the client rule of protocol.md to the events of
// ch: a real publication whose Was names a provisional position already
// applied is not applied again. It returns the data applied, in order.
func clientApplied(evs []brokertest.Event, ch string) []string {
	var applied []string
	seen := make(map[brokers.Position]bool)
	for _, e := range evs {
		if e.Channel != ch || e.Presence != 0 {
			continue
		}
		p := e.Pub
		if brokers.IsProvisional(p.Epoch) {
			seen[brokers.Position{Seq: p.Seq, Epoch: p.Epoch}] = true
		} else if p.Was != (brokers.Position{}) && seen[p.Was] {
			continue
		}
		applied = append(applied, string(p.Data))
	}
	return applied
}
