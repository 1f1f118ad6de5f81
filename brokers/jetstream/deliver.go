package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/natsbase"
	"github.com/syncgate/syncgate/internal/natsname"
)

// How publications reach a node: the stream republishes every message it
// stores, after storing it, on <prefix>.r.<channel>, with its stream seq
// (Nats-Sequence) and the stream seq of the subject's previous message
// (Nats-Last-Sequence). A node subscribed to a channel holds one core
// subscription there (no JetStream consumer). It remembers the stream seq
// of the last message it accounted for; a message whose previous seq is not
// that one reveals a gap (a message lost in transit, dropped by a full
// queue, or published while the node was disconnected), which the node
// fills from the stream before handing on the message. So the Handler sees
// each channel's stored messages in stream order, which is seq order, each
// once.

// channel is one subscribed channel's delivery state, guarded by mu. Every
// Handler call for the channel is made with mu held.
type channel struct {
	mu     sync.Mutex
	name   string
	hist   string // history subject
	active bool   // false once unsubscribed: nothing more is delivered
	ready  bool   // the starting position is known
	subs   []*nats.Subscription

	started chan struct{} // closed when the first Subscribe returns

	pending []*nats.Msg // arrived before ready

	// The last stored message accounted for: its stream seq, channel seq
	// (0 for an epoch marker) and epoch.
	lastStream uint64
	seq        uint64
	epoch      string

	filter natsbase.EventFilter

	// tail is the last stored message seen, for publishers on this node
	// that lost a race: readable without mu.
	tail atomic.Pointer[tail]

	// empty is the epoch Since handed out while the channel had no stored
	// message (nil: none), kept on the node instead of in the stream (see
	// empty.go). Written under mu, readable without. gen counts what may
	// have stored something unseen or changed the stream (a message
	// accepted, a sweep, a reset): each drops empty. emptySub answers
	// other nodes asking for it.
	empty    atomic.Pointer[string]
	gen      uint64
	emptySub *nats.Subscription
}

// invalidateLocked forgets the empty-channel epoch (c.mu held): something
// was stored on the channel, or may have been while the node was not
// looking.
func (c *channel) invalidateLocked() {
	c.gen++
	if c.empty.Load() != nil {
		c.empty.Store(nil)
	}
	if c.emptySub != nil {
		_ = c.emptySub.Unsubscribe()
		c.emptySub = nil
	}
}

// tail is a stored message's stream seq, channel seq and epoch.
type tail struct {
	sseq, seq uint64
	epoch     string
	// prev is the stream seq of the message accounted for before it, id
	// its Sg-Id ("" when unknown): a write conditional on prev whose id is
	// not id was not stored (deliverInFlight).
	prev uint64
	id   string
}

// Subscribe implements brokers.Broker. It subscribes to the channel's live
// subject and presence events, waits until the server has the
// subscriptions, then reads the channel's last stored message from the
// stream leader: every message stored after that one is delivered. It
// fails with brokers.ErrUnavailable while the server is unreachable (the
// starting position cannot be known).
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	if err := b.n.Check(ctx); err != nil {
		return fmt.Errorf("jetstream: subscribe %s: %w", ch, err)
	}
	if b.offline() {
		return fmt.Errorf("jetstream: subscribe %s: %w: server unreachable", ch, brokers.ErrUnavailable)
	}
	tok := natsname.Token(ch)
	c, fresh := b.n.Register(ch, func() *channel {
		c := &channel{name: strings.Clone(ch), hist: b.histPre + tok, started: make(chan struct{})}
		c.mu.Lock() // until subscribed: whoever finds it waits
		return c
	})
	if !fresh {
		// Subscribed already, or being subscribed by a concurrent call:
		// its promise holds once it is ready.
		select {
		case <-c.started:
		case <-ctx.Done():
			return fmt.Errorf("jetstream: subscribe %s: %w", ch, ctx.Err())
		}
		c.mu.Lock()
		ok := c.active && c.ready
		c.mu.Unlock()
		if !ok {
			return fmt.Errorf("jetstream: subscribe %s: %w: a concurrent subscribe failed", ch, brokers.ErrUnavailable)
		}
		return nil
	}
	defer close(c.started)
	err := b.subscribeLocked(c, tok)
	c.mu.Unlock()
	if err == nil {
		err = b.startPosition(ctx, c)
	}
	if err != nil {
		b.drop(c)
		return natsbase.Wrap("jetstream", "subscribe", ch, b.noteErr(err))
	}
	return nil
}

func (b *Broker) subscribeLocked(c *channel, tok string) error {
	q := b.n.Queue(c.name)
	sub, err := b.n.Conn().ChanSubscribe(b.livePre+tok, q)
	if err != nil {
		return err
	}
	c.subs = append(c.subs, sub)
	sub, err = b.n.Conn().ChanSubscribe(b.n.Presence().EventSubject(c.name), q)
	if err != nil {
		return err
	}
	c.subs = append(c.subs, sub)
	c.active = true
	return nil
}

// startPosition makes c ready: a flush (the server has the subscriptions),
// then the leader's last message of the channel.
func (b *Broker) startPosition(ctx context.Context, c *channel) error {
	ctx, cancel := b.n.OpCtx(ctx)
	defer cancel()
	if err := b.n.Conn().FlushWithContext(ctx); err != nil {
		return err
	}
	last, err := natsbase.GetLast(ctx, b.n.Conn().Conn, b.cfg.Stream, c.hist)
	if err != nil && !errors.Is(err, natsbase.ErrNotFound) {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.active {
		return fmt.Errorf("%w: unsubscribed meanwhile", brokers.ErrUnavailable)
	}
	if last != nil {
		c.lastStream = last.Seq
		c.seq, c.epoch = seqOf(last.Header)
	}
	c.ready = true
	pending := c.pending
	c.pending = nil
	for _, m := range pending {
		b.dispatchLocked(c, m)
	}
	return nil
}

// Deactivate implements natsbase.Channel.
func (c *channel) Deactivate() {
	c.mu.Lock()
	c.active = false
	c.mu.Unlock()
}

// drop forgets c and ends its subscriptions; nothing is delivered for it
// once drop returns.
func (b *Broker) drop(c *channel) {
	b.n.Forget(c.name, c)
	c.mu.Lock()
	c.active = false
	c.pending = nil
	for _, s := range c.subs {
		_ = s.Unsubscribe()
	}
	c.subs = nil
	c.invalidateLocked()
	c.mu.Unlock()
}

// Unsubscribe implements brokers.Broker.
func (b *Broker) Unsubscribe(ctx context.Context, ch string) error {
	if err := b.n.Check(ctx); err != nil {
		return fmt.Errorf("jetstream: unsubscribe %s: %w", ch, err)
	}
	if c := b.n.Channel(ch); c != nil {
		b.drop(c)
	}
	return nil
}

// maxPending bounds the messages kept for a channel whose start position
// is being read; past it they are dropped (and refilled as a gap).
const maxPending = 10000

// handle runs on the channel's delivery goroutine.
func (b *Broker) handle(m *nats.Msg) {
	var tok string
	if rest, ok := strings.CutPrefix(m.Subject, b.emptyPre); ok {
		b.answerEmpty(rest, m)
		return
	}
	if rest, ok := strings.CutPrefix(m.Subject, b.livePre); ok {
		tok = rest
	} else {
		// <prefix>.pe.<channel>.<client>.<user>
		s := m.Subject
		for range 2 {
			i := strings.LastIndexByte(s, '.')
			if i < 0 {
				return
			}
			s = s[:i]
		}
		tok = s[strings.LastIndexByte(s, '.')+1:]
	}
	c := b.n.Lookup(tok)
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.active {
		return
	}
	if !c.ready {
		if len(c.pending) < maxPending {
			c.pending = append(c.pending, m)
		}
		return
	}
	b.dispatchLocked(c, m)
}

// dispatchLocked hands on one message of c (c.mu held, c ready).
func (b *Broker) dispatchLocked(c *channel, m *nats.Msg) {
	if strings.HasPrefix(m.Subject, b.livePre) {
		b.onLive(c, m)
		return
	}
	typ, mem, ok := b.n.Presence().Event(m)
	if ok && c.filter.Pass(typ, mem, time.Now()) {
		b.n.Handler().HandlePresence(c.name, typ, mem)
	}
}

// onLive handles a republished message of c.
func (b *Broker) onLive(c *channel, m *nats.Msg) {
	sseq, err := strconv.ParseUint(m.Header.Get(hdrSSeq), 10, 64)
	if err != nil || sseq == 0 {
		return
	}
	if sseq <= c.lastStream {
		return // accounted for already (a fill, or stored before Subscribe)
	}
	prev, _ := strconv.ParseUint(m.Header.Get(hdrPrev), 10, 64)
	seq, epoch := seqOf(m.Header)
	if prev != c.lastStream {
		// A fill that fails is skipped: m reveals the jump in seqs.
		_ = b.fillLocked(c, sseq-1, seq, epoch)
		if sseq <= c.lastStream {
			return
		}
	}
	b.acceptLocked(c, sseq, m.Header, m.Data)
}

// acceptLocked accounts for one stored message and hands it on (an epoch
// marker, seq 0, only moves the position).
func (b *Broker) acceptLocked(c *channel, sseq uint64, h nats.Header, data []byte) {
	seq, epoch := seqOf(h)
	if seq == 0 {
		c.tail.Store(&tail{sseq: sseq, seq: seq, epoch: epoch, prev: c.lastStream})
		c.lastStream = sseq
		c.invalidateLocked()
		c.seq, c.epoch = 0, epoch
		return
	}
	c.acceptPubLocked(b.n.Handler(), sseq, h.Get(hdrID), brokers.Publication{Seq: seq, Epoch: epoch, Data: data, Was: b.inflight.was(h)})
}

// acceptPubLocked accounts for the stored message sseq (Sg-Id id),
// publication p, and hands p on unless it was delivered already.
func (c *channel) acceptPubLocked(h brokers.Handler, sseq uint64, id string, p brokers.Publication) {
	c.tail.Store(&tail{sseq: sseq, seq: p.Seq, epoch: p.Epoch, prev: c.lastStream, id: id})
	c.lastStream = sseq
	c.invalidateLocked()
	if p.Epoch == c.epoch && p.Seq <= c.seq {
		return
	}
	c.seq, c.epoch = p.Seq, p.Epoch
	h.HandlePublication(c.name, p)
}

// fillLocked reads c's stored messages after c.lastStream up to stream seq
// upTo and accepts them. nextSeq/nextEpoch describe the message that
// revealed the gap (0/"" when none): a fill that stops short of it in the
// same epoch was answered by a replica still behind, and is retried. What
// cannot be read (the stream no longer holds it, or the server is
// unreachable) is skipped: the Handler sees the jump in seqs. It returns
// the read error that ended it, if any (a message the stream no longer
// holds is no error).
func (b *Broker) fillLocked(c *channel, upTo, nextSeq uint64, nextEpoch string) error {
	batch := max(b.cfg.HistorySize, 1) + 1
	complete := func() bool { return nextSeq == 0 || nextEpoch != c.epoch || c.seq+1 >= nextSeq }
	for try := range replicaTries {
		if try > 0 {
			time.Sleep(time.Duration(try) * 20 * time.Millisecond)
		}
		ctx, cancel := b.n.BgCtx(5 * time.Second)
		msgs, err := natsbase.DirectBatch(ctx, b.n.Conn().Conn, b.cfg.Stream, c.hist, c.lastStream+1, batch, upTo)
		cancel()
		if err != nil {
			b.noteErr(err)
			b.n.Log().Warn("jetstream: filling a gap", "channel", c.name, "err", err)
			return err
		}
		for _, sm := range msgs {
			if sm.Seq <= c.lastStream || sm.Seq > upTo {
				continue
			}
			b.acceptLocked(c, sm.Seq, sm.Header, sm.Data)
		}
		if complete() {
			return nil
		}
	}
	// The replica answering direct gets is still behind: ask the leader.
	ctx, cancel := b.n.BgCtx(5 * time.Second)
	defer cancel()
	for !complete() && c.lastStream < upTo {
		sm, err := natsbase.GetNext(ctx, b.n.Conn().Conn, b.cfg.Stream, c.hist, c.lastStream+1)
		if errors.Is(err, natsbase.ErrNotFound) || err == nil && sm.Seq > upTo {
			return nil
		}
		if err != nil {
			b.n.Log().Warn("jetstream: filling a gap", "channel", c.name, "err", err)
			return err
		}
		b.acceptLocked(c, sm.Seq, sm.Header, sm.Data)
	}
	return nil
}

// sweep checks every subscribed channel against the stream after a
// reconnect and fills what was stored meanwhile. It reports success.
//
// The channel's last message is read without the channel's lock, so that
// a read waiting for an answer (a stream without leader answers nothing)
// does not hold up the channel's deliveries, and a read that times out
// ends the sweep: the next channels' would too; the flusher sweeps again.
func (b *Broker) sweep() bool {
	chans := b.n.Channels()
	ok := true
	for _, c := range chans {
		if b.n.Closing() {
			return false
		}
		c.mu.Lock()
		// Messages may have been stored and even aged out while the node
		// was not looking (disconnected, dropping, between leaders).
		c.invalidateLocked()
		live := c.active && c.ready
		c.mu.Unlock()
		if !live {
			continue
		}
		ctx, cancel := b.flusherCtx(5 * time.Second)
		last, err := natsbase.GetLast(ctx, b.n.Conn().Conn, b.cfg.Stream, c.hist)
		cancel()
		switch {
		case errors.Is(err, natsbase.ErrNotFound):
			continue
		case natsbase.IsConnErr(err):
			b.noteErr(err)
			return false
		case err != nil:
			b.noteErr(err)
			ok = false
			continue
		}
		c.mu.Lock()
		if c.active && c.ready && last.Seq > c.lastStream {
			// A fill that failed leaves the channel's last messages
			// undelivered, with no later message to reveal them: the
			// sweep failed, and the flusher sweeps again.
			seq, epoch := seqOf(last.Header)
			if err := b.sweepFillLocked(c, last.Seq, seq+1, epoch); err != nil {
				ok = false
			}
		}
		c.mu.Unlock()
	}
	return ok
}

// sweepFillLocked is the sweep's fillLocked; sweepFillFault, set only by
// tests, fails a sweep's fill before it reads (a fill error the server
// gives at will is hard to come by).
func (b *Broker) sweepFillLocked(c *channel, upTo, nextSeq uint64, nextEpoch string) error {
	if f := b.sweepFillFault; f != nil {
		if err := f(); err != nil {
			return err
		}
	}
	return b.fillLocked(c, upTo, nextSeq, nextEpoch)
}

// resetPositions forgets stream positions (the stream was created anew and
// its seqs start over).
func (b *Broker) resetPositions() {
	chans := b.n.Channels()
	for _, c := range chans {
		c.mu.Lock()
		c.lastStream = 0
		c.invalidateLocked()
		c.mu.Unlock()
	}
	b.pubMu.Lock()
	clear(b.pubs)
	b.pubMu.Unlock()
}

// tailOf returns the last stored message of ch this node has seen, if it
// serves ch.
func (b *Broker) tailOf(ch string) *tail {
	c := b.n.Channel(ch)
	if c == nil {
		return nil
	}
	return c.tail.Load()
}
