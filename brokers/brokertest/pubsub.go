package brokertest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/syncgate/syncgate/brokers"
)

// testDelivery: a subscribed channel's publications arrive once each, in
// order, with the bytes published (even though the publisher reuses its
// buffer), and with the position Publish returned.
func (h *harness) testDelivery(t *testing.T) {
	n := h.startOne(t)
	ch := h.channel(t, "a")
	subscribe(t, n, ch)
	payloads := []string{`{"n":1}`, "", "\x00\xff\n binary", `{"n":4}`}
	buf := make([]byte, 0, 64)
	positions := make([]brokers.Position, len(payloads))
	for i, p := range payloads {
		buf = append(buf[:0], p...)
		positions[i] = publish(t, n, ch, buf)
		for k := range buf {
			buf[k] = '#' // the broker must have copied
		}
	}
	got := n.rec.WaitPublications(t, ch, len(payloads), h.Wait)
	h.fence(t, n, n)
	got = n.rec.Publications(ch)
	if len(got) != len(payloads) {
		t.Fatalf("got %d publications, want %d", len(got), len(payloads))
	}
	for i, p := range got {
		if string(p.Data) != payloads[i] {
			t.Errorf("publication %d: data %q, want %q", i, p.Data, payloads[i])
		}
		if h.Features.History {
			if p.Seq != uint64(i+1) || positions[i].Seq != uint64(i+1) {
				t.Errorf("publication %d: delivered seq %d, Publish returned %d, want %d", i, p.Seq, positions[i].Seq, i+1)
			}
		}
		h.checkEpoch(t, fmt.Sprintf("publication %d", i), p.Epoch, positions[0].Epoch)
		h.checkEpoch(t, fmt.Sprintf("Publish %d", i), positions[i].Epoch, positions[0].Epoch)
	}
}

// testOnlySubscribed: a channel this node did not subscribe is not
// delivered, but its history is kept.
func (h *harness) testOnlySubscribed(t *testing.T) {
	n := h.startOne(t)
	a, b := h.channel(t, "a"), h.channel(t, "b")
	subscribe(t, n, a)
	publish(t, n, b, []byte("b1"))
	publish(t, n, a, []byte("a1"))
	n.rec.WaitPublications(t, a, 1, h.Wait)
	h.fence(t, n, n)
	if got := n.rec.Publications(b); len(got) != 0 {
		t.Errorf("unsubscribed channel delivered %d publications", len(got))
	}
	if h.Features.History {
		pubs, pos := since(t, n, b, 0, 10)
		if len(pubs) != 1 || string(pubs[0].Data) != "b1" || pos.Seq != 1 {
			t.Errorf("history of the unsubscribed channel: %d publications, latest seq %d; want b1 at seq 1", len(pubs), pos.Seq)
		}
	}
}

// testUnsubscribe: nothing is delivered after Unsubscribe returns;
// unsubscribing an unknown channel is fine; subscribing again works.
func (h *harness) testUnsubscribe(t *testing.T) {
	n := h.startOne(t)
	ch := h.channel(t, "a")
	unsubscribe(t, n, h.channel(t, "never-subscribed"))
	subscribe(t, n, ch)
	publish(t, n, ch, []byte("1"))
	n.rec.WaitPublications(t, ch, 1, h.Wait)
	unsubscribe(t, n, ch)
	publish(t, n, ch, []byte("2"))
	publish(t, n, ch, []byte("3"))
	h.fence(t, n, n)
	if got := n.rec.Publications(ch); len(got) != 1 {
		t.Fatalf("%d publications delivered, want 1: delivered after Unsubscribe", len(got))
	}
	subscribe(t, n, ch)
	publish(t, n, ch, []byte("4"))
	got := n.rec.WaitPublications(t, ch, 2, h.Wait)
	if string(got[1].Data) != "4" {
		t.Errorf("after subscribing again got %q, want 4", got[1].Data)
	}
	if h.Features.History && got[1].Seq != 4 {
		t.Errorf("after subscribing again got seq %d, want 4", got[1].Seq)
	}
}

// testChannelsIndependent: each channel has its own seqs and deliveries.
func (h *harness) testChannelsIndependent(t *testing.T) {
	n := h.startOne(t)
	a, b := h.channel(t, "a"), h.channel(t, "b")
	subscribe(t, n, a)
	subscribe(t, n, b)
	for i := 1; i <= 3; i++ {
		pa := publish(t, n, a, fmt.Appendf(nil, "a%d", i))
		if h.Features.History && pa.Seq != uint64(i) {
			t.Errorf("a%d got seq %d, want %d", i, pa.Seq, i)
		}
		if i <= 2 {
			pb := publish(t, n, b, fmt.Appendf(nil, "b%d", i))
			if h.Features.History && pb.Seq != uint64(i) {
				t.Errorf("b%d got seq %d, want %d", i, pb.Seq, i)
			}
		}
	}
	ga := n.rec.WaitPublications(t, a, 3, h.Wait)
	gb := n.rec.WaitPublications(t, b, 2, h.Wait)
	h.fence(t, n, n)
	ga, gb = n.rec.Publications(a), n.rec.Publications(b)
	for _, c := range []struct {
		name string
		got  []brokers.Publication
		n    int
	}{{"a", ga, 3}, {"b", gb, 2}} {
		if len(c.got) != c.n {
			t.Fatalf("%s: %d publications, want %d", c.name, len(c.got), c.n)
		}
		for i, p := range c.got {
			if want := fmt.Sprintf("%s%d", c.name, i+1); string(p.Data) != want {
				t.Errorf("%s: publication %d is %q, want %q", c.name, i, p.Data, want)
			}
			if h.Features.History && p.Seq != uint64(i+1) {
				t.Errorf("%s: publication %d has seq %d, want %d", c.name, i, p.Seq, i+1)
			}
		}
	}
	if h.Features.History {
		pubs, pos := since(t, n, a, 0, 10)
		h.checkSeqs(t, "history of a", pubs, 1, pos.Epoch, func(s uint64) string { return fmt.Sprintf("a%d", s) })
		if len(pubs) != 3 || pos.Seq != 3 {
			t.Errorf("history of a: %d publications, latest %d; want 3, 3", len(pubs), pos.Seq)
		}
	}
}

const (
	concPublishers = 8
	concEach       = 200
)

// testConcurrentPublishers: 8 goroutines publish 200 messages each on one
// channel. Every message is delivered exactly once, each publisher's
// messages in its order, and with history the delivered seqs are exactly
// 1..1600 in order, each with the data whose Publish returned that seq.
func (h *harness) testConcurrentPublishers(t *testing.T) {
	n := h.startOne(t)
	ch := h.channel(t, "a")
	subscribe(t, n, ch)
	returned := publishConcurrently(t, []*node{n}, ch, concPublishers, concEach)
	h.checkConcurrent(t, "", n, ch, returned)
}

// publishConcurrently runs publishers goroutines (spread over nodes) that
// each publish each messages "p:i" on ch, and returns the seq Publish
// returned for each message (indexed [p][i]).
func publishConcurrently(t *testing.T, nodes []*node, ch string, publishers, each int) [][]uint64 {
	t.Helper()
	returned := make([][]uint64, publishers)
	errs := make(chan error, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		returned[p] = make([]uint64, each)
		n := nodes[p%len(nodes)]
		wg.Go(func() {
			for i := range each {
				pos, err := n.b.Publish(t.Context(), ch, fmt.Appendf(nil, "%d:%d", p, i))
				if err != nil {
					errs <- fmt.Errorf("publisher %d, message %d: %w", p, i, err)
					return
				}
				returned[p][i] = pos.Seq
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return returned
}

// checkConcurrent checks what n received on ch from publishConcurrently.
func (h *harness) checkConcurrent(t *testing.T, who string, n *node, ch string, returned [][]uint64) {
	t.Helper()
	total := 0
	bySeq := make(map[uint64]string)
	for p, seqs := range returned {
		total += len(seqs)
		for i, s := range seqs {
			if h.Features.History {
				if prev, dup := bySeq[s]; dup {
					t.Fatalf("%sPublish returned seq %d twice (%s and %d:%d)", who, s, prev, p, i)
				}
				bySeq[s] = fmt.Sprintf("%d:%d", p, i)
			}
		}
	}
	n.rec.WaitPublications(t, ch, total, h.Wait)
	h.fence(t, n, n)
	got := n.rec.Publications(ch)
	if len(got) != total {
		t.Fatalf("%sdelivered %d publications, want %d", who, len(got), total)
	}
	next := make([]int, len(returned)) // next expected index per publisher
	for k, pub := range got {
		var p, i int
		if _, err := fmt.Sscanf(string(pub.Data), "%d:%d", &p, &i); err != nil || p < 0 || p >= len(next) {
			t.Fatalf("%sdelivery %d: unexpected data %q", who, k, pub.Data)
		}
		if i != next[p] {
			t.Fatalf("%sdelivery %d: publisher %d's message %d, want its message %d (lost, duplicated or reordered)", who, k, p, i, next[p])
		}
		next[p]++
		if h.Features.History {
			if pub.Seq != uint64(k+1) {
				t.Fatalf("%sdelivery %d has seq %d, want %d", who, k, pub.Seq, k+1)
			}
			if want := bySeq[pub.Seq]; string(pub.Data) != want {
				t.Fatalf("%sseq %d delivered %q, but Publish returned it for %q", who, pub.Seq, pub.Data, want)
			}
		}
	}
	if h.Features.History {
		for s := uint64(1); s <= uint64(total); s++ {
			if _, ok := bySeq[s]; !ok {
				t.Fatalf("%sno Publish returned seq %d of 1..%d", who, s, total)
			}
		}
	}
}
