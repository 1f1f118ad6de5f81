package brokertest

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/syncgate/syncgate/brokers"
)

// msg is the data the history checks publish as seq s on a fresh channel.
func msg(s uint64) string { return fmt.Sprintf("m%d", s) }

// publishN publishes msg(1..n) on a fresh ch, reusing one buffer, and
// checks the positions Publish returns; it returns the epoch.
func (h *harness) publishN(t *testing.T, n *node, ch string, count int) string {
	t.Helper()
	var epoch string
	buf := make([]byte, 0, 32)
	for i := 1; i <= count; i++ {
		buf = append(buf[:0], msg(uint64(i))...)
		pos := publish(t, n, ch, buf)
		clear(buf[:cap(buf)]) // the broker must have copied
		if pos.Seq != uint64(i) {
			t.Fatalf("Publish %d on a fresh channel returned seq %d, want %d", i, pos.Seq, i)
		}
		if i == 1 {
			epoch = pos.Epoch
		}
		h.checkEpoch(t, fmt.Sprintf("Publish %d", i), pos.Epoch, epoch)
	}
	return epoch
}

// testSeqContiguous: seqs start at 1 and grow by 1, with one epoch.
func (h *harness) testSeqContiguous(t *testing.T) {
	n := h.startOne(t)
	h.publishN(t, n, h.channel(t, "a"), 50)
}

// testSince: Since returns exactly the publications after since, oldest
// first, and the latest position; the epoch does not change.
func (h *harness) testSince(t *testing.T) {
	n := h.startOne(t)
	ch := h.channel(t, "a")
	epoch := h.publishN(t, n, ch, 10)
	for _, c := range []struct {
		after   uint64
		first   uint64
		count   int
		comment string
	}{
		{4, 5, 6, "the missed ones"},
		{0, 1, 10, "all"},
		{9, 10, 1, "the last one"},
		{10, 0, 0, "up to date"},
		{50, 0, 0, "since beyond the latest seq"},
	} {
		what := fmt.Sprintf("Since(%d) (%s)", c.after, c.comment)
		pubs, pos := since(t, n, ch, c.after, 100)
		if len(pubs) != c.count {
			t.Fatalf("%s: %d publications %v, want %d", what, len(pubs), seqsOf(pubs), c.count)
		}
		h.checkSeqs(t, what, pubs, c.first, epoch, msg)
		if pos.Seq != 10 {
			t.Errorf("%s: latest seq %d, want 10", what, pos.Seq)
		}
		h.checkEpoch(t, what+": latest", pos.Epoch, epoch)
	}
	// The returned data must not be affected by later publications.
	pubs, _ := since(t, n, ch, 0, 100)
	publish(t, n, ch, []byte("m11"))
	h.checkSeqs(t, "Since(0) after a later Publish", pubs, 1, epoch, msg)
}

// testLimit: limit caps the count, oldest first; limit 0 returns only the
// position.
func (h *harness) testLimit(t *testing.T) {
	n := h.startOne(t)
	ch := h.channel(t, "a")
	epoch := h.publishN(t, n, ch, 10)
	for _, c := range []struct {
		after        uint64
		limit, count int
	}{
		{0, 3, 3},
		{5, 2, 2},
		{8, 5, 2},
		{0, 0, 0},
		{3, 0, 0},
	} {
		what := fmt.Sprintf("Since(%d, limit %d)", c.after, c.limit)
		pubs, pos := since(t, n, ch, c.after, c.limit)
		if len(pubs) != c.count {
			t.Fatalf("%s: %d publications %v, want %d", what, len(pubs), seqsOf(pubs), c.count)
		}
		h.checkSeqs(t, what, pubs, c.after+1, epoch, msg)
		if pos.Seq != 10 {
			t.Errorf("%s: latest seq %d, want 10", what, pos.Seq)
		}
		h.checkEpoch(t, what+": latest", pos.Epoch, epoch)
	}
}

// testNeverSeen: a channel with no message has seq 0 and an epoch that,
// while the node is subscribed to it (as the gateway is before it reads a
// position), stays the same and the node's first publication keeps.
func (h *harness) testNeverSeen(t *testing.T) {
	n := h.startOne(t)
	ch := h.channel(t, "a")
	if err := n.b.Subscribe(t.Context(), ch); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	pubs, pos := since(t, n, ch, 0, 10)
	if len(pubs) != 0 || pos.Seq != 0 {
		t.Fatalf("never-seen channel: %d publications, latest seq %d; want none, 0", len(pubs), pos.Seq)
	}
	h.checkEpoch(t, "never-seen channel", pos.Epoch, pos.Epoch)
	_, again := since(t, n, ch, 0, 10)
	h.checkEpoch(t, "never-seen channel, second Since", again.Epoch, pos.Epoch)
	got := publish(t, n, ch, []byte("m1"))
	if got.Seq != 1 {
		t.Errorf("first Publish: seq %d, want 1", got.Seq)
	}
	h.checkEpoch(t, "first Publish after Since", got.Epoch, pos.Epoch)
}

// testTruncation: with more than HistorySize published, exactly the latest
// HistorySize are kept, and the caller sees that history was cut.
func (h *harness) testTruncation(t *testing.T) {
	n := h.startOne(t)
	ch := h.channel(t, "a")
	size := h.Features.HistorySize
	const extra = 5
	epoch := h.publishN(t, n, ch, size+extra)
	latest := uint64(size + extra)

	pubs, pos := since(t, n, ch, 0, size+100)
	if pos.Seq != latest {
		t.Errorf("latest seq %d, want %d", pos.Seq, latest)
	}
	if len(pubs) != size {
		t.Fatalf("history holds %d publications, want HistorySize %d", len(pubs), size)
	}
	h.checkSeqs(t, "truncated history", pubs, extra+1, epoch, msg)
	if pubs[0].Seq == 1 || uint64(len(pubs)) == pos.Seq {
		t.Errorf("truncation not detectable: first seq %d, %d publications, latest %d", pubs[0].Seq, len(pubs), pos.Seq)
	}

	// A since inside the cut part: the first returned is after since+1.
	pubs, _ = since(t, n, ch, 2, 3)
	h.checkSeqs(t, "Since(2, limit 3) in truncated history", pubs, extra+1, epoch, msg)
	if len(pubs) != 3 {
		t.Errorf("Since(2, limit 3): %d publications, want 3", len(pubs))
	}
}

// testSubscribeThenSince: while a publisher runs, a subscriber subscribes,
// then reads history. Merging the history and the live publications by seq
// gives every seq from the first in history to the last published exactly
// once, with no gap between history and live.
func (h *harness) testSubscribeThenSince(t *testing.T) {
	n := h.startOne(t)
	for round := range 5 {
		ch := h.channel(t, fmt.Sprintf("round%d", round))
		h.subscribeThenSince(t, n, n, ch, 10+7*round)
	}
}

// subscribeThenSince runs one round: pub publishes on ch while sub
// subscribes after `after` publications.
func (h *harness) subscribeThenSince(t *testing.T, pub, sub *node, ch string, after int) {
	t.Helper()
	const maxPubs = 200_000 // a bound in case live delivery never comes
	const liveWanted = 20
	var published atomic.Uint64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func(stop <-chan struct{}) {
		for i := uint64(1); i <= maxPubs; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := pub.b.Publish(t.Context(), ch, []byte(msg(i))); err != nil {
				done <- err
				return
			}
			published.Store(i)
		}
		done <- nil
	}(stop)
	stopPublisher := func() {
		t.Helper()
		if stop != nil {
			close(stop)
			stop = nil
			if err := <-done; err != nil {
				t.Errorf("publisher: %v", err)
			}
		}
	}
	defer stopPublisher()

	Eventually(t, h.Wait, fmt.Sprintf("%d publications", after), func() bool { return published.Load() >= uint64(after) })
	subscribe(t, sub, ch)
	hist, pos := since(t, sub, ch, 0, h.Features.HistorySize)
	sub.rec.WaitPublications(t, ch, liveWanted, h.Wait)
	stopPublisher()
	total := published.Load()
	live := sub.rec.WaitFor(t, h.Wait, fmt.Sprintf("seq %d on %s", total, ch), func(evs []Event) bool {
		ps := publications(evs, ch)
		return len(ps) > 0 && ps[len(ps)-1].Seq >= total
	})
	livePubs := publications(live, ch)

	if len(hist) == 0 {
		t.Fatalf("history empty at latest seq %d after %d publications", pos.Seq, after)
	}
	h.checkSeqs(t, "history", hist, hist[0].Seq, pos.Epoch, msg)
	if last := hist[len(hist)-1].Seq; last != pos.Seq {
		t.Fatalf("history ends at seq %d, but the latest position is %d", last, pos.Seq)
	}
	first := livePubs[0].Seq
	h.checkSeqs(t, "live", livePubs, first, pos.Epoch, msg)
	if last := livePubs[len(livePubs)-1].Seq; last != total {
		t.Fatalf("live ends at seq %d, want %d (the last published)", last, total)
	}
	if first > pos.Seq+1 {
		t.Fatalf("gap: history ends at seq %d, first live publication is seq %d: seqs %d..%d are lost", pos.Seq, first, pos.Seq+1, first-1)
	}
	if first == 0 || first > total {
		t.Fatalf("first live seq %d out of range 1..%d", first, total)
	}
	// The merge: history below the first live seq, then live. checkSeqs
	// made both contiguous with the right data; the merge must be too.
	var merged []brokers.Publication
	for _, p := range hist {
		if p.Seq < first {
			merged = append(merged, p)
		}
	}
	merged = append(merged, livePubs...)
	start := merged[0].Seq
	h.checkSeqs(t, "merged", merged, start, pos.Epoch, msg)
	if uint64(len(merged)) != total-start+1 {
		t.Fatalf("merged %d publications, want %d (seqs %d..%d)", len(merged), total-start+1, start, total)
	}
}
