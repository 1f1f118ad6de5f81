package brokertest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers"
)

// Features declares what a backend promises. The suite checks that the
// declared optional interfaces are exactly the implemented ones, and runs
// the checks of every declared feature.
type Features struct {
	// History: the backend implements brokers.History, and Publish gives
	// each channel 1-based, gap-free seqs (+1 per message).
	History bool
	// HistorySize is the number of publications per channel the backend
	// was configured to keep (exactly: the suite checks that the latest
	// HistorySize are kept and no more). Required with History. Keep it
	// small (say 100): the suite publishes HistorySize+5 messages.
	HistorySize int
	// Epoch: positions carry a non-empty epoch that stays the same while
	// the broker runs (history survives as one epoch).
	Epoch bool
	// Presence: the backend implements brokers.Presence.
	Presence bool
	// Pinger: the backend implements brokers.Pinger.
	Pinger bool
	// Snapshots: the backend implements brokers.Snapshots.
	Snapshots bool
	// ExpiryWithin is the backend's documented bound (docs/brokers.md) on
	// how long after its TTL a member that is not refreshed leaves; the
	// suite's expiry check holds it to that plus expirySlack. Zero: the
	// backend promises none, and only Suite.Wait bounds the wait.
	ExpiryWithin time.Duration
}

// Suite is the conformance suite. New is required; the other fields are
// optional.
type Suite struct {
	Features Features
	// New returns a fresh broker that is not started. The suite starts
	// and closes it. Register the cleanup of anything else New starts
	// (servers, directories) with t.Cleanup.
	New func(t *testing.T) brokers.Broker
	// NewPair returns two brokers, not started, that are two nodes on one
	// backend (say two clients of one redis-server). When set, the
	// cross-node checks run too.
	NewPair func(t *testing.T) (a, b brokers.Broker)
	// Wait bounds every wait for something that must happen. Default 5s.
	Wait time.Duration
	// PresenceTTL is the TTL used by the presence checks. Default 300ms.
	PresenceTTL time.Duration
	// Settle is how long to wait, after a later publication on another
	// channel was delivered, before concluding that a publication will not
	// be delivered. Default 0: a backend whose channels are not ordered
	// with each other on one node sets it.
	Settle time.Duration
	// LeakOptions are passed to goleak for the goroutine leak checks, for
	// goroutines that New starts on purpose and that outlive Close.
	LeakOptions []goleak.Option
}

// Run runs the suite on the brokers newBroker returns, with the checks of f
// and default settings: Suite{Features: f, New: newBroker}.Run(t).
func Run(t *testing.T, f Features, newBroker func(t *testing.T) brokers.Broker) {
	t.Helper()
	Suite{Features: f, New: newBroker}.Run(t)
}

// Run runs every check as a subtest of t. The subtests run one after the
// other (the goroutine leak checks need that); do not run Run in parallel
// with tests that start goroutines.
func (s Suite) Run(t *testing.T) {
	t.Helper()
	if s.New == nil {
		t.Fatal("brokertest: Suite.New is nil")
	}
	if s.Features.History && s.Features.HistorySize < 2 {
		t.Fatalf("brokertest: Features.History needs HistorySize >= 2, got %d", s.Features.HistorySize)
	}
	if s.Wait <= 0 {
		s.Wait = 5 * time.Second
	}
	if s.PresenceTTL <= 0 {
		s.PresenceTTL = 300 * time.Millisecond
	}
	var nonce [3]byte
	_, _ = rand.Read(nonce[:])
	h := &harness{Suite: s, nonce: hex.EncodeToString(nonce[:])}

	t.Run("Features", h.testFeatures)
	t.Run("Lifecycle", func(t *testing.T) {
		t.Run("BeforeStart", h.testBeforeStart)
		t.Run("Close", h.testClose)
	})
	t.Run("PubSub", func(t *testing.T) {
		t.Run("Delivery", h.testDelivery)
		t.Run("OnlySubscribed", h.testOnlySubscribed)
		t.Run("Unsubscribe", h.testUnsubscribe)
		t.Run("ChannelsIndependent", h.testChannelsIndependent)
		t.Run("ConcurrentPublishers", h.testConcurrentPublishers)
	})
	if s.Features.History {
		t.Run("History", func(t *testing.T) {
			t.Run("SeqContiguous", h.testSeqContiguous)
			t.Run("Since", h.testSince)
			t.Run("Limit", h.testLimit)
			t.Run("NeverSeen", h.testNeverSeen)
			t.Run("Truncation", h.testTruncation)
			t.Run("SubscribeThenSince", h.testSubscribeThenSince)
		})
	}
	if s.Features.Snapshots {
		t.Run("Snapshots", func(t *testing.T) {
			t.Run("Rules", h.testSnapshotRules)
			t.Run("Concurrent", h.testSnapshotConcurrent)
		})
	}
	if s.Features.Presence {
		t.Run("Presence", func(t *testing.T) {
			t.Run("JoinLeave", h.testJoinLeave)
			t.Run("OnlySubscribed", h.testPresenceOnlySubscribed)
			t.Run("Expiry", h.testExpiry)
			t.Run("Refresh", h.testRefresh)
		})
	}
	if s.NewPair != nil {
		t.Run("CrossNode", func(t *testing.T) {
			t.Run("Delivery", h.testPairDelivery)
			t.Run("ConcurrentPublishers", h.testPairConcurrent)
			t.Run("Unsubscribe", h.testPairUnsubscribe)
			if s.Features.History {
				t.Run("History", h.testPairHistory)
			}
			if s.Features.Presence {
				t.Run("Presence", h.testPairPresence)
			}
		})
	}
}

// harness holds the suite's settings and helpers shared by the checks.
type harness struct {
	Suite
	nonce string        // per Run, so channels never clash with earlier runs on a shared server
	seq   atomic.Uint64 // per channel name
}

// node is one started broker and the Recorder it delivers to.
type node struct {
	b   brokers.Broker
	rec *Recorder
}

// start starts the brokers with a Recorder each and registers a cleanup
// that closes them, then checks the Recorders and that no goroutine started
// since is left.
func (h *harness) start(t *testing.T, bs ...brokers.Broker) []*node {
	t.Helper()
	leakOpts := append([]goleak.Option{goleak.IgnoreCurrent()}, h.LeakOptions...)
	nodes := make([]*node, len(bs))
	t.Cleanup(func() {
		for _, n := range nodes {
			if n == nil {
				continue
			}
			if err := n.b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			n.rec.MarkClosed()
			if err := n.rec.Err(); err != nil {
				t.Error(err)
			}
		}
		goleak.VerifyNone(t, leakOpts...)
	})
	for i, b := range bs {
		rec := NewRecorder()
		if err := b.Start(t.Context(), rec); err != nil {
			t.Fatalf("Start: %v", err)
		}
		nodes[i] = &node{b: b, rec: rec}
	}
	return nodes
}

// startOne makes and starts one broker.
func (h *harness) startOne(t *testing.T) *node {
	t.Helper()
	return h.start(t, h.New(t))[0]
}

// startPair makes and starts two nodes on one backend.
func (h *harness) startPair(t *testing.T) (a, b *node) {
	t.Helper()
	x, y := h.NewPair(t)
	ns := h.start(t, x, y)
	return ns[0], ns[1]
}

// channel returns a channel name unique to this call, derived from the test
// name so that a failure names a recognizable channel.
func (h *harness) channel(t *testing.T, name string) string {
	// Channel names allow A-Z a-z 0-9 _ - : . = @ (see the protocol).
	base := strings.Map(func(r rune) rune {
		switch {
		case r == '/':
			return ':'
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', strings.ContainsRune("_-:.=@", r):
			return r
		}
		return '_'
	}, t.Name())
	if len(base) > 180 {
		base = base[len(base)-180:]
	}
	return fmt.Sprintf("%s:%s.%s.%d", base, name, h.nonce, h.seq.Add(1))
}

// fence publishes on a fresh channel subscribed on to, from `from`, and
// waits until to delivered it. Publications published earlier and not
// delivered to `to` by then are taken as never delivered (after Settle).
func (h *harness) fence(t *testing.T, from, to *node) {
	t.Helper()
	ch := h.channel(t, "fence")
	subscribe(t, to, ch)
	publish(t, from, ch, []byte("fence"))
	to.rec.WaitPublications(t, ch, 1, h.Wait)
	if h.Settle > 0 {
		time.Sleep(h.Settle)
	}
	unsubscribe(t, to, ch)
}

// Helpers that fail the test on error. They run on the test goroutine.

func subscribe(t *testing.T, n *node, ch string) {
	t.Helper()
	if err := n.b.Subscribe(t.Context(), ch); err != nil {
		t.Fatalf("Subscribe(%s): %v", ch, err)
	}
}

func unsubscribe(t *testing.T, n *node, ch string) {
	t.Helper()
	if err := n.b.Unsubscribe(t.Context(), ch); err != nil {
		t.Fatalf("Unsubscribe(%s): %v", ch, err)
	}
}

func publish(t *testing.T, n *node, ch string, data []byte) brokers.Position {
	t.Helper()
	pos, err := n.b.Publish(t.Context(), ch, data)
	if err != nil {
		t.Fatalf("Publish(%s): %v", ch, err)
	}
	return pos
}

func history(t *testing.T, n *node) brokers.History {
	t.Helper()
	hs, ok := n.b.(brokers.History)
	if !ok {
		t.Fatalf("%T does not implement brokers.History", n.b)
	}
	return hs
}

func since(t *testing.T, n *node, ch string, after uint64, limit int) ([]brokers.Publication, brokers.Position) {
	t.Helper()
	pubs, pos, err := history(t, n).Since(t.Context(), ch, after, limit)
	if err != nil {
		t.Fatalf("Since(%s, %d, %d): %v", ch, after, limit, err)
	}
	return pubs, pos
}

func presence(t *testing.T, n *node) brokers.Presence {
	t.Helper()
	p, ok := n.b.(brokers.Presence)
	if !ok {
		t.Fatalf("%T does not implement brokers.Presence", n.b)
	}
	return p
}

// checkEpoch checks that got is the epoch of want when epochs are declared.
func (h *harness) checkEpoch(t *testing.T, what string, got, want string) {
	t.Helper()
	if !h.Features.Epoch {
		return
	}
	if want == "" {
		t.Errorf("%s: empty epoch", what)
	} else if got != want {
		t.Errorf("%s: epoch %q, want %q (the epoch must stay the same while the broker runs)", what, got, want)
	}
}

// checkSeqs checks that pubs have seqs first, first+1, ... and the data
// want(seq) gives, and the epoch when declared.
func (h *harness) checkSeqs(t *testing.T, what string, pubs []brokers.Publication, first uint64, epoch string, want func(seq uint64) string) {
	t.Helper()
	for i, p := range pubs {
		seq := first + uint64(i)
		if p.Seq != seq {
			t.Fatalf("%s: publication %d has seq %d, want %d (seqs around it: %v)", what, i, p.Seq, seq, seqsOf(pubs[max(0, i-5):min(len(pubs), i+5)]))
		}
		if w := want(seq); string(p.Data) != w {
			t.Fatalf("%s: seq %d has data %q, want %q", what, seq, p.Data, w)
		}
		h.checkEpoch(t, fmt.Sprintf("%s: seq %d", what, seq), p.Epoch, epoch)
	}
}

func seqsOf(pubs []brokers.Publication) []uint64 {
	s := make([]uint64, len(pubs))
	for i, p := range pubs {
		s[i] = p.Seq
	}
	return s
}

func isClosed(err error) bool { return errors.Is(err, brokers.ErrClosed) }
