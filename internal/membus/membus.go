// Package membus runs several broker "nodes" over one in-memory broker, in
// one process: a stand-in for a shared Redis or NATS server in tests of
// several gateway nodes (drain, cross-node delivery) that need no external
// service. It is for tests only: all nodes share one process's memory.
package membus

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/memory"
)

// bus plays a shared server: one memory broker holds seqs, history and
// presence, and its deliveries fan out to the nodes subscribed.
type bus struct {
	mem   *memory.Broker
	nodes []*busNode // fixed at creation

	mu      sync.Mutex // guards the fields below; taken before memory's locks
	subs    map[string]int
	started bool
	running int
}

// busNode is one node of a bus.
type busNode struct {
	bus *bus

	mu    sync.Mutex // held while delivering, so Close waits for deliveries
	h     brokers.Handler
	state int // 0 new, 1 running, 2 closed
	subs  map[string]bool
}

var (
	_ brokers.Broker   = (*busNode)(nil)
	_ brokers.History  = (*busNode)(nil)
	_ brokers.Presence = (*busNode)(nil)
	_ brokers.Pinger   = (*busNode)(nil)
)

// New returns nodes brokers sharing one memory broker built from cfg; the
// shared broker starts with the first node and closes with the last.
func New(cfg memory.Config, nodes int) []brokers.Broker {
	b := &bus{mem: memory.New(cfg), subs: make(map[string]int)}
	out := make([]brokers.Broker, nodes)
	for i := range nodes {
		n := &busNode{bus: b, subs: make(map[string]bool)}
		b.nodes = append(b.nodes, n)
		out[i] = n
	}
	return out
}

func (b *bus) HandlePublication(ch string, p brokers.Publication) {
	for _, n := range b.nodes {
		n.mu.Lock()
		if n.state == 1 && n.subs[ch] {
			n.h.HandlePublication(ch, p)
		}
		n.mu.Unlock()
	}
}

func (b *bus) HandlePresence(ch string, t brokers.PresenceEventType, m brokers.Member) {
	for _, n := range b.nodes {
		n.mu.Lock()
		if n.state == 1 && n.subs[ch] {
			n.h.HandlePresence(ch, t, m)
		}
		n.mu.Unlock()
	}
}

func (n *busNode) Start(ctx context.Context, h brokers.Handler) error {
	n.mu.Lock()
	state := n.state
	n.mu.Unlock()
	if state != 0 {
		return fmt.Errorf("bus: start: %w", brokers.ErrClosed)
	}
	b := n.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		if err := b.mem.Start(ctx, b); err != nil {
			return fmt.Errorf("bus: start: %w", err)
		}
		b.started = true
	}
	b.running++
	n.mu.Lock()
	n.h, n.state = h, 1
	n.mu.Unlock()
	return nil
}

func (n *busNode) Close() error {
	n.mu.Lock()
	if n.state != 1 {
		n.state = 2
		n.mu.Unlock()
		return nil
	}
	n.state = 2
	subs := n.subs
	n.subs = make(map[string]bool)
	n.mu.Unlock()
	b := n.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range subs {
		b.unsubscribeLocked(ch)
	}
	if b.running--; b.running == 0 {
		return b.mem.Close()
	}
	return nil
}

// check returns brokers.ErrClosed unless the node is running.
func (n *busNode) check() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != 1 {
		return brokers.ErrClosed
	}
	return nil
}

func (n *busNode) Publish(ctx context.Context, ch string, data []byte) (brokers.Position, error) {
	if err := n.check(); err != nil {
		return brokers.Position{}, fmt.Errorf("bus: publish %s: %w", ch, err)
	}
	return n.bus.mem.Publish(ctx, ch, data)
}

func (n *busNode) Subscribe(ctx context.Context, ch string) error {
	n.mu.Lock()
	if n.state != 1 {
		n.mu.Unlock()
		return fmt.Errorf("bus: subscribe %s: %w", ch, brokers.ErrClosed)
	}
	already := n.subs[ch]
	n.subs[ch] = true
	n.mu.Unlock()
	if already {
		return nil
	}
	b := n.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs[ch]++; b.subs[ch] == 1 {
		return b.mem.Subscribe(ctx, ch)
	}
	return nil
}

func (n *busNode) Unsubscribe(ctx context.Context, ch string) error {
	n.mu.Lock()
	if n.state != 1 {
		n.mu.Unlock()
		return fmt.Errorf("bus: unsubscribe %s: %w", ch, brokers.ErrClosed)
	}
	was := n.subs[ch]
	delete(n.subs, ch)
	n.mu.Unlock()
	if !was {
		return nil
	}
	b := n.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.unsubscribeLocked(ch)
}

func (b *bus) unsubscribeLocked(ch string) error {
	if b.subs[ch]--; b.subs[ch] > 0 {
		return nil
	}
	delete(b.subs, ch)
	return b.mem.Unsubscribe(context.Background(), ch)
}

func (n *busNode) Since(ctx context.Context, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position, error) {
	if err := n.check(); err != nil {
		return nil, brokers.Position{}, fmt.Errorf("bus: since %s: %w", ch, err)
	}
	return n.bus.mem.Since(ctx, ch, since, limit)
}

func (n *busNode) Join(ctx context.Context, ch string, m brokers.Member, ttl time.Duration) error {
	if err := n.check(); err != nil {
		return fmt.Errorf("bus: join %s: %w", ch, err)
	}
	return n.bus.mem.Join(ctx, ch, m, ttl)
}

func (n *busNode) Leave(ctx context.Context, ch string, m brokers.Member) error {
	if err := n.check(); err != nil {
		return fmt.Errorf("bus: leave %s: %w", ch, err)
	}
	return n.bus.mem.Leave(ctx, ch, m)
}

func (n *busNode) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if err := n.check(); err != nil {
		return fmt.Errorf("bus: refresh %s: %w", ch, err)
	}
	return n.bus.mem.Refresh(ctx, ch, ms, ttl)
}

func (n *busNode) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	if err := n.check(); err != nil {
		return nil, fmt.Errorf("bus: members %s: %w", ch, err)
	}
	return n.bus.mem.Members(ctx, ch)
}

func (n *busNode) Ping(ctx context.Context) error {
	if err := n.check(); err != nil {
		return fmt.Errorf("bus: ping: %w", err)
	}
	return n.bus.mem.Ping(ctx)
}
