package jetstream

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/internal/natstest"
)

// stallingRecorder holds the first publication until release is closed.
type stallingRecorder struct {
	*brokertest.Recorder
	once    sync.Once
	release chan struct{}
}

func (h *stallingRecorder) HandlePublication(ch string, p brokers.Publication) {
	h.once.Do(func() { <-h.release })
	h.Recorder.HandlePublication(ch, p)
}

// TestSweepFillFails: the delivery queue overflows (TestSlowConsumerRefill's
// stalled handler and queue of one message), so the channel's last
// messages are dropped and only the sweep that follows can deliver them;
// that sweep's fill fails once (sweepFillFault). The sweep must count as
// failed, so that the flusher sweeps again and delivers everything, in
// order. It failed before: a failed fill counted as a successful sweep,
// and the dropped messages stayed undelivered until the next drop or
// reconnect.
func TestSweepFillFails(t *testing.T) {
	srv := natstest.RunServer(t)
	b := New(Config{URL: srv.URL(), Shards: 1, QueueSize: 1})
	var failed atomic.Int32
	b.sweepFillFault = func() error {
		if failed.CompareAndSwap(0, 1) {
			return errors.New("injected: a sweep's fill fails")
		}
		return nil
	}
	h := &stallingRecorder{Recorder: brokertest.NewRecorder(), release: make(chan struct{})}
	if err := b.Start(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	const ch, n = "doc.sweep.fill", 60
	if err := b.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := b.Publish(t.Context(), ch, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // the library drops what does not fit
	close(h.release)
	got := h.WaitPublications(t, ch, n, 10*time.Second)
	for i, p := range got {
		if p.Seq != uint64(i+1) || string(p.Data) != fmt.Sprintf("m%d", i) {
			t.Fatalf("publication %d: seq %d %q, want seq %d m%d", i, p.Seq, p.Data, i+1, i)
		}
	}
	if failed.Load() == 0 {
		t.Fatal("no sweep filled the channel: the queue did not overflow, nothing was tested")
	}
	if err := h.Err(); err != nil {
		t.Error(err)
	}
}
