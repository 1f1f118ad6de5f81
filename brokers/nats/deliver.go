package nats

import (
	"context"
	"fmt"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/natsname"
)

// Subscribe implements brokers.Broker: one core subscription for the
// channel's publications and, with presence, one for its presence events,
// both feeding the channel's delivery goroutine. It returns once the server
// has the subscriptions. While the connection is down it succeeds anyway:
// the client library subscribes again when it reconnects (what is published
// meanwhile is lost, as core NATS loses it).
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	if err := b.n.Check(ctx); err != nil {
		return fmt.Errorf("nats: subscribe %s: %w", ch, err)
	}
	c, fresh := b.n.Register(ch, func() *channel {
		c := &channel{name: strings.Clone(ch)}
		c.mu.Lock() // until subscribed: whoever finds it waits
		return c
	})
	if !fresh {
		return nil
	}

	q := b.n.Queue(ch)
	err := b.subscribeLocked(c, q)
	if err == nil {
		c.active = true
	}
	c.mu.Unlock()
	if err == nil && b.n.Conn().IsConnected() {
		ctx, cancel := b.n.OpCtx(ctx)
		err = b.n.Conn().FlushWithContext(ctx)
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
	sub, err := b.n.Conn().ChanSubscribe(b.pubPre+natsname.Token(c.name), q)
	if err != nil {
		return err
	}
	c.subs = append(c.subs, sub)
	if b.n.Presence() != nil {
		sub, err := b.n.Conn().ChanSubscribe(b.n.Presence().EventSubject(c.name), q)
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
	b.n.Forget(c.name, c)
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
	if err := b.n.Check(ctx); err != nil {
		return fmt.Errorf("nats: unsubscribe %s: %w", ch, err)
	}
	if c := b.n.Channel(ch); c != nil {
		b.drop(c)
	}
	return nil
}

// handle runs on the channel's delivery goroutine.
func (b *Broker) handle(m *natsgo.Msg) {
	if rest, ok := strings.CutPrefix(m.Subject, b.pubPre); ok {
		c := b.n.Lookup(rest)
		if c == nil {
			return
		}
		if m.Header != nil && m.Header.Get(hdrLocal) == b.nodeID {
			return // delivered here when it entered the outbox
		}
		c.mu.Lock()
		if c.active {
			b.n.Handler().HandlePublication(c.name, brokers.Publication{Data: m.Data})
		}
		c.mu.Unlock()
		return
	}
	if b.n.Presence() == nil {
		return
	}
	typ, mem, ok := b.n.Presence().Event(m)
	if !ok {
		return
	}
	// <prefix>.pe.<channel>.<client>.<user>
	s := m.Subject[:strings.LastIndexByte(m.Subject, '.')]
	s = s[:strings.LastIndexByte(s, '.')]
	c := b.n.Lookup(s[strings.LastIndexByte(s, '.')+1:])
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.active && c.filter.Pass(typ, mem, time.Now()) {
		b.n.Handler().HandlePresence(c.name, typ, mem)
	}
	c.mu.Unlock()
}
