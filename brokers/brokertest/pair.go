package brokertest

import (
	"fmt"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
)

// The cross-node checks run on two nodes of one backend (Suite.NewPair).

// testPairDelivery: publications cross nodes, share one seq sequence, and
// reach every subscribed node.
func (h *harness) testPairDelivery(t *testing.T) {
	a, b := h.startPair(t)
	ch := h.channel(t, "a")
	subscribe(t, a, ch)
	for i := 1; i <= 3; i++ {
		publish(t, b, ch, []byte(msg(uint64(i))))
	}
	got := a.rec.WaitPublications(t, ch, 3, h.Wait)
	if h.Features.History {
		h.checkSeqs(t, "a received from b", got, 1, got[0].Epoch, msg)
	}
	subscribe(t, b, ch)
	pos := publish(t, a, ch, []byte(msg(4)))
	if h.Features.History && pos.Seq != 4 {
		t.Errorf("Publish on a after 3 on b: seq %d, want 4", pos.Seq)
	}
	for name, n := range map[string]*node{"a": a, "b": b} {
		got := n.rec.WaitFor(t, h.Wait, name+" receiving m4", func(evs []Event) bool {
			for _, p := range publications(evs, ch) {
				if string(p.Data) == msg(4) {
					return true
				}
			}
			return false
		})
		if h.Features.History {
			ps := publications(got, ch)
			last := ps[len(ps)-1]
			if last.Seq != 4 {
				t.Errorf("%s received m4 with seq %d, want 4", name, last.Seq)
			}
			h.checkEpoch(t, name+" received m4", last.Epoch, pos.Epoch)
		}
	}
	h.fence(t, b, a)
	if n := len(a.rec.Publications(ch)); n != 4 {
		t.Errorf("a received %d publications, want 4", n)
	}
}

// testPairConcurrent: publishers on both nodes; both nodes see every message
// once, and, where the backend orders a channel (History: one seq order),
// in the same order. Without history (core NATS) only each publisher's own
// order is promised.
func (h *harness) testPairConcurrent(t *testing.T) {
	a, b := h.startPair(t)
	ch := h.channel(t, "a")
	subscribe(t, a, ch)
	subscribe(t, b, ch)
	returned := publishConcurrently(t, []*node{a, b}, ch, concPublishers, concEach)
	h.checkConcurrent(t, "node a: ", a, ch, returned)
	h.checkConcurrent(t, "node b: ", b, ch, returned)
	if !h.Features.History {
		return
	}
	pa, pb := a.rec.Publications(ch), b.rec.Publications(ch)
	for i := range pa {
		if string(pa[i].Data) != string(pb[i].Data) {
			t.Fatalf("delivery %d: a got %q, b got %q: nodes disagree on the order", i, pa[i].Data, pb[i].Data)
		}
	}
}

// testPairUnsubscribe: a node that unsubscribed gets nothing, the other
// still does.
func (h *harness) testPairUnsubscribe(t *testing.T) {
	a, b := h.startPair(t)
	ch := h.channel(t, "a")
	subscribe(t, a, ch)
	subscribe(t, b, ch)
	publish(t, b, ch, []byte("1"))
	a.rec.WaitPublications(t, ch, 1, h.Wait)
	unsubscribe(t, a, ch)
	publish(t, b, ch, []byte("2"))
	b.rec.WaitPublications(t, ch, 2, h.Wait)
	h.fence(t, b, a)
	if n := len(a.rec.Publications(ch)); n != 1 {
		t.Errorf("a received %d publications, want 1: delivered after Unsubscribe", n)
	}
}

// testPairHistory: history written through one node is read through the
// other, with one epoch, and subscribe-then-Since has no gap across nodes.
func (h *harness) testPairHistory(t *testing.T) {
	a, b := h.startPair(t)
	ch := h.channel(t, "a")
	epoch := h.publishN(t, a, ch, 5)
	pubs, pos := since(t, b, ch, 2, 10)
	h.checkSeqs(t, "b reading a's history", pubs, 3, epoch, msg)
	if len(pubs) != 3 || pos.Seq != 5 {
		t.Errorf("b reading a's history: %d publications, latest %d; want 3, 5", len(pubs), pos.Seq)
	}
	h.checkEpoch(t, "b's latest position", pos.Epoch, epoch)
	for round := range 3 {
		h.subscribeThenSince(t, a, b, h.channel(t, fmt.Sprintf("round%d", round)), 10+7*round)
	}
}

// testPairPresence: presence is shared: a member joined on one node is
// listed and announced on the other, and so are its leave and its expiry.
func (h *harness) testPairPresence(t *testing.T) {
	a, b := h.startPair(t)
	ch := h.channel(t, "a")
	m1, m2 := member(1), member(2)
	subscribe(t, a, ch)
	join(t, b, ch, m1, time.Minute)
	a.rec.WaitPresence(t, ch, brokers.Join, m1, h.Wait)
	checkMembers(t, a, ch, m1)
	checkMembers(t, b, ch, m1)
	leave(t, b, ch, m1)
	a.rec.WaitPresence(t, ch, brokers.Leave, m1, h.Wait)
	checkMembers(t, a, ch)

	join(t, b, ch, m2, h.PresenceTTL) // never refreshed
	a.rec.WaitPresence(t, ch, brokers.Leave, m2, h.PresenceTTL+h.Wait)
	checkMembers(t, a, ch)
	h.fence(t, b, a)
	checkPresence(t, a.rec.Presence(ch), ev(brokers.Join, m1), ev(brokers.Leave, m1), ev(brokers.Join, m2), ev(brokers.Leave, m2))
}
