package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncgate/syncgate/brokers"
)

// Defaults for the zero Config.
const (
	DefaultHistorySize = 1000
	DefaultHistoryTTL  = 10 * time.Minute
)

// Config configures a Broker. The zero value works.
type Config struct {
	// HistorySize is how many publications each channel keeps for Since.
	// Zero or negative means DefaultHistorySize.
	HistorySize int
	// HistoryTTL is how long a publication stays in history. A channel with
	// no publication for this long, no subscription and no presence member
	// is forgotten, so its next publication starts a new epoch at seq 1.
	// Zero or negative means DefaultHistoryTTL.
	HistoryTTL time.Duration
	// Now returns the current time; nil means time.Now. Tests set it to a
	// fake clock. It is called with channel locks held and must be cheap.
	Now func() time.Time
}

const (
	numShards = 64

	// Bounds of the background sweep interval: presence expiry is noticed
	// at most maxSweep late (sooner for short TTLs, see sweepInterval).
	minSweep = 10 * time.Millisecond
	maxSweep = time.Second
)

// Lifecycle states of a Broker.
const (
	stateNew int32 = iota
	stateRunning
	stateClosed
)

// Broker is the in-memory backend. Create it with New.
type Broker struct {
	historySize int
	historyTTL  time.Duration
	now         func() time.Time
	// base is the clock origin: times are stored as offsets from it, which
	// keeps history entries small and uses the monotonic clock.
	base time.Time

	lifeMu sync.Mutex // serializes Start and Close
	state  atomic.Int32
	// handler is written by Start before state becomes stateRunning and
	// only read by code that saw stateRunning.
	handler brokers.Handler
	stop    chan struct{}
	wake    chan struct{} // a shorter presence TTL arrived: recompute the sweep interval
	wg      sync.WaitGroup
	// minPresenceTTL is the shortest presence TTL seen (ns), 0 if none. It
	// only decreases; it makes the sweep frequent enough to expire members
	// soon after their TTL.
	minPresenceTTL atomic.Int64

	shards [numShards]shard

	snapMu sync.Mutex
	snaps  map[string]brokers.Snapshot // latest snapshot per channel
}

type shard struct {
	mu       sync.Mutex
	channels map[string]*channel
	_        [48]byte // keep shards on separate cache lines
}

var (
	_ brokers.Broker   = (*Broker)(nil)
	_ brokers.History  = (*Broker)(nil)
	_ brokers.Presence = (*Broker)(nil)
	_ brokers.Pinger   = (*Broker)(nil)
)

// New returns a Broker configured by cfg. It does nothing until Start.
func New(cfg Config) *Broker {
	b := &Broker{
		historySize: cfg.HistorySize,
		historyTTL:  cfg.HistoryTTL,
		now:         cfg.Now,
		wake:        make(chan struct{}, 1),
	}
	if b.historySize <= 0 {
		b.historySize = DefaultHistorySize
	}
	if b.historyTTL <= 0 {
		b.historyTTL = DefaultHistoryTTL
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.base = b.now()
	for i := range b.shards {
		b.shards[i].channels = make(map[string]*channel)
	}
	return b
}

// Start stores h and starts the background sweeper. It may be called once;
// after Close it fails with brokers.ErrClosed.
func (b *Broker) Start(ctx context.Context, h brokers.Handler) error {
	if h == nil {
		return errors.New("memory: start: nil handler")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: start: %w", err)
	}
	b.lifeMu.Lock()
	defer b.lifeMu.Unlock()
	switch b.state.Load() {
	case stateRunning:
		return errors.New("memory: start: already started")
	case stateClosed:
		return fmt.Errorf("memory: start: %w", brokers.ErrClosed)
	}
	b.handler = h
	b.stop = make(chan struct{})
	b.wg.Go(b.sweeper)
	b.state.Store(stateRunning)
	return nil
}

// Close stops the broker. When it returns, the sweeper has exited, no
// Handler method is running or will run, and all state is released. Closing
// twice, or closing a broker never started, is a no-op.
func (b *Broker) Close() error {
	b.lifeMu.Lock()
	defer b.lifeMu.Unlock()
	if b.state.Swap(stateClosed) != stateRunning {
		return nil
	}
	close(b.stop)
	b.wg.Wait()
	// Every call re-checks the state under its channel lock before it
	// touches the channel or the handler, so taking each lock once waits
	// for the calls still in flight; later ones see stateClosed.
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		for _, c := range s.channels {
			c.mu.Lock()
			c.dropped = true
			c.mu.Unlock()
		}
		clear(s.channels)
		s.mu.Unlock()
	}
	return nil
}

// Ping reports whether the broker is running.
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("memory: ping: %w", err)
	}
	return nil
}

// Publish implements brokers.Broker. It copies data.
func (b *Broker) Publish(ctx context.Context, ch string, data []byte) (brokers.Position, error) {
	if err := b.check(ctx); err != nil {
		return brokers.Position{}, fmt.Errorf("memory: publish %s: %w", ch, err)
	}
	// Copy before taking locks to keep the critical section short. The
	// copy is never written again, so handlers and Since may alias it.
	var stored []byte
	if len(data) > 0 {
		stored = make([]byte, len(data))
		copy(stored, data)
	}
	c, err := b.lockChannel(ch, true)
	if err != nil {
		return brokers.Position{}, fmt.Errorf("memory: publish %s: %w", ch, err)
	}
	defer c.mu.Unlock()
	now := b.clock()
	c.trim(now - b.historyTTL)
	c.seq++
	c.push(entry{at: now, data: stored}, b.historySize)
	c.lastPub = now
	if c.subscribed {
		b.handler.HandlePublication(c.name, brokers.Publication{Seq: c.seq, Epoch: c.epoch, Data: stored})
	}
	return brokers.Position{Seq: c.seq, Epoch: c.epoch}, nil
}

// Subscribe implements brokers.Broker. Subscribing twice is the same as once.
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("memory: subscribe %s: %w", ch, err)
	}
	c, err := b.lockChannel(ch, true)
	if err != nil {
		return fmt.Errorf("memory: subscribe %s: %w", ch, err)
	}
	c.subscribed = true
	c.mu.Unlock()
	return nil
}

// Unsubscribe implements brokers.Broker. Unsubscribing a channel that is not
// subscribed is a no-op. History and presence of ch are kept.
func (b *Broker) Unsubscribe(ctx context.Context, ch string) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("memory: unsubscribe %s: %w", ch, err)
	}
	c, err := b.lockChannel(ch, false)
	if err != nil {
		return fmt.Errorf("memory: unsubscribe %s: %w", ch, err)
	}
	if c == nil {
		return nil
	}
	c.subscribed = false
	c.mu.Unlock()
	return nil
}

// Since implements brokers.History. A channel never seen before gets its
// epoch now, so the epoch returned stays valid while the channel is
// remembered. The Data of the returned publications aliases the stored
// copies: it is never modified, and must not be modified by the caller.
func (b *Broker) Since(ctx context.Context, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position, error) {
	if err := b.check(ctx); err != nil {
		return nil, brokers.Position{}, fmt.Errorf("memory: since %s: %w", ch, err)
	}
	c, err := b.lockChannel(ch, true)
	if err != nil {
		return nil, brokers.Position{}, fmt.Errorf("memory: since %s: %w", ch, err)
	}
	defer c.mu.Unlock()
	c.trim(b.clock() - b.historyTTL)
	pos := brokers.Position{Seq: c.seq, Epoch: c.epoch}
	if limit <= 0 || since >= c.seq || c.n == 0 {
		return nil, pos, nil
	}
	first := c.seq - uint64(c.n) + 1 // seq of the oldest kept entry
	start := max(since+1, first)
	count := min(c.seq-start+1, uint64(limit))
	pubs := make([]brokers.Publication, count)
	i := (c.head + int(start-first)) % len(c.ring)
	for k := range pubs {
		pubs[k] = brokers.Publication{Seq: start + uint64(k), Epoch: c.epoch, Data: c.ring[i].data}
		if i++; i == len(c.ring) {
			i = 0
		}
	}
	return pubs, pos, nil
}

// check returns ctx's error or brokers.ErrClosed when the broker is not
// running. Callers wrap the result.
func (b *Broker) check(ctx context.Context) error {
	if b.state.Load() != stateRunning {
		return brokers.ErrClosed
	}
	return ctx.Err()
}

// clock returns the current time as an offset from b.base.
func (b *Broker) clock() time.Duration {
	return b.now().Sub(b.base)
}

// lockChannel returns ch's state locked. With create it makes the state
// when there is none; without, it returns nil (and no error) then. It
// returns brokers.ErrClosed, holding no lock, when the broker stopped
// running: checking under the channel lock is what lets Close wait for the
// calls in flight.
func (b *Broker) lockChannel(ch string, create bool) (*channel, error) {
	s := &b.shards[shardOf(ch)]
	for {
		s.mu.Lock()
		c := s.channels[ch]
		if c == nil {
			if !create {
				s.mu.Unlock()
				return nil, nil
			}
			c = newChannel(ch, b.clock())
			s.channels[c.name] = c
		}
		s.mu.Unlock()
		c.mu.Lock()
		if b.state.Load() != stateRunning {
			c.mu.Unlock()
			return nil, brokers.ErrClosed
		}
		if !c.dropped {
			return c, nil
		}
		// The sweeper forgot c between our lookup and our lock: look
		// again, which creates a fresh state with a new epoch.
		c.mu.Unlock()
	}
}

// shardOf hashes ch with FNV-1a (inline: hash/fnv would allocate).
func shardOf(ch string) int {
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	h := uint32(offset32)
	for i := 0; i < len(ch); i++ {
		h ^= uint32(ch[i])
		h *= prime32
	}
	return int(h % numShards)
}
