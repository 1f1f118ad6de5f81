package nats_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/nats"
	"github.com/syncgate/syncgate/internal/natstest"
)

// The conformance suite's cross-node checks also demand that two nodes see
// concurrent publishers' messages in one order. Core NATS does not promise
// that (the server orders each publisher's messages, not different
// publishers' against each other, and its per-connection delivery does
// interleave them differently for different subscribers), so those checks
// run here without that one demand.

const wait = 5 * time.Second

type node struct {
	b   *nats.Broker
	rec *brokertest.Recorder
}

// startNodes starts n brokers on url, closed and checked at cleanup, and
// checks that they leave no goroutine behind (see leakCheckLast for tests
// that restart the server).
func startNodes(t *testing.T, url string, n int) []node {
	t.Helper()
	return startNodesLeak(t, url, n, true)
}

func startNodesLeak(t *testing.T, url string, n int, leakCheck bool) []node {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	nodes := make([]node, n)
	t.Cleanup(func() {
		for _, nd := range nodes {
			if nd.b == nil {
				continue
			}
			if err := nd.b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			nd.rec.MarkClosed()
			if err := nd.rec.Err(); err != nil {
				t.Error(err)
			}
		}
		if leakCheck {
			goleak.VerifyNone(t, ignore)
		}
	})
	for i := range nodes {
		b := nats.New(nats.Config{URL: url})
		rec := brokertest.NewRecorder()
		if err := b.Start(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
		nodes[i] = node{b, rec}
	}
	return nodes
}

func TestCrossNode(t *testing.T) {
	srv := natstest.RunServer(t)
	warmUp(t, srv.URL())

	t.Run("Delivery", func(t *testing.T) {
		ns := startNodes(t, srv.URL(), 2)
		a, b := ns[0], ns[1]
		mustSubscribe(t, a.b, "x.y")
		mustSubscribe(t, a.b, "x") // "x.y" and "x" never mix
		for i := range 3 {
			mustPublish(t, b.b, "x.y", fmt.Sprint(i))
		}
		got := a.rec.WaitPublications(t, "x.y", 3, wait)
		for i, p := range got {
			if string(p.Data) != fmt.Sprint(i) || p.Seq != 0 || p.Epoch != "" {
				t.Errorf("publication %d: %q seq %d epoch %q; want %q, no seq, no epoch", i, p.Data, p.Seq, p.Epoch, fmt.Sprint(i))
			}
		}
		fence(t, b, a)
		if n := len(a.rec.Publications("x")); n != 0 {
			t.Errorf(`channel "x" got %d publications of "x.y"`, n)
		}
	})

	t.Run("ConcurrentPublishers", func(t *testing.T) {
		ns := startNodes(t, srv.URL(), 2)
		const publishers, each = 8, 200
		for _, n := range ns {
			mustSubscribe(t, n.b, "conc")
		}
		var wg sync.WaitGroup
		for p := range publishers {
			n := ns[p%2]
			wg.Go(func() {
				for i := range each {
					if _, err := n.b.Publish(t.Context(), "conc", fmt.Appendf(nil, "%d:%d", p, i)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		for name, n := range map[string]node{"a": ns[0], "b": ns[1]} {
			got := n.rec.WaitPublications(t, "conc", publishers*each, wait)
			fence(t, ns[0], n)
			got = n.rec.Publications("conc")
			if len(got) != publishers*each {
				t.Fatalf("node %s: %d deliveries, want %d", name, len(got), publishers*each)
			}
			next := make([]int, publishers)
			for k, pub := range got {
				var p, i int
				if _, err := fmt.Sscanf(string(pub.Data), "%d:%d", &p, &i); err != nil || i != next[p] {
					t.Fatalf("node %s, delivery %d: %q, want publisher %d's message %d (lost, duplicated or reordered)", name, k, pub.Data, p, next[p])
				}
				next[p]++
			}
		}
	})

	t.Run("Unsubscribe", func(t *testing.T) {
		ns := startNodes(t, srv.URL(), 2)
		a, b := ns[0], ns[1]
		mustSubscribe(t, a.b, "u")
		mustSubscribe(t, b.b, "u")
		mustPublish(t, b.b, "u", "1")
		a.rec.WaitPublications(t, "u", 1, wait)
		if err := a.b.Unsubscribe(t.Context(), "u"); err != nil {
			t.Fatal(err)
		}
		mustPublish(t, b.b, "u", "2")
		b.rec.WaitPublications(t, "u", 2, wait)
		fence(t, b, a)
		if n := len(a.rec.Publications("u")); n != 1 {
			t.Errorf("a got %d publications, want 1: delivered after Unsubscribe", n)
		}
	})

	t.Run("Presence", func(t *testing.T) {
		ns := startNodes(t, srv.URL(), 2)
		a, b := ns[0], ns[1]
		m1, m2 := brokers.Member{User: "u1", Client: "c1"}, brokers.Member{User: "u2", Client: "c2"}
		mustSubscribe(t, a.b, "p")
		if err := b.b.Join(t.Context(), "p", m1, time.Minute); err != nil {
			t.Fatal(err)
		}
		a.rec.WaitPresence(t, "p", brokers.Join, m1, wait)
		if ms, err := a.b.Members(t.Context(), "p"); err != nil || len(ms) != 1 || ms[0] != m1 {
			t.Fatalf("Members on a = %v, %v; want [%v]", ms, err, m1)
		}
		if err := b.b.Leave(t.Context(), "p", m1); err != nil {
			t.Fatal(err)
		}
		a.rec.WaitPresence(t, "p", brokers.Leave, m1, wait)
		if err := b.b.Join(t.Context(), "p", m2, time.Second); err != nil { // never refreshed
			t.Fatal(err)
		}
		a.rec.WaitPresence(t, "p", brokers.Leave, m2, time.Second+wait)
		fence(t, b, a)
		evs := a.rec.Presence("p")
		want := []brokers.PresenceEventType{brokers.Join, brokers.Leave, brokers.Join, brokers.Leave}
		if len(evs) != len(want) {
			t.Fatalf("presence events on a: %v, want join, leave of c1 then join, leave of c2", evs)
		}
		for i, e := range evs {
			if e.Presence != want[i] {
				t.Fatalf("presence events on a: %v, want join, leave of c1 then join, leave of c2", evs)
			}
		}
	})
}

func mustSubscribe(t *testing.T, b *nats.Broker, ch string) {
	t.Helper()
	if err := b.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
}

func mustPublish(t *testing.T, b *nats.Broker, ch, data string) {
	t.Helper()
	if _, err := b.Publish(t.Context(), ch, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

var fences sync.Map

// fence publishes on a fresh channel from `from` and waits until `to` got
// it: what `from` published before and `to` has not got by then is late
// (a single publisher's messages stay in order).
func fence(t *testing.T, from, to node) {
	t.Helper()
	n, _ := fences.LoadOrStore(t.Name(), new(int))
	*n.(*int)++
	ch := fmt.Sprintf("fence.%d", *n.(*int))
	mustSubscribe(t, to.b, ch)
	mustPublish(t, from.b, ch, "fence")
	to.rec.WaitPublications(t, ch, 1, wait)
}

// leakCheckLast, called first in a test, checks at its very end (after
// every other cleanup, servers shut down included) that no goroutine
// started by the test is left. A test that restarts a server uses it: the
// restarted server's goroutines are new, and only its shutdown ends them.
func leakCheckLast(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}
