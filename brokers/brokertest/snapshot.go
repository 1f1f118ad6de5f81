package brokertest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/syncgate/syncgate/brokers"
)

// testSnapshotRules: load of a channel without snapshot; a higher seq
// replaces, an equal or lower one does not; another epoch replaces; data
// comes back byte for byte and is not aliased to the caller's buffer.
func (h *harness) testSnapshotRules(t *testing.T) {
	n := h.startOne(t)
	sn := n.b.(brokers.Snapshots)
	ch := h.channel(t, "snap")
	ctx := t.Context()
	if _, ok, err := sn.LoadSnapshot(ctx, ch); err != nil || ok {
		t.Fatalf("LoadSnapshot of a fresh channel = ok %v, err %v; want none", ok, err)
	}
	store := func(seq uint64, epoch, data string, wantKept bool, want brokers.Snapshot) {
		t.Helper()
		buf := []byte(data)
		kept, now, err := sn.StoreSnapshot(ctx, ch, brokers.Snapshot{Seq: seq, Epoch: epoch, Data: buf})
		if err != nil {
			t.Fatalf("StoreSnapshot(%d, %q): %v", seq, epoch, err)
		}
		for i := range buf {
			buf[i] = 'X' // the broker must have copied it
		}
		if kept != wantKept || now.Seq != want.Seq || now.Epoch != want.Epoch || string(now.Data) != string(want.Data) {
			t.Fatalf("StoreSnapshot(%d, %q, %s) = kept %v, now {%d %q %s}; want kept %v, now {%d %q %s}",
				seq, epoch, data, kept, now.Seq, now.Epoch, now.Data, wantKept, want.Seq, want.Epoch, want.Data)
		}
		got, ok, err := sn.LoadSnapshot(ctx, ch)
		if err != nil || !ok || got.Seq != want.Seq || got.Epoch != want.Epoch || string(got.Data) != string(want.Data) {
			t.Fatalf("LoadSnapshot = {%d %q %s} ok %v err %v; want {%d %q %s}", got.Seq, got.Epoch, got.Data, ok, err, want.Seq, want.Epoch, want.Data)
		}
	}
	s5 := brokers.Snapshot{Seq: 5, Epoch: "e1", Data: []byte(`{"v":5}`)}
	store(5, "e1", `{"v":5}`, true, s5)
	store(5, "e1", `{"v":"other"}`, false, s5) // equal seq: the first stays
	store(3, "e1", `{"v":3}`, false, s5)       // older never replaces newer
	s9 := brokers.Snapshot{Seq: 9, Epoch: "e1", Data: []byte(`"nine"`)}
	store(9, "e1", `"nine"`, true, s9)
	s2 := brokers.Snapshot{Seq: 2, Epoch: "e2", Data: []byte(`[1,2]`)}
	store(2, "e2", `[1,2]`, true, s2) // a new epoch replaces the old one
}

// testSnapshotConcurrent: writers racing on one channel end with the
// highest seq, whatever the order.
func (h *harness) testSnapshotConcurrent(t *testing.T) {
	n := h.startOne(t)
	sn := n.b.(brokers.Snapshots)
	ch := h.channel(t, "snaprace")
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers*10)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				seq := uint64(1 + (i*writers+w*7)%(writers*10))
				if _, _, err := sn.StoreSnapshot(t.Context(), ch, brokers.Snapshot{Seq: seq, Epoch: "e", Data: []byte(fmt.Sprint(seq))}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, ok, err := sn.LoadSnapshot(t.Context(), ch)
	if err != nil || !ok {
		t.Fatalf("LoadSnapshot: ok %v err %v", ok, err)
	}
	var top uint64
	for w := range writers {
		for i := range 10 {
			top = max(top, uint64(1+(i*writers+w*7)%(writers*10)))
		}
	}
	if got.Seq != top || string(got.Data) != fmt.Sprint(top) {
		t.Fatalf("after concurrent writers: snapshot {%d %s}, want the highest seq %d", got.Seq, got.Data, top)
	}
}
