package brokertest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
)

func pub(seq uint64, epoch, data string) brokers.Publication {
	return brokers.Publication{Seq: seq, Epoch: epoch, Data: []byte(data)}
}

func TestRecorderRecordsAndCopies(t *testing.T) {
	rec := brokertest.NewRecorder()
	buf := []byte("one")
	rec.HandlePublication("a", brokers.Publication{Seq: 1, Epoch: "e", Data: buf})
	copy(buf, "XXX") // the handler contract: Data is valid only during the call
	rec.HandlePresence("a", brokers.Join, brokers.Member{User: "u", Client: "c"})
	rec.HandlePublication("b", pub(1, "e", "b1"))
	rec.HandlePublication("a", pub(2, "e", "two"))

	ps := rec.Publications("a")
	if len(ps) != 2 || string(ps[0].Data) != "one" || string(ps[1].Data) != "two" || ps[1].Seq != 2 {
		t.Errorf("Publications(a) = %+v", ps)
	}
	if pr := rec.Presence("a"); len(pr) != 1 || pr[0].Presence != brokers.Join || pr[0].Member.Client != "c" {
		t.Errorf("Presence(a) = %+v", pr)
	}
	if n := len(rec.Events()); n != 4 {
		t.Errorf("%d events, want 4", n)
	}
	if err := rec.Err(); err != nil {
		t.Errorf("Err = %v", err)
	}
}

func TestRecorderViolations(t *testing.T) {
	for _, c := range []struct {
		name string
		do   func(*brokertest.Recorder)
		want string
	}{
		{"duplicate", func(r *brokertest.Recorder) {
			r.HandlePublication("a", pub(1, "e", "x"))
			r.HandlePublication("a", pub(1, "e", "x"))
		}, "out of order or duplicate"},
		{"backwards", func(r *brokertest.Recorder) {
			r.HandlePublication("a", pub(5, "e", "x"))
			r.HandlePublication("a", pub(3, "e", "x"))
		}, "out of order"},
		{"after close", func(r *brokertest.Recorder) {
			r.MarkClosed()
			r.HandlePresence("a", brokers.Leave, brokers.Member{})
		}, "after the broker was closed"},
		{"bad presence type", func(r *brokertest.Recorder) {
			r.HandlePresence("a", 7, brokers.Member{})
		}, "neither Join nor Leave"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := brokertest.NewRecorder()
			c.do(rec)
			if err := rec.Err(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Err = %v, want one containing %q", err, c.want)
			}
		})
	}
	// Not violations: a gap (after resubscribing), a new epoch, another
	// channel, publications without seq.
	rec := brokertest.NewRecorder()
	rec.HandlePublication("a", pub(1, "e", "x"))
	rec.HandlePublication("a", pub(4, "e", "x"))
	rec.HandlePublication("a", pub(1, "f", "x"))
	rec.HandlePublication("b", pub(1, "e", "x"))
	rec.HandlePublication("c", pub(0, "", "x"))
	rec.HandlePublication("c", pub(0, "", "x"))
	if err := rec.Err(); err != nil {
		t.Errorf("Err = %v, want nil", err)
	}
}

// fakeTB records Fatalf and ends the goroutine, as testing.T does.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	failed string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failed = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) run(fn func()) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func TestRecorderWait(t *testing.T) {
	rec := brokertest.NewRecorder()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := uint64(1); i <= 3; i++ {
			rec.HandlePublication("a", pub(i, "e", fmt.Sprint(i)))
		}
		rec.HandlePresence("a", brokers.Leave, brokers.Member{User: "u", Client: "c"})
	})
	if ps := rec.WaitPublications(t, "a", 3, 5*time.Second); len(ps) < 3 {
		t.Errorf("WaitPublications returned %d", len(ps))
	}
	rec.WaitPresence(t, "a", brokers.Leave, brokers.Member{User: "u", Client: "c"}, 5*time.Second)
	wg.Wait()

	ft := &fakeTB{}
	msg := ft.run(func() { rec.WaitPublications(ft, "a", 4, 20*time.Millisecond) })
	if !strings.Contains(msg, "timed out") || !strings.Contains(msg, "4 publications on a") {
		t.Errorf("WaitPublications for a 4th publication failed with %q, want a timeout naming it", msg)
	}
	ft = &fakeTB{}
	msg = ft.run(func() { brokertest.Eventually(ft, 20*time.Millisecond, "never", func() bool { return false }) })
	if !strings.Contains(msg, "timed out") || !strings.Contains(msg, "never") {
		t.Errorf("Eventually failed with %q, want a timeout naming it", msg)
	}
}
