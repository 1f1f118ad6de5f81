package jetstream_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
)

// blockingRecorder holds the first publication until release is closed.
type blockingRecorder struct {
	*brokertest.Recorder
	once    sync.Once
	release chan struct{}
}

func (h *blockingRecorder) HandlePublication(ch string, p brokers.Publication) {
	h.once.Do(func() { <-h.release })
	h.Recorder.HandlePublication(ch, p)
}

// TestSlowConsumerRefill: the node's delivery queue overflows (a stalled
// handler, a queue of one message), so the client library drops the
// channel's messages, including its last one. No later message reveals
// the gap; the slow-consumer report must make the node check the channel
// against the stream and deliver everything, in order.
func TestSlowConsumerRefill(t *testing.T) {
	srv := natstest.RunServer(t)
	b := jetstream.New(jetstream.Config{URL: srv.URL(), Shards: 1, QueueSize: 1})
	h := &blockingRecorder{Recorder: brokertest.NewRecorder(), release: make(chan struct{})}
	if err := b.Start(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	const ch, n = "doc.slow", 60
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
	if err := h.Err(); err != nil {
		t.Error(err)
	}
}
