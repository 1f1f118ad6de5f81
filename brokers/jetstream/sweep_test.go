package jetstream

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/internal/natstest"
)

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
	brokertest.StalledRefill(t, b, "doc.sweep.fill", 60)
	if failed.Load() == 0 {
		t.Fatal("no sweep filled the channel: the queue did not overflow, nothing was tested")
	}
}
