package client

import "testing"

// TestWasRule: a msg that comes back with `was` naming a provisional
// position already delivered only moves the position; one naming a
// provisional position never delivered here is a new message.
func TestWasRule(t *testing.T) {
	s := &Subscription{ch: "doc", wake: make(chan struct{}), seq: 41, epoch: "E", known: true}
	prov := "~n1.41.E"
	steps := []struct {
		f    frame
		want bool
	}{
		{frame{Seq: 1, Epoch: prov, Data: []byte(`"a"`)}, true},
		{frame{Seq: 2, Epoch: prov, Data: []byte(`"b"`)}, true},
		{frame{Seq: 42, Epoch: "E", Data: []byte(`"other node"`)}, true},
		{frame{Seq: 43, Epoch: "E", Was: &Position{Seq: 1, Epoch: prov}, Data: []byte(`"a"`)}, false},
		{frame{Seq: 44, Epoch: "E", Was: &Position{Seq: 2, Epoch: prov}, Data: []byte(`"b"`)}, false},
		{frame{Seq: 45, Epoch: "E", Was: &Position{Seq: 3, Epoch: prov}, Data: []byte(`"c, never seen"`)}, true},
		{frame{Seq: 46, Epoch: "E", Was: &Position{Seq: 1, Epoch: "~n2.40.E"}, Data: []byte(`"another node's"`)}, true},
		{frame{Seq: 46, Epoch: "E", Data: []byte(`"redelivery"`)}, false},
	}
	for i, st := range steps {
		if got := s.deliverLocked(&st.f); got != st.want {
			t.Errorf("step %d (%s): delivered %v, want %v", i, st.f.Data, got, st.want)
		}
		if st.f.Seq != s.seq || st.f.Epoch != s.epoch {
			t.Errorf("step %d: position %d/%s, want %d/%s", i, s.seq, s.epoch, st.f.Seq, st.f.Epoch)
		}
	}
}
