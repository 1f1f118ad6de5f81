package brokertest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
)

// Started starts b on a new Recorder, closes it when the test ends and
// returns both.
func Started[B brokers.Broker](t testing.TB, b B) (B, *Recorder) {
	t.Helper()
	rec := NewRecorder()
	StartedOn(t, b, rec)
	return b, rec
}

// StartedOn starts b on h and closes it when the test ends.
func StartedOn(t testing.TB, b brokers.Broker, h brokers.Handler) {
	t.Helper()
	if err := b.Start(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
}

// PublishN publishes n messages of data on a fresh channel ch through b
// and returns the last one's position, failing unless it is seq n.
func PublishN(t testing.TB, b brokers.Broker, ch string, n int, data string) brokers.Position {
	t.Helper()
	var last brokers.Position
	for range n {
		pos, err := b.Publish(t.Context(), ch, []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		last = pos
	}
	if last.Seq != uint64(n) {
		t.Fatalf("publication %d at %+v, want seq %d", n, last, n)
	}
	return last
}

// PublishSeq publishes i (its decimal text) on ch through b and fails
// unless it got seq i.
func PublishSeq(t testing.TB, b brokers.Broker, ch string, i int) {
	t.Helper()
	if pos, err := b.Publish(t.Context(), ch, fmt.Appendf(nil, "%d", i)); err != nil || pos.Seq != uint64(i) {
		t.Fatalf("publish %d: %+v, %v", i, pos, err)
	}
}

// WaitNewEpoch waits until rec, a node subscribed to ch all along, has
// delivered a publication in pos's epoch, by start+within at the latest;
// it fails unless that publication is seq 1 with data (data "": not
// checked). It returns the time since start.
func WaitNewEpoch(t testing.TB, rec *Recorder, ch string, pos brokers.Position, data string, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	for {
		got := rec.Publications(ch)
		if n := len(got); n > 0 && got[n-1].Epoch == pos.Epoch {
			if got[n-1].Seq != 1 || (data != "" && string(got[n-1].Data) != data) {
				t.Fatalf("subscribed node got %+v, want seq 1 %s", got[n-1], data)
			}
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("subscribed node's publications after %v: %+v; want one in epoch %q", within, got, pos.Epoch)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckNewEpoch fails unless pos, the first publication on ch after its
// state expired, is seq 1 in an epoch other than old's, and a resume
// from old's seq on h answers an epoch other than old's (the client
// resyncs).
func CheckNewEpoch(t testing.TB, h brokers.History, ch string, old, pos brokers.Position) {
	t.Helper()
	if pos.Seq != 1 || pos.Epoch == old.Epoch || pos.Epoch == "" {
		t.Fatalf("first message after the channel's state expired at %+v, want seq 1 in an epoch other than %q", pos, old.Epoch)
	}
	_, latest, err := h.Since(t.Context(), ch, old.Seq, 10)
	if err != nil {
		t.Fatal(err)
	}
	if latest.Epoch == old.Epoch {
		t.Fatalf("Since after the channel's state expired answers the old epoch %q", old.Epoch)
	}
}

// StallingRecorder is a Recorder whose handler blocks on the first
// publication it gets until Release (a stalled node): Stalled is closed
// once that publication arrived.
type StallingRecorder struct {
	*Recorder
	once             sync.Once
	stalled, release chan struct{}
}

// NewStallingRecorder is a StallingRecorder not yet stalled.
func NewStallingRecorder() *StallingRecorder {
	return &StallingRecorder{Recorder: NewRecorder(), stalled: make(chan struct{}), release: make(chan struct{})}
}

// HandlePublication blocks on the first publication until Release, then
// records it.
func (r *StallingRecorder) HandlePublication(ch string, p brokers.Publication) {
	r.once.Do(func() {
		close(r.stalled)
		<-r.release
	})
	r.Recorder.HandlePublication(ch, p)
}

// Stalled is closed once the first publication holds the handler.
func (r *StallingRecorder) Stalled() <-chan struct{} { return r.stalled }

// Release lets the held publication and the ones after it through; call
// it once.
func (r *StallingRecorder) Release() { close(r.release) }

// StalledRefill starts b on a StallingRecorder, subscribes it to ch and
// publishes n messages while its handler holds the first one; with a
// small delivery queue the node drops what does not fit. Once released,
// b must deliver all n, in order, once (its own repair: a slow-consumer
// report, a sweep).
func StalledRefill(t testing.TB, b brokers.Broker, ch string, n int) {
	t.Helper()
	h := NewStallingRecorder()
	StartedOn(t, b, h)
	if err := b.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := b.Publish(t.Context(), ch, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // the node drops what does not fit
	h.Release()
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
