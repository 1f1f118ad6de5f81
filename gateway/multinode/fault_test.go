package multinode_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/brokers/nats"
	"github.com/syncgate/syncgate/internal/natstest"
)

// TestJetStreamServerRestart: WebSocket clients publish on two gateway
// nodes while their NATS server (file storage) is shut down and restarted.
// Every acked publish must reach every subscriber, on both nodes, exactly
// once and in order in the channel's history epoch; what a subscriber got
// in an outage epoch meanwhile (its own node's publishes, at once) comes
// again under its real seq.
func TestJetStreamServerRestart(t *testing.T) {
	srv := natstest.RunServer(t)
	newBroker := func() *jetstream.Broker { return jetstream.New(jetstream.Config{URL: srv.URL()}) }
	n1, n2 := startNode(t, newBroker(), nil), startNode(t, newBroker(), nil)
	const ch = "doc.restart"
	s1, s2 := dial(t, n1, "s1"), dial(t, n2, "s2")
	s1.connect("s1")
	s2.connect("s2")
	epoch := s1.sub(ch).str("epoch")
	s2.sub(ch)
	p1, p2 := dial(t, n1, "p1"), dial(t, n2, "p2")
	p1.connect("p1")
	p2.connect("p2")

	const each = 150
	var acked [2][]string
	var outage [2]int
	var wg sync.WaitGroup
	for i, p := range []*client{p1, p2} {
		wg.Go(func() {
			for k := range each {
				data := fmt.Sprintf("%d:%d", i, k)
				r := p.call("pub", map[string]any{"ch": ch, "data": data})
				if r != nil && r.op() == "ack" {
					acked[i] = append(acked[i], data)
					if r.num("seq") == 0 {
						t.Errorf("ack without seq: %v", r)
					}
				}
				time.Sleep(3 * time.Millisecond)
			}
		})
	}
	time.Sleep(150 * time.Millisecond)
	srv.Shutdown()
	time.Sleep(400 * time.Millisecond)
	srv.Restart(t)
	wg.Wait()

	total := len(acked[0]) + len(acked[1])
	for _, s := range []*client{s1, s2} {
		var real []obj
		other := 0
		for len(real) < total {
			m := s.next(20*time.Second, fmt.Sprintf("msg %d of %d", len(real)+1, total), func(o obj) bool { return o.op() == "msg" })
			if m == nil {
				t.Fatalf("%s: %d of %d acked messages in epoch %q", s.name, len(real), total, epoch)
			}
			if m.str("epoch") == epoch {
				real = append(real, m)
			} else {
				other++
			}
		}
		seen := map[string]int{}
		for k, m := range real {
			if m.num("seq") != uint64(k+1) {
				t.Fatalf("%s: msg %d in epoch %q has seq %d, want %d", s.name, k, epoch, m.num("seq"), k+1)
			}
			seen[m.str("data")]++
		}
		for i := range acked {
			for _, d := range acked[i] {
				if seen[d] != 1 {
					t.Errorf("%s: acked %q delivered %d times in epoch %q", s.name, d, seen[d], epoch)
				}
			}
		}
		if extra := s.drain(300*time.Millisecond, func(o obj) bool { return o.op() == "msg" && o.str("epoch") == epoch }); len(extra) > 0 {
			t.Errorf("%s: %d more messages in epoch %q: %v", s.name, len(extra), epoch, extra[0])
		}
		outage[map[string]int{"s1": 0, "s2": 1}[s.name]] = other
	}
	t.Logf("%d publishes acked of %d; each subscriber got all %d in epoch %q, seqs 1..%d, once; outage-epoch deliveries before that: node 1 %d, node 2 %d",
		total, 2*each, total, epoch, total, outage[0], outage[1])
}

// TestCoreNATSServerRestart: the same on core NATS, which loses what is
// published while a node is cut off. It checks no duplicate, per-publisher
// order, and logs what each subscriber lost.
func TestCoreNATSServerRestart(t *testing.T) {
	srv := natstest.RunServer(t)
	newBroker := func() *nats.Broker { return nats.New(nats.Config{URL: srv.URL()}) }
	n1, n2 := startNode(t, newBroker(), edit("nats")), startNode(t, newBroker(), edit("nats"))
	const ch = "doc.restart"
	s1, s2 := dial(t, n1, "s1"), dial(t, n2, "s2")
	s1.connect("s1")
	s2.connect("s2")
	s1.sub(ch)
	s2.sub(ch)
	p1, p2 := dial(t, n1, "p1"), dial(t, n2, "p2")
	p1.connect("p1")
	p2.connect("p2")
	const each = 150
	var acked [2]int
	var wg sync.WaitGroup
	for i, p := range []*client{p1, p2} {
		wg.Go(func() {
			for k := range each {
				if r := p.call("pub", map[string]any{"ch": ch, "data": fmt.Sprintf("%d:%d", i, k)}); r != nil && r.op() == "ack" {
					acked[i]++
				}
				time.Sleep(3 * time.Millisecond)
			}
		})
	}
	time.Sleep(150 * time.Millisecond)
	srv.Shutdown()
	time.Sleep(400 * time.Millisecond)
	srv.Restart(t)
	wg.Wait()
	time.Sleep(2 * time.Second) // the outboxes are flushed a second after reconnecting
	for _, s := range []*client{s1, s2} {
		got := s.drain(500*time.Millisecond, func(o obj) bool { return o.op() == "msg" })
		seen := map[string]bool{}
		next := [2]int{}
		var from [2]int
		for _, m := range got {
			d := m.str("data")
			if seen[d] {
				t.Errorf("%s: %q twice", s.name, d)
			}
			seen[d] = true
			var p, k int
			fmt.Sscanf(d, "%d:%d", &p, &k)
			if k < next[p] {
				t.Errorf("%s: %q after %d:%d", s.name, d, p, next[p]-1)
			}
			next[p] = k + 1
			from[p]++
		}
		t.Logf("%s: got %d of publisher 1's %d acked, %d of publisher 2's %d acked", s.name, from[0], acked[0], from[1], acked[1])
	}
}
