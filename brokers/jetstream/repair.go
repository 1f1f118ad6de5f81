package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/natsbase"
)

// Streams deleted (or re-created) under a running node: anyone with access
// to the JetStream API can delete a stream, and a node must not go on
// acking publishes into its outbox and refusing every Subscribe until its
// next reconnect. A request that finds a stream missing (a JetStream API
// answer "stream not found", or a publish nobody answers while the
// connection is up) sets needRepair; the flusher also asks for both streams
// every Config.CheckEvery. A missing stream is created again (the history
// in it is lost: channels start new epochs) and a stream created anew by
// another node is noticed by its creation time; either way the node forgets
// the stream positions it knew and checks every subscribed channel against
// the new stream.

// noteErr asks the flusher for a stream check when err says a stream may
// be missing. It returns err.
func (b *Broker) noteErr(err error) error {
	if err == nil {
		return nil
	}
	if natsbase.IsStreamNotFound(err) || errors.Is(err, nats.ErrNoResponders) && b.n.Conn().IsConnected() {
		if !b.needRepair.Swap(true) {
			b.n.Log().Warn("jetstream: a stream seems to be missing; checking", "err", err)
		}
		b.n.Poke()
	}
	return err
}

// Ping implements brokers.Pinger, for readiness: it succeeds only when the
// node can serve Subscribe and Publish through the server now. That needs
// the connection, both streams present (the same history stream the node
// knows) and no publishes waiting in the outbox (Subscribe is refused
// while there are).
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.n.Check(ctx); err != nil {
		return fmt.Errorf("jetstream: ping: %w", err)
	}
	if !b.n.Conn().IsConnected() {
		return fmt.Errorf("jetstream: ping: %w: not connected", brokers.ErrUnavailable)
	}
	if b.needRepair.Load() {
		return fmt.Errorf("jetstream: ping: %w: checking and re-creating the streams", brokers.ErrUnavailable)
	}
	if b.jsDown.Load() {
		return fmt.Errorf("jetstream: ping: %w: publishes are waiting in the outbox", brokers.ErrUnavailable)
	}
	ctx, cancel := b.n.OpCtx(ctx)
	defer cancel()
	created, err := b.probeStreams(ctx)
	if err != nil {
		b.noteErr(err)
		return fmt.Errorf("jetstream: ping: %w: %w", brokers.ErrUnavailable, err)
	}
	if created != b.created.Load() {
		b.needRepair.Store(true)
		b.n.Poke()
		return fmt.Errorf("jetstream: ping: %w: the history stream was created anew", brokers.ErrUnavailable)
	}
	return nil
}

// probeStreams asks the server for both streams (two round trips) and
// returns the history stream's creation time (unix ns).
func (b *Broker) probeStreams(ctx context.Context) (int64, error) {
	s, err := b.js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("history stream %s: %w", b.cfg.Stream, err)
	}
	if err := b.n.Presence().Check(ctx, b.js); err != nil {
		return 0, err
	}
	return s.CachedInfo().Created.UnixNano(), nil
}

// checkStreams runs on the flusher: it re-creates a missing stream, and
// when the history stream is not the one the node knew (deleted, or
// created anew by another node) forgets the positions it knew and has
// every subscribed channel checked against the new stream.
func (b *Broker) checkStreams() error {
	ctx, cancel := b.checkCtx()
	defer cancel()
	created, err := b.probeStreams(ctx)
	switch {
	case natsbase.IsStreamNotFound(err):
		b.n.Log().Warn("jetstream: a stream was deleted under the node; creating it again", "err", err)
		if err := b.recoverStreams(); err != nil {
			return err
		}
	case err != nil:
		return err
	case created != b.created.Load():
		b.n.Log().Warn("jetstream: the history stream was created anew; its history is lost")
		b.created.Store(created)
		b.resetPositions()
	default:
		b.needRepair.Store(false)
		return nil
	}
	b.needSweep.Store(true)
	b.needRepair.Store(false)
	return nil
}

// Deadlines of the flusher's stream checks (see checkCtx).
const (
	checkWait    = 250 * time.Millisecond
	maxCheckWait = 8 * time.Second
)

// checkCtx bounds one of the flusher's stream checks (checkStreams,
// recoverStreams). The JetStream API drops a request that reaches it while
// the stream has no leader (an election after a leader stepped down or
// died): nobody answers, and the check waits out its deadline. The flusher
// alone flushes the outbox and sweeps, so that wait holds up the delivery,
// on every other node, of what this node published meanwhile (with 10 s,
// one stream leader stepdown in three stalled it 10 s). So a check gets
// checkWait, doubled after each failed one up to maxCheckWait (a slow
// server is still given time), and a stream's new leader ends the check
// in progress and the doubling (see flusherCtx).
func (b *Broker) checkCtx() (context.Context, context.CancelFunc) {
	if b.elected.Swap(false) {
		b.checkFails = 0
	}
	return b.flusherCtx(min(checkWait<<min(b.checkFails, 6), maxCheckWait))
}

// errElected ends a wait of the flusher when a stream elects a leader. It
// counts as a timeout (natsbase.IsConnErr): what was asked is asked again.
var errElected = fmt.Errorf("a stream elected a leader: %w", context.DeadlineExceeded)

// flusherCtx bounds one wait of the flusher (a stream check, a flushed
// publish, a sweep's read) by d. A stream's election advisory ends it
// early, with errElected: a request sent while the stream had no leader
// is never answered, and the new leader answers it asked again.
func (b *Broker) flusherCtx(d time.Duration) (context.Context, context.CancelFunc) {
	bg, done := b.n.BgCtx(d)
	ctx, cancel := context.WithCancelCause(bg)
	stop := func() { cancel(errElected) }
	b.waitStop.Store(&stop)
	return ctx, func() {
		b.waitStop.Store(nil)
		cancel(nil)
		done()
	}
}

// leaderElected: a stream has a new leader (its advisory).
func (b *Broker) leaderElected() {
	b.elected.Store(true)
	if stop := b.waitStop.Load(); stop != nil {
		(*stop)()
	}
	b.n.Poke()
}

// checked counts the flusher's failed stream checks in a row (for
// checkCtx) and returns err.
func (b *Broker) checked(err error) error {
	if err != nil {
		b.checkFails++
	} else {
		b.checkFails = 0
	}
	return err
}
