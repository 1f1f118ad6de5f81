package brokertest_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/memory"
)

// The suite must catch broken backends. Each mutant below breaks one
// guarantee of a memory broker; TestMutantsFail runs the subtest that checks
// that guarantee against the mutant, in a child process, and expects it to
// fail.

// mutantEnv names the mutant TestMutantSuite runs against.
const mutantEnv = "BROKERTEST_MUTANT"

var mutants = []struct {
	name    string
	subtest string // the suite's subtest that must fail
}{
	{"drop-every-7th", "PubSub/ConcurrentPublishers"},
	{"deliver-twice", "PubSub/Delivery"},
	{"unsubscribe-noop", "PubSub/Unsubscribe"},
	{"since-off-by-one", "History/Since"},
	{"limit-ignored", "History/Limit"},
	{"history-too-long", "History/Truncation"},
	{"subscribe-late", "History/SubscribeThenSince"},
	{"rejoin-announces", "Presence/JoinLeave"},
	{"never-expires", "Presence/Expiry"},
	{"expires-late", "Presence/Expiry"},
	{"refresh-noop", "Presence/Refresh"},
	{"close-leaks", "Lifecycle/Close"},
	{"no-pinger", "Features"},
}

func TestMutantsFail(t *testing.T) {
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			parts := append([]string{"TestMutantSuite"}, strings.Split(m.subtest, "/")...)
			for i, p := range parts {
				parts[i] = "^" + p + "$"
			}
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+strings.Join(parts, "/"), "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), mutantEnv+"="+m.name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a broker with mutation %q; %s should have failed:\n%s", m.name, m.subtest, out)
			}
			if want := "--- FAIL: TestMutantSuite/" + m.subtest + " "; !strings.Contains(string(out), want) {
				t.Fatalf("mutation %q: %q not in the output:\n%s", m.name, want, out)
			}
		})
	}
}

// TestMutantSuite runs the suite on the mutant named by the environment, or,
// when none is named, on the unmutated wrapper, which must pass.
func TestMutantSuite(t *testing.T) {
	kind := os.Getenv(mutantEnv)
	f := busFeatures
	f.Snapshots = true // the wrapped memory broker keeps them
	if kind == "no-pinger" {
		f.Pinger = true // declared, but the broker below does not implement it
	}
	brokertest.Suite{
		Features: f,
		New: func(t *testing.T) brokers.Broker {
			size := historySize
			if kind == "history-too-long" {
				size = 2 * historySize
			}
			m := &mutant{Broker: memory.New(memory.Config{HistorySize: size}), kind: kind}
			if kind == "no-pinger" {
				return noPinger{m}
			}
			return m
		},
		Wait: time.Second,
	}.Run(t)
}

// mutant is a memory broker with one mutation.
type mutant struct {
	*memory.Broker
	kind string
	wg   sync.WaitGroup
}

// noPinger hides Ping (and nothing else of what mutant implements).
type noPinger struct{ *mutant }

func (noPinger) Ping() {}

func (m *mutant) Start(ctx context.Context, h brokers.Handler) error {
	return m.Broker.Start(ctx, &mutantHandler{Handler: h, kind: m.kind})
}

func (m *mutant) Close() error {
	if m.kind == "close-leaks" {
		go func() { select {} }() // a goroutine left behind
		return nil
	}
	err := m.Broker.Close()
	m.wg.Wait()
	return err
}

func (m *mutant) Subscribe(ctx context.Context, ch string) error {
	if m.kind == "subscribe-late" {
		m.wg.Go(func() {
			time.Sleep(5 * time.Millisecond)
			_ = m.Broker.Subscribe(context.Background(), ch)
		})
		return nil
	}
	return m.Broker.Subscribe(ctx, ch)
}

func (m *mutant) Unsubscribe(ctx context.Context, ch string) error {
	if m.kind == "unsubscribe-noop" {
		return nil
	}
	return m.Broker.Unsubscribe(ctx, ch)
}

func (m *mutant) Since(ctx context.Context, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position, error) {
	switch m.kind {
	case "since-off-by-one":
		since++
	case "limit-ignored":
		limit = 1 << 20
	}
	return m.Broker.Since(ctx, ch, since, limit)
}

func (m *mutant) Join(ctx context.Context, ch string, mem brokers.Member, ttl time.Duration) error {
	switch m.kind {
	case "never-expires":
		ttl = time.Hour
	case "expires-late":
		ttl *= 2
	case "rejoin-announces":
		ms, err := m.Broker.Members(ctx, ch)
		if err != nil {
			return err
		}
		for _, x := range ms {
			if x.Client == mem.Client {
				if err := m.Broker.Leave(ctx, ch, mem); err != nil {
					return err
				}
			}
		}
	}
	return m.Broker.Join(ctx, ch, mem, ttl)
}

func (m *mutant) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if m.kind == "refresh-noop" {
		return nil
	}
	return m.Broker.Refresh(ctx, ch, ms, ttl)
}

// mutantHandler mutates deliveries.
type mutantHandler struct {
	brokers.Handler
	kind string
}

func (h *mutantHandler) HandlePublication(ch string, p brokers.Publication) {
	switch h.kind {
	case "drop-every-7th":
		if p.Seq%7 == 0 {
			return
		}
	case "deliver-twice":
		h.Handler.HandlePublication(ch, p)
	}
	h.Handler.HandlePublication(ch, p)
}
