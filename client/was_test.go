package client

import "testing"

// TestWasRule: real and provisional positions are deduplicated apart; a
// msg that comes back with `was` naming a provisional position already
// delivered only moves the position; one naming a provisional position
// never delivered here is a new message; redeliveries are dropped even
// when provisional messages came in between.
func TestWasRule(t *testing.T) {
	s := &Subscription{ch: "doc", wake: make(chan struct{}), seq: 41, epoch: "E", known: true, real: Position{Seq: 41, Epoch: "E"}}
	prov, prov2 := "~n1.41.E", "~n1.44.E"
	steps := []struct {
		f       frame
		want    bool
		wantPos Position // where the subscription resumes from afterwards
	}{
		{frame{Seq: 1, Epoch: prov, Data: []byte(`"a"`)}, true, Position{1, prov}},
		{frame{Seq: 2, Epoch: prov, Data: []byte(`"b"`)}, true, Position{2, prov}},
		{frame{Seq: 2, Epoch: prov, Data: []byte(`"b again"`)}, false, Position{2, prov}},
		{frame{Seq: 42, Epoch: "E", Data: []byte(`"other node"`)}, true, Position{42, "E"}},
		{frame{Seq: 43, Epoch: "E", Was: &Position{Seq: 1, Epoch: prov}, Data: []byte(`"a"`)}, false, Position{43, "E"}},
		{frame{Seq: 44, Epoch: "E", Was: &Position{Seq: 2, Epoch: prov}, Data: []byte(`"b"`)}, false, Position{44, "E"}},
		{frame{Seq: 1, Epoch: prov2, Data: []byte(`"c, a new outage"`)}, true, Position{1, prov2}},
		{frame{Seq: 45, Epoch: "E", Was: &Position{Seq: 3, Epoch: prov}, Data: []byte(`"d, never seen"`)}, true, Position{45, "E"}},
		{frame{Seq: 46, Epoch: "E", Was: &Position{Seq: 2, Epoch: prov}, Data: []byte(`"b, from the older outage"`)}, false, Position{46, "E"}},
		{frame{Seq: 47, Epoch: "E", Was: &Position{Seq: 1, Epoch: "~n2.40.E"}, Data: []byte(`"another node's"`)}, true, Position{47, "E"}},
		{frame{Seq: 43, Epoch: "E", Was: &Position{Seq: 1, Epoch: prov}, Data: []byte(`"a, redelivered"`)}, false, Position{47, "E"}},
		{frame{Seq: 47, Epoch: "E", Data: []byte(`"redelivery"`)}, false, Position{47, "E"}},
		{frame{Seq: 48, Epoch: "E", Was: &Position{Seq: 1, Epoch: prov2}, Data: []byte(`"c"`)}, false, Position{48, "E"}},
	}
	for i, st := range steps {
		if got := s.deliverLocked(&st.f); got != st.want {
			t.Errorf("step %d (%s): delivered %v, want %v", i, st.f.Data, got, st.want)
		}
		if got := (Position{s.seq, s.epoch}); got != st.wantPos {
			t.Errorf("step %d (%s): position %v, want %v", i, st.f.Data, got, st.wantPos)
		}
	}
}
