package nats

import (
	"context"
	"fmt"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/natsbase"
	"github.com/syncgate/syncgate/internal/fault"
	"github.com/syncgate/syncgate/internal/natsname"
)

// Publish implements brokers.Broker. Core NATS gives no order number: the
// Position is always zero. While the server is unreachable, or earlier
// publishes wait in the outbox, the publication is delivered to this node's
// subscribers at once and queued; the flusher sends it when the connection
// is back (see doc.go).
func (b *Broker) Publish(ctx context.Context, ch string, data []byte) (brokers.Position, error) {
	if err := b.n.Check(ctx); err != nil {
		return brokers.Position{}, fmt.Errorf("nats: publish %s: %w", ch, err)
	}
	if b.n.Conn().IsConnected() && b.outbox.Len() == 0 {
		err := b.n.Conn().Publish(b.pubPre+natsname.Token(ch), data)
		if err == nil {
			return brokers.Position{}, nil
		}
		if !natsbase.IsConnErr(err) {
			return brokers.Position{}, fmt.Errorf("nats: publish %s: %w", ch, err)
		}
	}
	return brokers.Position{}, b.enqueue(ch, data)
}

// enqueue accepts a publication into the outbox and delivers it locally.
func (b *Broker) enqueue(ch string, data []byte) error {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	if !b.outbox.Push(outboxEntry{ch: strings.Clone(ch), data: append([]byte(nil), data...)}) {
		return fmt.Errorf("nats: publish %s: %w: server unreachable and outbox full", ch, brokers.ErrUnavailable)
	}
	b.n.DeliverLocal(ch, func(c *channel, h brokers.Handler) {
		c.mu.Lock()
		if c.active {
			h.HandlePublication(c.name, brokers.Publication{Data: data})
		}
		c.mu.Unlock()
	})
	b.n.Poke()
	return nil
}

// flushDelay is how long the flusher waits after a reconnect before it
// sends the outbox: the other nodes reconnect within the reconnect wait
// plus jitter of the server's return, and what is sent before they
// subscribe again is lost to them.
const flushDelay = natsbase.ReconnectWait + natsbase.ReconnectJitter + 250*time.Millisecond

// flusher sends the outbox whenever the connection is up, oldest first,
// and re-creates the presence stream when it is gone.
func (b *Broker) flusher() {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	reconnects := b.n.Conn().Stats().Reconnects
	var hold time.Time
	lastCheck := time.Now()
	for {
		select {
		case <-b.n.Done():
			return
		case <-b.n.Kicked():
		case <-tick.C:
		}
		if !b.n.Conn().IsConnected() {
			continue
		}
		if n := b.n.Conn().Stats().Reconnects; n != reconnects {
			reconnects = n
			hold = time.Now().Add(flushDelay)
			if fault.On(fault.NATSFlushNow) {
				hold = time.Time{}
			}
		}
		if time.Since(lastCheck) >= presenceCheckEvery {
			lastCheck = time.Now()
			b.checkPresence()
		}
		if time.Now().Before(hold) {
			continue
		}
		for b.n.Conn().IsConnected() {
			e, ok := b.outbox.Peek()
			if !ok {
				break
			}
			if fault.On(fault.NATSOutboxDropped) {
				b.outbox.Pop()
				continue
			}
			m := natsgo.NewMsg(b.pubPre + natsname.Token(e.ch))
			m.Header.Set(hdrLocal, b.nodeID)
			m.Data = e.data
			if err := b.n.Conn().PublishMsg(m); err != nil {
				break
			}
			b.outbox.Pop()
		}
	}
}
