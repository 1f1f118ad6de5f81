package nats

import (
	"context"
	"fmt"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/natsbase"
)

// Subscribe implements brokers.Broker: one core subscription for the
// channel's publications and, with presence, one for its presence events,
// both feeding the channel's delivery goroutine. It returns once the server
// has the subscriptions. While the connection is down it succeeds anyway:
// the client library subscribes again when it reconnects (what is published
// meanwhile is lost, as core NATS loses it).
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("nats: subscribe %s: %w", ch, err)
	}
	b.chansMu.Lock()
	if c := b.chans[ch]; c != nil {
		b.chansMu.Unlock()
		return nil
	}
	c := &channel{name: strings.Clone(ch)}
	c.mu.Lock()
	b.chans[c.name] = c
	b.chansMu.Unlock()

	q := b.shards.Queue(ch)
	err := b.subscribeLocked(c, q)
	if err == nil {
		c.active = true
	}
	c.mu.Unlock()
	if err == nil && b.nc.IsConnected() {
		ctx, cancel := b.opCtx(ctx)
		err = b.nc.FlushWithContext(ctx)
		cancel()
		if err != nil {
			err = fmt.Errorf("%w: %w", brokers.ErrUnavailable, err)
		}
	}
	if err != nil {
		b.drop(c)
		return fmt.Errorf("nats: subscribe %s: %w", ch, err)
	}
	return nil
}

func (b *Broker) subscribeLocked(c *channel, q chan *natsgo.Msg) error {
	sub, err := b.nc.ChanSubscribe(b.pubPre+natsbase.Token(c.name), q)
	if err != nil {
		return err
	}
	c.subs = append(c.subs, sub)
	if b.pres != nil {
		sub, err := b.nc.ChanSubscribe(b.pres.EventSubject(c.name), q)
		if err != nil {
			return err
		}
		c.subs = append(c.subs, sub)
	}
	return nil
}

// drop forgets c and ends its subscriptions; nothing is delivered for it
// once drop returns.
func (b *Broker) drop(c *channel) {
	b.chansMu.Lock()
	if b.chans[c.name] == c {
		delete(b.chans, c.name)
	}
	b.chansMu.Unlock()
	c.mu.Lock()
	c.active = false
	for _, s := range c.subs {
		_ = s.Unsubscribe()
	}
	c.subs = nil
	c.mu.Unlock()
}

// Unsubscribe implements brokers.Broker.
func (b *Broker) Unsubscribe(ctx context.Context, ch string) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("nats: unsubscribe %s: %w", ch, err)
	}
	b.chansMu.Lock()
	c := b.chans[ch]
	b.chansMu.Unlock()
	if c != nil {
		b.drop(c)
	}
	return nil
}

// lookup returns the subscribed channel named by a subject token.
func (b *Broker) lookup(tok string) *channel {
	name, ok := natsbase.ParseToken(tok)
	if !ok {
		return nil
	}
	b.chansMu.Lock()
	c := b.chans[name]
	b.chansMu.Unlock()
	return c
}

// handle runs on the channel's delivery goroutine.
func (b *Broker) handle(m *natsgo.Msg) {
	if rest, ok := strings.CutPrefix(m.Subject, b.pubPre); ok {
		c := b.lookup(rest)
		if c == nil {
			return
		}
		if m.Header != nil && m.Header.Get(hdrLocal) == b.nodeID {
			return // delivered here when it entered the outbox
		}
		c.mu.Lock()
		if c.active {
			b.handler.HandlePublication(c.name, brokers.Publication{Data: m.Data})
		}
		c.mu.Unlock()
		return
	}
	if b.pres == nil {
		return
	}
	typ, mem, ok := b.pres.Event(m)
	if !ok {
		return
	}
	// <prefix>.pe.<channel>.<client>.<user>
	s := m.Subject[:strings.LastIndexByte(m.Subject, '.')]
	s = s[:strings.LastIndexByte(s, '.')]
	c := b.lookup(s[strings.LastIndexByte(s, '.')+1:])
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.active && c.filter.Pass(typ, mem, time.Now()) {
		b.handler.HandlePresence(c.name, typ, mem)
	}
	c.mu.Unlock()
}
