package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
)

type node struct {
	b   *jetstream.Broker
	rec *brokertest.Recorder
}

// startNode starts a broker, closed and checked at cleanup.
func startNode(t *testing.T, cfg jetstream.Config) node {
	t.Helper()
	b := jetstream.New(cfg)
	rec := brokertest.NewRecorder()
	if err := b.Start(t.Context(), rec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		rec.MarkClosed()
		if err := rec.Err(); err != nil {
			t.Error(err)
		}
	})
	return node{b, rec}
}

// published is one Publish call's outcome.
type published struct {
	data string
	pos  brokers.Position
	err  error
}

// publishLoop publishes "<who>:<i>" for i < n on ch, pausing between
// messages, and returns every outcome.
func publishLoop(ctx context.Context, n node, ch, who string, count int, pause time.Duration) []published {
	out := make([]published, 0, count)
	for i := range count {
		data := fmt.Sprintf("%s:%d", who, i)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		pos, err := n.b.Publish(pctx, ch, []byte(data))
		cancel()
		out = append(out, published{data, pos, err})
		time.Sleep(pause)
	}
	return out
}

// faultCounts is what a fault test measured.
type faultCounts struct {
	acked, refused, ackedInOutage int
	stored, duplicated            int
	lostOutage, lostOther         int            // acked in an outage epoch / in a real epoch, and not stored
	lostBeforeRestart             int            // acked in the epoch before the restart, gone with it
	delivered                     map[string]int // per node: real-epoch deliveries
	outageDeliveries              map[string]int // per node: outage-epoch deliveries
}

// TestServerRestart publishes from two nodes while the server is shut down
// and restarted on the same store dir. No publish may be refused (the
// outbox holds what the outage refuses). With file storage no acked
// message may be lost: each is stored once, and every node delivers the
// stored history exactly once, in seq order, in one epoch.
func TestServerRestart(t *testing.T) {
	for _, storage := range []struct {
		name string
		typ  jetstream.StorageType
	}{{"File", jetstream.FileStorage}, {"Memory", jetstream.MemoryStorage}} {
		t.Run(storage.name, func(t *testing.T) {
			leakCheckLast(t)
			srv := natstest.RunServer(t)
			cfg := jetstream.Config{URL: srv.URL(), Storage: storage.typ, HistorySize: 5000}
			a, b := startNode(t, cfg), startNode(t, cfg)
			const ch = "doc.restart"
			for _, n := range []node{a, b} {
				if err := n.b.Subscribe(t.Context(), ch); err != nil {
					t.Fatal(err)
				}
			}
			const each = 300
			var results [2][]published
			var wg sync.WaitGroup
			var started atomic.Int32
			for i, n := range []node{a, b} {
				wg.Go(func() {
					started.Add(1)
					results[i] = publishLoop(t.Context(), n, ch, fmt.Sprintf("n%d", i), each, 2*time.Millisecond)
				})
			}
			time.Sleep(150 * time.Millisecond)
			srv.Shutdown()
			time.Sleep(400 * time.Millisecond)
			srv.Restart(t)
			wg.Wait()
			refused := 0
			for _, rs := range results {
				for _, r := range rs {
					if r.err != nil {
						refused++
					}
				}
			}
			if refused > 0 {
				t.Errorf("%d of %d publishes refused; during the outage the outbox must hold them (docs/brokers.md)", refused, 2*each)
			}

			brokertest.Eventually(t, 20*time.Second, "both outboxes flushed", func() bool {
				return a.b.OutboxLen() == 0 && b.b.OutboxLen() == 0
			})
			// The connection may still be catching up after the restart.
			var (
				hist []brokers.Publication
				pos  brokers.Position
				err  error
			)
			brokertest.Eventually(t, 20*time.Second, "history readable", func() bool {
				hist, pos, err = a.b.Since(t.Context(), ch, 0, 5000)
				return err == nil
			})
			c := checkRestart(t, storage.typ == jetstream.FileStorage, results[:], hist, pos, map[string]node{"a": a, "b": b}, ch)
			t.Logf("%s storage: %d acked (%d of them during the outage, from the outbox), %d refused; stored %d; acked but not stored: %d lost with the server before its restart, %d acked in the outage, %d others; stored twice %d; delivered in the final epoch: a %d, b %d; delivered in other epochs: a %d, b %d",
				storage.name, c.acked, c.ackedInOutage, c.refused, c.stored, c.lostBeforeRestart, c.lostOutage, c.lostOther, c.duplicated,
				c.delivered["a"], c.delivered["b"], c.outageDeliveries["a"], c.outageDeliveries["b"])
		})
	}
}

// checkRestart checks the outcome of a restart test and counts it.
func checkRestart(t *testing.T, durable bool, results [][]published, hist []brokers.Publication, pos brokers.Position, nodes map[string]node, ch string) faultCounts {
	t.Helper()
	c := faultCounts{delivered: map[string]int{}, outageDeliveries: map[string]int{}}
	storedAt := make(map[string][]uint64)
	for i, p := range hist {
		if p.Epoch != pos.Epoch || p.Seq != hist[0].Seq+uint64(i) {
			t.Fatalf("history: publication %d has seq %d epoch %q, want seq %d epoch %q", i, p.Seq, p.Epoch, hist[0].Seq+uint64(i), pos.Epoch)
		}
		storedAt[string(p.Data)] = append(storedAt[string(p.Data)], p.Seq)
	}
	c.stored = len(hist)
	before := results[0][0].pos.Epoch // the first publish, before the shutdown
	for _, rs := range results {
		for _, r := range rs {
			if r.err != nil {
				c.refused++
				continue
			}
			c.acked++
			outage := r.pos.Epoch != pos.Epoch && r.pos.Epoch != before
			if outage {
				c.ackedInOutage++
			}
			switch n := len(storedAt[r.data]); {
			case n == 0 && outage:
				c.lostOutage++
			case n == 0 && r.pos.Epoch == pos.Epoch:
				c.lostOther++
			case n == 0:
				c.lostBeforeRestart++
			case n > 1:
				c.duplicated++
			}
		}
	}
	if c.lostOutage > 0 || c.lostOther > 0 {
		t.Errorf("%d publications acked during the outage and %d acked with a position in the final epoch are not stored", c.lostOutage, c.lostOther)
	}
	for data, seqs := range storedAt {
		if len(seqs) > 1 {
			t.Errorf("%q stored %d times, at seqs %v", data, len(seqs), seqs)
		}
	}
	if durable {
		if c.lostBeforeRestart > 0 {
			t.Errorf("%d acked publications lost across a restart with file storage", c.lostBeforeRestart)
		}
		if hist[0].Seq != 1 {
			t.Errorf("history starts at seq %d, want 1 (one epoch across the restart)", hist[0].Seq)
		}
	}
	for name, n := range nodes {
		var real []brokers.Publication
		for _, p := range n.rec.Publications(ch) {
			if p.Epoch == pos.Epoch {
				real = append(real, p)
			} else {
				c.outageDeliveries[name]++
			}
		}
		c.delivered[name] = len(real)
		// The node delivers the history's epoch exactly: from where it
		// started (after Subscribe) to the end, each seq once, in order.
		if len(real) == 0 {
			t.Errorf("node %s delivered nothing in epoch %q", name, pos.Epoch)
			continue
		}
		first := real[0].Seq
		for i, p := range real {
			if p.Seq != first+uint64(i) {
				t.Fatalf("node %s: delivery %d has seq %d, want %d (gap or duplicate)", name, i, p.Seq, first+uint64(i))
			}
			if h := hist[p.Seq-hist[0].Seq]; string(h.Data) != string(p.Data) {
				t.Fatalf("node %s: seq %d delivered %q, history has %q", name, p.Seq, p.Data, h.Data)
			}
		}
		if real[len(real)-1].Seq != pos.Seq {
			t.Errorf("node %s: last delivery seq %d, history ends at %d", name, real[len(real)-1].Seq, pos.Seq)
		}
		if durable && first != 1 {
			t.Errorf("node %s: first delivery seq %d, want 1", name, first)
		}
	}
	return c
}

// leakCheckLast, called first in a test, checks at its very end (after
// every other cleanup, servers shut down included) that no goroutine
// started by the test is left. Tests that restart servers use it: the
// restarted server's goroutines are new, and only its shutdown ends them.
func leakCheckLast(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// TestOutageRefusesHistory: while the node cannot reach the server, a
// history read and a Subscribe of a new channel are refused with
// ErrUnavailable (the start position cannot be known; the gateway answers
// `unavailable`, docs/brokers.md), never answered from a guess; once the
// server is back both work again.
func TestOutageRefusesHistory(t *testing.T) {
	leakCheckLast(t)
	srv := natstest.RunServer(t)
	n := startNode(t, jetstream.Config{URL: srv.URL(), HistorySize: 100})
	const ch = "doc.outage.history"
	if _, err := n.b.Publish(t.Context(), ch, []byte(`"x"`)); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	for _, op := range []struct {
		name string
		call func() error
	}{
		{"Since", func() error { _, _, err := n.b.Since(t.Context(), ch, 0, 10); return err }},
		{"Subscribe", func() error { return n.b.Subscribe(t.Context(), "doc.outage.new") }},
	} {
		if err := op.call(); !errors.Is(err, brokers.ErrUnavailable) {
			t.Fatalf("%s during the outage: %v, want ErrUnavailable", op.name, err)
		}
	}
	srv.Restart(t)
	brokertest.Eventually(t, 20*time.Second, "history readable again", func() bool {
		pubs, pos, err := n.b.Since(t.Context(), ch, 0, 10)
		return err == nil && pos.Seq == 1 && len(pubs) == 1
	})
	if err := n.b.Subscribe(t.Context(), "doc.outage.new"); err != nil {
		t.Fatalf("Subscribe after the outage: %v", err)
	}
}
