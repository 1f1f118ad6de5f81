package brokertest

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
)

// expiryTolerance absorbs clock granularity when checking that a member did
// not expire before its TTL.
const expiryTolerance = 20 * time.Millisecond

// expirySlack is what the expiry check allows past TTL + ExpiryWithin for
// the join's round trip and the leave's way to the handler on a loaded
// machine.
const expirySlack = 100 * time.Millisecond

func member(i int) brokers.Member {
	return brokers.Member{User: fmt.Sprintf("user%d", i), Client: fmt.Sprintf("client%d", i)}
}

func join(t *testing.T, n *node, ch string, m brokers.Member, ttl time.Duration) {
	t.Helper()
	if err := presence(t, n).Join(t.Context(), ch, m, ttl); err != nil {
		t.Fatalf("Join(%s, %+v): %v", ch, m, err)
	}
}

func leave(t *testing.T, n *node, ch string, m brokers.Member) {
	t.Helper()
	if err := presence(t, n).Leave(t.Context(), ch, m); err != nil {
		t.Fatalf("Leave(%s, %+v): %v", ch, m, err)
	}
}

// checkMembers checks that n lists exactly want on ch, in any order.
func checkMembers(t *testing.T, n *node, ch string, want ...brokers.Member) {
	t.Helper()
	got, err := presence(t, n).Members(t.Context(), ch)
	if err != nil {
		t.Fatalf("Members(%s): %v", ch, err)
	}
	byClient := func(x, y brokers.Member) int {
		return cmp.Or(strings.Compare(x.Client, y.Client), strings.Compare(x.User, y.User))
	}
	got = slices.Clone(got)
	slices.SortFunc(got, byClient)
	want = slices.Clone(want)
	slices.SortFunc(want, byClient)
	if !slices.Equal(got, want) {
		t.Fatalf("Members(%s) = %+v, want %+v", ch, got, want)
	}
}

// checkPresence checks that the presence events of ch are exactly want.
func checkPresence(t *testing.T, got []Event, want ...Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("presence events %s, want %s", describe(got), describe(want))
	}
	for i := range got {
		if got[i].Presence != want[i].Presence || got[i].Member != want[i].Member {
			t.Fatalf("presence events %s, want %s", describe(got), describe(want))
		}
	}
}

func describe(evs []Event) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, e := range evs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s/%s", typeName(e.Presence), e.Member.User, e.Member.Client)
	}
	b.WriteByte(']')
	return b.String()
}

func ev(t brokers.PresenceEventType, m brokers.Member) Event {
	return Event{Presence: t, Member: m}
}

// testJoinLeave: Join and Leave announce once each; a second Join of a
// listed member and a Leave of an absent one announce nothing; Members
// follows.
func (h *harness) testJoinLeave(t *testing.T) {
	n := h.startOne(t)
	ch := h.channel(t, "a")
	m1, m2 := member(1), member(2)
	subscribe(t, n, ch)
	checkMembers(t, n, ch)

	join(t, n, ch, m1, time.Minute)
	n.rec.WaitPresence(t, ch, brokers.Join, m1, h.Wait)
	checkMembers(t, n, ch, m1)
	join(t, n, ch, m2, time.Minute)
	join(t, n, ch, m1, time.Minute) // already listed: refresh only
	n.rec.WaitPresence(t, ch, brokers.Join, m2, h.Wait)
	checkMembers(t, n, ch, m1, m2)

	leave(t, n, ch, m1)
	leave(t, n, ch, member(3)) // not listed: nothing to announce
	n.rec.WaitPresence(t, ch, brokers.Leave, m1, h.Wait)
	checkMembers(t, n, ch, m2)
	leave(t, n, ch, m1) // no longer listed
	h.fence(t, n, n)
	checkPresence(t, n.rec.Presence(ch), ev(brokers.Join, m1), ev(brokers.Join, m2), ev(brokers.Leave, m1))
}

// testPresenceOnlySubscribed: presence events reach only nodes that
// subscribed the channel, while Members lists members regardless.
func (h *harness) testPresenceOnlySubscribed(t *testing.T) {
	n := h.startOne(t)
	ch := h.channel(t, "a")
	m1, m2 := member(1), member(2)
	join(t, n, ch, m1, time.Minute)
	h.fence(t, n, n)
	if evs := n.rec.Presence(ch); len(evs) != 0 {
		t.Fatalf("unsubscribed channel delivered presence events %s", describe(evs))
	}
	checkMembers(t, n, ch, m1)

	subscribe(t, n, ch)
	join(t, n, ch, m2, time.Minute)
	leave(t, n, ch, m1)
	n.rec.WaitPresence(t, ch, brokers.Leave, m1, h.Wait)
	unsubscribe(t, n, ch)
	leave(t, n, ch, m2)
	h.fence(t, n, n)
	checkPresence(t, n.rec.Presence(ch), ev(brokers.Join, m2), ev(brokers.Leave, m1))
	checkMembers(t, n, ch)
}

// testExpiry: a member not refreshed expires after its TTL (not before,
// and not later than the backend's ExpiryWithin past it), which is
// announced as a Leave; others stay.
func (h *harness) testExpiry(t *testing.T) {
	n := h.startOne(t)
	ch := h.channel(t, "a")
	ttl := h.PresenceTTL
	short, long := member(1), member(2)
	subscribe(t, n, ch)
	start := time.Now()
	join(t, n, ch, short, ttl)
	join(t, n, ch, long, time.Hour)
	checkMembers(t, n, ch, short, long)
	n.rec.WaitPresence(t, ch, brokers.Leave, short, ttl+h.Wait)
	elapsed := time.Since(start)
	if elapsed < ttl-expiryTolerance {
		t.Errorf("member with TTL %v expired after %v", ttl, elapsed)
	}
	if w := h.Features.ExpiryWithin; w > 0 && elapsed > ttl+w+expirySlack {
		t.Errorf("member with TTL %v left %v after its join; the backend promises within the TTL plus %v (+%v slack)", ttl, elapsed, w, expirySlack)
	}
	checkMembers(t, n, ch, long)
	leave(t, n, ch, long)
	n.rec.WaitPresence(t, ch, brokers.Leave, long, h.Wait)
	checkPresence(t, n.rec.Presence(ch), ev(brokers.Join, short), ev(brokers.Join, long), ev(brokers.Leave, short), ev(brokers.Leave, long))
}

// testRefresh: Refresh keeps a member alive past its TTL and announces
// nothing; once refreshing stops, it expires.
func (h *harness) testRefresh(t *testing.T) {
	n := h.startOne(t)
	ch := h.channel(t, "a")
	ttl := h.PresenceTTL
	kept, dropped := member(1), member(2)
	subscribe(t, n, ch)
	join(t, n, ch, kept, ttl)
	join(t, n, ch, dropped, ttl) // joined after kept: expires after kept would

	p := presence(t, n)
	stop := make(chan struct{})
	errs := make(chan error, 1)
	var lastRefresh time.Time
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(ttl / 6)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := p.Refresh(t.Context(), ch, []brokers.Member{kept}, ttl); err != nil {
				errs <- err
				return
			}
			mu.Lock()
			lastRefresh = time.Now()
			mu.Unlock()
		}
	})
	stopRefresh := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopRefresh()

	n.rec.WaitPresence(t, ch, brokers.Leave, dropped, ttl+h.Wait)
	// kept joined before dropped with the same TTL: had Refresh not
	// worked, it would be gone now.
	checkMembers(t, n, ch, kept)
	stopRefresh()
	select {
	case err := <-errs:
		t.Fatalf("Refresh: %v", err)
	default:
	}
	checkPresence(t, n.rec.Presence(ch), ev(brokers.Join, kept), ev(brokers.Join, dropped), ev(brokers.Leave, dropped))

	n.rec.WaitPresence(t, ch, brokers.Leave, kept, ttl+h.Wait)
	mu.Lock()
	since := time.Since(lastRefresh)
	mu.Unlock()
	if since < ttl-expiryTolerance {
		t.Errorf("member expired %v after its last refresh, TTL %v", since, ttl)
	}
	checkMembers(t, n, ch)
}
