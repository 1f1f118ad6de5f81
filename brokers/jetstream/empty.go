package jetstream

import (
	"context"
	"time"

	"github.com/syncgate/syncgate/internal/natsname"
)

// The epoch of a channel with no stored message. Since must return one
// (brokers.History), and the first publication should keep it, so that a
// client that saw the channel empty resumes without a resync. Storing it
// (an epoch marker, as before) would let anyone who may subscribe fill the
// stream with one subject per channel name for history.ttl, so nothing is
// stored: the epoch lives on the nodes that serve the channel.
//
// A node that hands out an empty channel's epoch keeps it on the channel
// (channel.empty) and answers requests for it on <prefix>.ee.<token>. A
// node that needs one (Since on an empty channel, or a first publication)
// takes its own, else asks the nodes serving the channel (core NATS
// request: no stored state; no responders comes back at once), else makes
// a new one. The epoch is forgotten as soon as anything is stored on the
// channel (the node sees it) or may have been unseen (a sweep, a reset, an
// unsubscribe), so it is never claimed for a history that had messages.
// Two nodes that make one at the same moment, or a node that cannot reach
// the others in emptyAskTimeout, end up with different epochs: a client
// resuming from the one the first publication did not keep gets
// `recovered: false` and resyncs. That is safe; it costs a resync, never a
// lost message.

// emptyAskTimeout bounds the wait for another node's answer.
const emptyAskTimeout = 250 * time.Millisecond

// maxEpochLen bounds an epoch taken from another node's answer.
const maxEpochLen = 64

// channelGen returns the channel ch this node serves (nil when none) and
// its gen, read before Since looks at the stream.
func (b *Broker) channelGen(ch string) (*channel, uint64) {
	c := b.n.Channel(ch)
	if c == nil {
		return nil, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c, c.gen
}

// emptyEpoch is the epoch Since gives ch, found empty in the stream after
// c's gen was read (c: the channel this node serves, nil when none).
func (b *Broker) emptyEpoch(ctx context.Context, ch string, c *channel, gen uint64) string {
	if c != nil {
		if e := c.empty.Load(); e != nil {
			return *e
		}
	}
	e, ok := b.askEmpty(ctx, ch)
	if !ok {
		e = newEpoch()
	}
	if c == nil {
		return e
	}
	c.mu.Lock()
	if !c.active || !c.ready || c.gen != gen {
		// Something was stored (or may have been) since the stream was
		// read: this epoch must not be kept for the channel.
		c.mu.Unlock()
		return e
	}
	if old := c.empty.Load(); old != nil {
		c.mu.Unlock()
		return *old // a concurrent Since got here first
	}
	c.empty.Store(&e)
	sub, err := b.n.Conn().ChanSubscribe(b.emptyPre+natsname.Token(c.name), b.n.Queue(c.name))
	if err == nil {
		c.emptySub = sub
	}
	c.mu.Unlock()
	if err == nil {
		// So that the server has the subscription before another node
		// asks (not under c.mu: that would hold up deliveries).
		fctx, cancel := context.WithTimeout(ctx, emptyAskTimeout)
		_ = b.n.Conn().FlushWithContext(fctx)
		cancel()
	}
	return e
}

// firstEpoch is the epoch of a publication onto a channel with no stored
// message: the one this node or another hands out for it, if any.
func (b *Broker) firstEpoch(ctx context.Context, ch string) string {
	if c := b.n.Channel(ch); c != nil {
		if e := c.empty.Load(); e != nil {
			return *e
		}
	}
	if e, ok := b.askEmpty(ctx, ch); ok {
		return e
	}
	return newEpoch()
}

// askEmpty asks the other nodes serving ch for the epoch they hand out
// for it while it is empty.
func (b *Broker) askEmpty(ctx context.Context, ch string) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, emptyAskTimeout)
	defer cancel()
	m, err := b.n.Conn().RequestWithContext(ctx, b.emptyPre+natsname.Token(ch), nil)
	if err != nil || !validEpoch(m.Data) {
		return "", false
	}
	return string(m.Data), true
}

// answerEmpty answers another node's request for a channel's empty epoch
// (on the channel's delivery goroutine: it must not block).
func (b *Broker) answerEmpty(tok string, m interface {
	Respond([]byte) error
}) {
	c := b.n.Lookup(tok)
	if c == nil {
		return
	}
	if e := c.empty.Load(); e != nil {
		_ = m.Respond([]byte(*e))
	}
}

// validEpoch checks an epoch that came from the network: short, and only
// the characters a node's epochs use (never a provisional one).
func validEpoch(e []byte) bool {
	if len(e) == 0 || len(e) > maxEpochLen {
		return false
	}
	for _, c := range e {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
