package gateway

import (
	"fmt"
	"testing"
)

// TestMergeBufferedProvisional: provisional publications (a node's own,
// during a broker outage) interleave with real ones in a catch-up buffer;
// each keeps its own watermark, so a provisional one never lets an old real
// seq through, and a new real epoch still resets the real numbering.
func TestMergeBufferedProvisional(t *testing.T) {
	const p1, p2 = "~a.5.E", "~b.7.E"
	buf := []bufferedPub{
		{seq: 5, epoch: "E"},  // seen in history: dropped
		{seq: 1, epoch: p1},   // new
		{seq: 6, epoch: "E"},  // seen in history: dropped
		{seq: 2, epoch: p1},   // new
		{seq: 9, epoch: "E"},  // new
		{seq: 2, epoch: p1},   // redelivered: dropped
		{seq: 8, epoch: "E"},  // below 9: dropped
		{seq: 1, epoch: p2},   // another outage: new
		{seq: 10, epoch: "E"}, // new
		{seq: 1, epoch: "F"},  // history restarted: new, numbering restarts
		{seq: 2, epoch: "F"},  // new
		{seq: 0, epoch: ""},   // a backend without seqs: always passes
	}
	m := mergeState{epoch: "E", last: 6}
	var got []string
	for _, bp := range mergeBuffered(buf, &m) {
		got = append(got, fmt.Sprintf("%s/%d", bp.epoch, bp.seq))
	}
	want := fmt.Sprint([]string{p1 + "/1", p1 + "/2", "E/9", p2 + "/1", "E/10", "F/1", "F/2", "/0"})
	if fmt.Sprint(got) != want {
		t.Errorf("merged %v, want %v", got, want)
	}
	if m.epoch != "F" || m.last != 2 || m.provEpoch != p2 || m.provSeq != 1 {
		t.Errorf("state after the merge %+v", m)
	}
	// Live: the same rule per subscriber.
	s := &sub{lastSeq: m.last, provSeq: m.provSeq}
	for _, c := range []struct {
		seq  uint64
		prov bool
		want bool
	}{{2, false, false}, {3, false, true}, {1, true, false}, {2, true, true}, {3, false, false}, {4, false, true}} {
		if got := s.accept(c.seq, c.prov); got != c.want {
			t.Errorf("accept(%d, prov=%v) = %v, want %v", c.seq, c.prov, got, c.want)
		}
	}
}
