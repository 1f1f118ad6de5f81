package jetstream_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	njs "github.com/nats-io/nats.go/jetstream"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestInFlightOrder: a publication whose ack is awaited when the node
// goes into an outage (here: the network stops forwarding, and another
// channel's publish times out) must not be overtaken by the channel's
// later publications on that node, nor in the stream. The node reaches the
// server through a TCP proxy that holds everything (or only the server's
// answers) back for a while. Each case checks what the stream stored and
// what a subscriber on the publishing node applies, following the client
// rule (protocol.md): m1, m2, m3 in publish order, each once.
//
// Acked: m1's ack comes after the heal. Before 5bed592, m2 and m3 went to
// the outbox and were delivered at once under outage positions while m1
// waited, and m1 only after the heal under its real one: a subscriber
// applying the client rule got m2, m3, m1.
//
// CopyLate: m1 is acked, but the stream's copy of it does not reach the
// node (the stream republishes nothing meanwhile, as when its leader dies
// between the ack and the republish; a sweep finds the copy later). Before
// m1 was delivered after m2 and m3 (their outage positions): applied m2,
// m3, m1.
//
// Unknown: m1's wait ends (its deadline) before the heal, its outcome
// unknown, so it joins the outbox; another node, not cut off, publishes y
// meanwhile, so m1's held-back write is refused when it arrives. Before
// 5bed592 m1 joined the outbox behind m2 and m3, which were then stored
// first (the stream held y, m2, m3, m1); before m1 was also delivered
// here only under its real position, after m2 and m3: applied m2, m3, y,
// m1. (y, from another node during the outage, comes after them: order
// across nodes is not promised.)
//
// Stored: m1's write reaches the server and is stored, without Sg-Was,
// but the answer is held back, so its outcome is unknown too. Now it is
// delivered under an outage position, and its stored copy, found by id,
// comes with Was (live and from Since on this node); before it was
// applied after m2 and m3.
func TestInFlightOrder(t *testing.T) {
	t.Run("Acked", func(t *testing.T) { inFlightOrder(t, inFlightAcked) })
	t.Run("CopyLate", func(t *testing.T) { inFlightOrder(t, inFlightCopyLate) })
	t.Run("Unknown", func(t *testing.T) { inFlightOrder(t, inFlightUnknown) })
	t.Run("Stored", func(t *testing.T) { inFlightOrder(t, inFlightStored) })
}

type inFlightCase int

const (
	inFlightAcked inFlightCase = iota
	inFlightCopyLate
	inFlightUnknown
	inFlightStored
)

func inFlightOrder(t *testing.T, mode inFlightCase) {
	srv := natstest.RunServer(t)
	proxy := redistest.StartProxy(t, srv.Server().Addr().String())
	cfg := jetstream.Config{HistorySize: 100, Prefix: "sgorder", Stream: "SGORDER"}
	ncfg, ocfg := cfg, cfg
	ncfg.URL, ocfg.URL = "nats://"+proxy.Addr(), srv.URL()
	n := startNode(t, ncfg)
	other := startNode(t, ocfg)
	ctx := t.Context()
	const ch = "doc.inflight"
	if err := n.b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if _, err := n.b.Publish(ctx, ch, []byte("before")); err != nil {
		t.Fatal(err)
	}
	n.rec.WaitPublications(t, ch, 1, 10*time.Second)

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
	want := []string{"before", "m1", "m2", "m3"}
	wantStored := want
	var m1 chan result
	switch mode {
	case inFlightCopyLate:
		republish(t, srv.URL(), cfg, false)
		m1 = publish(ch, "m1", 5*time.Second)
		r := <-m1
		if r.err != nil || brokers.IsProvisional(r.pos.Epoch) {
			t.Fatalf("m1: %+v, %v; want a real position", r.pos, r.err)
		}
		m1 <- r
		proxy.Partition()
	case inFlightAcked:
		proxy.Partition()
		m1 = publish(ch, "m1", 5*time.Second)
		time.Sleep(100 * time.Millisecond)
	case inFlightUnknown:
		proxy.Partition()
		m1 = publish(ch, "m1", 500*time.Millisecond)
		time.Sleep(100 * time.Millisecond)
		if _, err := other.b.Publish(ctx, ch, []byte("y")); err != nil {
			t.Fatal(err)
		}
		want = []string{"before", "m1", "m2", "m3", "y"}
		wantStored = []string{"before", "y", "m1", "m2", "m3"}
	case inFlightStored:
		proxy.HoldReplies()
		m1 = publish(ch, "m1", 500*time.Millisecond)
		time.Sleep(100 * time.Millisecond)
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
	if mode == inFlightCopyLate {
		republish(t, srv.URL(), cfg, true)
	}
	proxy.Heal()
	var m1pos brokers.Position
	for i, c := range []chan result{m1, m2, m3} {
		r := <-c
		if r.err != nil {
			t.Fatalf("m%d: %v", i+1, r.err)
		}
		if i == 0 {
			m1pos = r.pos
		}
	}
	brokertest.Eventually(t, 10*time.Second, "outbox flushed", func() bool { return n.b.OutboxLen() == 0 })
	var stored []string
	var hist []brokers.Publication
	brokertest.Eventually(t, 10*time.Second, "history", func() bool {
		var err error
		hist, _, err = n.b.Since(ctx, ch, 0, 100)
		stored = stored[:0]
		for _, p := range hist {
			stored = append(stored, string(p.Data))
		}
		return err == nil && len(stored) >= len(wantStored)
	})
	if fmt.Sprint(stored) != fmt.Sprint(wantStored) {
		t.Errorf("stored %v, want %v", stored, wantStored)
	}
	var applied []string
	n.rec.WaitFor(t, 10*time.Second, fmt.Sprint(want), func(evs []brokertest.Event) bool {
		applied = clientApplied(evs, ch)
		return len(applied) >= len(want)
	})
	time.Sleep(200 * time.Millisecond) // a late duplicate would show
	// y, from another node during the outage, may come anywhere among
	// them: order across nodes is not promised.
	applied = clientApplied(n.rec.Events(), ch)
	if mode == inFlightUnknown {
		if i := slices.Index(applied, "y"); i > 0 {
			applied = append(slices.Delete(slices.Clone(applied), i, i+1), "y")
		}
	}
	if fmt.Sprint(applied) != fmt.Sprint(want) {
		t.Errorf("applied %v (y moved last), want %v; m1 at %+v; delivered:", applied, want, m1pos)
		for _, e := range n.rec.Events() {
			if e.Channel == ch && e.Presence == 0 {
				t.Logf("%s at %d %s, was %+v", e.Pub.Data, e.Pub.Seq, e.Pub.Epoch, e.Pub.Was)
			}
		}
	}
	if mode == inFlightStored && deliveredUnder(n.rec.Events(), ch, m1pos) {
		// A client resuming on this node from an outage position gets m1
		// again from history: with was, so it skips it. (When m1's copy
		// reached the node before m1's wait ended, m1 was delivered only
		// under its real position.)
		for _, p := range hist {
			if string(p.Data) == "m1" && p.Was != m1pos {
				t.Errorf("m1 in history: was %+v, want its outage position %+v", p.Was, m1pos)
			}
		}
	}
}

// republish turns the history stream's republishing of stored messages
// (live delivery) off or back on, on a connection of its own.
func republish(t *testing.T, url string, cfg jetstream.Config, on bool) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := njs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	sc := s.CachedInfo().Config
	dest := cfg.Prefix + ".r.>"
	if !on {
		dest = cfg.Prefix + ".nowhere.>"
	}
	sc.RePublish = &njs.RePublish{Source: cfg.Prefix + ".h.>", Destination: dest}
	if _, err := js.UpdateStream(t.Context(), sc); err != nil {
		t.Fatal(err)
	}
}

// deliveredUnder reports whether a publication of ch was delivered under
// pos.
func deliveredUnder(evs []brokertest.Event, ch string, pos brokers.Position) bool {
	for _, e := range evs {
		if e.Channel == ch && e.Presence == 0 && e.Pub.Seq == pos.Seq && e.Pub.Epoch == pos.Epoch {
			return true
		}
	}
	return false
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
