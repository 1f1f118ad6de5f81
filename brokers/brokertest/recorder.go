package brokertest

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
)

// Event is one Handler call seen by a Recorder.
type Event struct {
	Channel string
	// Presence is 0 for a publication, else brokers.Join or brokers.Leave.
	Presence brokers.PresenceEventType
	// Pub is the publication (Presence == 0); Pub.Data is the Recorder's
	// own copy.
	Pub brokers.Publication
	// Member is the member that joined or left (Presence != 0).
	Member brokers.Member
}

// Recorder is a brokers.Handler that records every call and checks the
// Handler contract as it goes: calls for one channel must not overlap, a
// channel's seqs must increase within an epoch (gaps are allowed: a node may
// unsubscribe and subscribe again), and nothing may arrive after MarkClosed.
// Violations are kept and returned by Err. All methods are safe for
// concurrent use; the Wait methods must be called from the test goroutine
// (they call t.Fatalf).
type Recorder struct {
	mu         sync.Mutex
	events     []Event
	changed    chan struct{} // closed and replaced on every event
	inflight   map[string]int
	last       map[string]brokers.Position
	closed     bool
	violations []string
}

var _ brokers.Handler = (*Recorder)(nil)

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{
		changed:  make(chan struct{}),
		inflight: make(map[string]int),
		last:     make(map[string]brokers.Position),
	}
}

// HandlePublication implements brokers.Handler. It copies p.Data.
func (r *Recorder) HandlePublication(ch string, p brokers.Publication) {
	r.enter(ch)
	p.Data = append([]byte(nil), p.Data...) // valid only during the call
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.Seq != 0 {
		if last, ok := r.last[ch]; ok && last.Epoch == p.Epoch && p.Seq <= last.Seq {
			r.violatef("%s: publication seq %d after seq %d (epoch %q): out of order or duplicate", ch, p.Seq, last.Seq, p.Epoch)
		}
		r.last[ch] = brokers.Position{Seq: p.Seq, Epoch: p.Epoch}
	}
	r.appendLocked(Event{Channel: ch, Pub: p})
}

// HandlePresence implements brokers.Handler.
func (r *Recorder) HandlePresence(ch string, t brokers.PresenceEventType, m brokers.Member) {
	r.enter(ch)
	r.mu.Lock()
	defer r.mu.Unlock()
	if t != brokers.Join && t != brokers.Leave {
		r.violatef("%s: presence event type %d is neither Join nor Leave", ch, t)
	}
	r.appendLocked(Event{Channel: ch, Presence: t, Member: m})
}

// enter marks a call for ch in flight and gives an overlapping call of the
// same channel a chance to show up before the call is recorded.
func (r *Recorder) enter(ch string) {
	r.mu.Lock()
	r.inflight[ch]++
	if r.inflight[ch] > 1 {
		r.violatef("%s: overlapping handler calls for one channel", ch)
	}
	if r.closed {
		r.violatef("%s: handler called after the broker was closed", ch)
	}
	r.mu.Unlock()
	runtime.Gosched()
}

func (r *Recorder) appendLocked(e Event) {
	r.inflight[e.Channel]--
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Recorder) violatef(format string, args ...any) {
	if len(r.violations) < 20 {
		r.violations = append(r.violations, fmt.Sprintf(format, args...))
	}
}

// MarkClosed tells the Recorder that the broker's Close returned: any later
// call is a violation.
func (r *Recorder) MarkClosed() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

// Err returns the contract violations seen so far, or nil.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.violations) == 0 {
		return nil
	}
	errs := make([]error, len(r.violations))
	for i, v := range r.violations {
		errs[i] = errors.New(v)
	}
	return fmt.Errorf("brokertest: handler contract violated: %w", errors.Join(errs...))
}

// Events returns every event so far, in arrival order. The slice shares
// the Recorder's storage and must not be modified.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[:len(r.events):len(r.events)]
}

// Publications returns the publications delivered for ch so far.
func (r *Recorder) Publications(ch string) []brokers.Publication {
	return publications(r.Events(), ch)
}

// Presence returns the presence events delivered for ch so far.
func (r *Recorder) Presence(ch string) []Event {
	return presenceEvents(r.Events(), ch)
}

// WaitFor waits until cond, given the events so far, returns true, and
// returns those events. It fails the test after timeout, naming what.
// cond runs without the Recorder's lock and must not modify the slice.
func (r *Recorder) WaitFor(t testing.TB, timeout time.Duration, what string, cond func([]Event) bool) []Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		evs := r.events[:len(r.events):len(r.events)]
		changed := r.changed
		r.mu.Unlock()
		if cond(evs) {
			return evs
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("brokertest: timed out after %v waiting for %s; %d events recorded", timeout, what, len(evs))
		}
		timer := time.NewTimer(left)
		select {
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// WaitPublications waits until at least n publications of ch arrived and
// returns all of them.
func (r *Recorder) WaitPublications(t testing.TB, ch string, n int, timeout time.Duration) []brokers.Publication {
	t.Helper()
	evs := r.WaitFor(t, timeout, fmt.Sprintf("%d publications on %s", n, ch), func(evs []Event) bool {
		return countPublications(evs, ch) >= n
	})
	return publications(evs, ch)
}

// WaitPresence waits for a presence event of type typ for m on ch and
// returns the presence events of ch so far.
func (r *Recorder) WaitPresence(t testing.TB, ch string, typ brokers.PresenceEventType, m brokers.Member, timeout time.Duration) []Event {
	t.Helper()
	evs := r.WaitFor(t, timeout, fmt.Sprintf("%s of %+v on %s", typeName(typ), m, ch), func(evs []Event) bool {
		for _, e := range evs {
			if e.Channel == ch && e.Presence == typ && e.Member == m {
				return true
			}
		}
		return false
	})
	return presenceEvents(evs, ch)
}

// Eventually polls cond every few milliseconds until it returns true and
// fails the test after timeout, naming what.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; !cond(); wait = min(2*wait, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("brokertest: timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(wait)
	}
}

func publications(evs []Event, ch string) []brokers.Publication {
	var ps []brokers.Publication
	for _, e := range evs {
		if e.Channel == ch && e.Presence == 0 {
			ps = append(ps, e.Pub)
		}
	}
	return ps
}

func countPublications(evs []Event, ch string) int {
	n := 0
	for _, e := range evs {
		if e.Channel == ch && e.Presence == 0 {
			n++
		}
	}
	return n
}

func presenceEvents(evs []Event, ch string) []Event {
	var ps []Event
	for _, e := range evs {
		if e.Channel == ch && e.Presence != 0 {
			ps = append(ps, e)
		}
	}
	return ps
}

func typeName(t brokers.PresenceEventType) string {
	switch t {
	case brokers.Join:
		return "join"
	case brokers.Leave:
		return "leave"
	}
	return fmt.Sprintf("presence(%d)", t)
}
