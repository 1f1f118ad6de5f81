package jetstream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/natsbase"
	"github.com/syncgate/syncgate/internal/fault"
	"github.com/syncgate/syncgate/internal/natsname"
)

// How a channel's seq stays contiguous with publishers on many nodes:
//
// Each stored publication carries its channel seq (Sg-Seq) and epoch
// (Sg-Epoch) in headers. To publish, a node takes the channel's last stored
// message (stream seq S, channel seq n, epoch E) and sends seq n+1, epoch E
// with Nats-Expected-Last-Subject-Sequence: S. The stream leader stores it
// only if the subject's last message is still S, atomically with storing
// it; otherwise the node rereads the last message and tries again. So the
// messages of one subject, in stream order, carry seqs n, n+1, n+2...: the
// stream's per-subject order is the channel's order, and no two messages
// get one seq. A subject with no message (never used, or all its messages
// aged out) starts a new epoch at seq 1, which is the only way an epoch
// begins. Each node remembers the last (S, n, E) it wrote per channel, so
// a node publishing alone pays one round trip per message.

// pubState is what this node knows of a channel's last stored message.
type pubState struct {
	mu    sync.Mutex
	subj  string // the channel's history subject
	known bool
	sseq  uint64 // stream seq
	seq   uint64 // channel seq (0: an epoch marker)
	epoch string
	used  time.Time

	// order serializes this node's Publish calls on the channel (a
	// channel lock, so a wait can end with its context), in call order
	// as far as the callers' order is known: a publish waiting for its
	// ack may end in the outbox, or stored but not yet delivered here,
	// and a later one must not overtake it. waiting counts the calls
	// holding or waiting for it (raised under pubMu), so the state is
	// not evicted meanwhile.
	order   chan struct{}
	waiting atomic.Int32
	last    lastPub // order: the last publication Publish stored
}

// attempt is one conditional write whose outcome may be unknown (the
// connection dropped before the ack).
type attempt struct {
	expect uint64 // Nats-Expected-Last-Subject-Sequence
	seq    uint64
	epoch  string
	id     string
	was    string // Sg-Was, "" for none
}

// outboxEntry is a publish accepted during an outage.
type outboxEntry struct {
	ch   string
	data []byte
	id   string
	amb  *attempt // the last attempt, if it may have been stored
	was  string   // the outage position it was delivered under here (Sg-Was)
}

// maxConflicts bounds the rereads of one publish that keeps losing races
// to other nodes (each lost race means another publish was stored); the
// caller's deadline normally ends it first. A channel published at full
// speed from several nodes at once is shared unfairly: a node with a queue
// of publishes retries at once after each win, so it can win many races in
// a row, and a losing publish backs off (jittered, up to 10ms) after
// conflictBackoff lost races so the retries do not load the stream leader.
const (
	maxConflicts    = 100000
	conflictBackoff = 10
)

// drainWait is how long a publish waits for the outbox to empty after the
// connection came back, before it joins the outbox itself.
const drainWait = time.Second

var errNoProgress = errors.New("too many conflicting publishes in a row")

// errAckLost: the history stream elected a leader while a write waited
// for its ack. A write that reached the leader as it stepped down (or
// died) is never answered, and waiting for the caller's whole deadline
// held the channel's later publishes up for that long (5 s at the
// gateway's default); so the election ends the wait (see election), and
// Publish resolves the write like any interrupted one (stored, or sent
// again), else hands it to the outbox, which resolves it later. A leader
// that is only slow (paused, cut off) is still waited for.
var errAckLost = errors.New("the stream elected a leader while the write waited for its ack")

// election is ended (with errAckLost) when the history stream elects a
// leader, and then replaced.
type election struct {
	ctx context.Context
	end context.CancelCauseFunc
}

func newElection() *election {
	ctx, end := context.WithCancelCause(context.Background())
	return &election{ctx, end}
}

// dupWindow is the history stream's duplicate window: a write whose
// Nats-Msg-Id (the publication's id) the stream stored within it is not
// stored again (acked as a duplicate, naming the copy's stream seq). It
// backs the resolution of interrupted writes (resolve, errInFlight),
// which never sends a publication anew before reading that it is not
// stored: so only a write made while the first one is being stored can
// meet it, within a publish's deadline (the gateway's broker timeout,
// 5 s) plus one outbox flush (5 s) of the first. A minute is several
// times that, and costs the stream's servers a minute of ids: each
// replica keeps every id stored within the window in memory (2 minutes
// is the server's default; docs/brokers.md has the measured cost).
const dupWindow = time.Minute

// dupWindowOf is the duplicate window of a history kept for ttl (0: no
// limit): the server refuses a window longer than the stream's age
// limit, and a publication older than that is gone anyway.
func dupWindowOf(ttl time.Duration) time.Duration {
	if ttl > 0 {
		return min(dupWindow, ttl)
	}
	return dupWindow
}

// errInFlight: an interrupted write is neither stored nor refused yet.
// Resent as it was, it conflicts while nothing follows its expected seq:
// the stream leader still holds a write conditional on that seq, most
// likely the interrupted one, proposed but not committed (a stream that
// lost its quorum commits it once the quorum is back). A new attempt,
// conditional on whatever is last then, would store the publication a
// second time after it; so the write stays unresolved (in the outbox)
// and is resolved again later.
var errInFlight = errors.New("an interrupted write is still in flight at the stream leader")

// Publish implements brokers.Broker. See doc.go for outages.
func (b *Broker) Publish(ctx context.Context, ch string, data []byte) (brokers.Position, error) {
	if err := b.n.Check(ctx); err != nil {
		return brokers.Position{}, fmt.Errorf("jetstream: publish %s: %w", ch, err)
	}
	ctx, cancel := b.n.OpCtx(ctx)
	defer cancel()
	id := b.newID()
	drained := time.Now().Add(drainWait) // the longest wait for the outbox to drain
	st, err := b.lockOrder(ctx, ch)
	if err != nil {
		return brokers.Position{}, fmt.Errorf("jetstream: publish %s: %w", ch, err)
	}
	defer b.unlockOrder(st)
	// Under the lock (two publishes of ch waiting for the outbox to
	// drain would end their waits in any order), until a deadline set
	// before it (so that the waits of a queue of publishes overlap).
	if !b.offline() && b.outbox.Len() > 0 {
		b.waitDrained(ctx, drained)
	}
	if b.offline() || b.outbox.Len() > 0 {
		return b.enter(ctx, ch, st, data, id, nil)
	}
	s, amb, err := b.publish(ctx, ch, data, id, "", nil)
	if amb != nil && errors.Is(err, errAckLost) && ctx.Err() == nil {
		// Its leader went away: ask the new one whether the write was
		// stored, and send it again if not; if that fails too, the node
		// is in an outage (below).
		s, amb, err = b.publish(ctx, ch, data, id, "", amb)
	}
	if err == nil {
		st.last.keep(s, data)
		return s.pos, nil
	}
	if errors.Is(ctx.Err(), context.Canceled) && !errors.Is(err, natsbase.ErrDisconnected) {
		// The caller gave up (or the broker is closing): not accepted. It
		// may still have been stored, like any publish whose ack is lost.
		if !b.n.Running() {
			err = brokers.ErrClosed
		}
		return brokers.Position{}, fmt.Errorf("jetstream: publish %s: %w", ch, err)
	}
	b.noteErr(err)
	if amb != nil || natsbase.IsOutage(err) {
		return b.enter(ctx, ch, st, data, id, amb)
	}
	return brokers.Position{}, fmt.Errorf("jetstream: publish %s: %w", ch, err)
}

// enter puts a publication into the outbox (enqueue), once the channel's
// last one stored from this node has been delivered here. Until it is in,
// the flusher does not take an empty outbox for the end of the outage
// (entering): it would clear jsDown and sweep every channel, holding each
// channel's lock while it waits for the server, and enqueue would wait
// for that lock.
func (b *Broker) enter(ctx context.Context, ch string, st *pubState, data []byte, id string, amb *attempt) (brokers.Position, error) {
	b.entering.Add(1)
	defer b.entering.Add(-1)
	b.jsDown.Store(true) // publishes of other channels go to the outbox meanwhile
	b.n.Poke()
	b.lastDelivered(ctx, ch, &st.last)
	return b.enqueue(ch, data, id, amb)
}

// lockOrder takes ch's publish order (pubState.order), waiting at most
// until ctx ends: a publish ahead of it ends by its own deadline.
func (b *Broker) lockOrder(ctx context.Context, ch string) (*pubState, error) {
	b.pubMu.Lock()
	st := b.pubStateLocked(ch)
	st.waiting.Add(1)
	b.pubMu.Unlock()
	select {
	case st.order <- struct{}{}:
		return st, nil
	case <-ctx.Done():
		st.waiting.Add(-1)
		return nil, ctx.Err()
	}
}

func (b *Broker) unlockOrder(st *pubState) {
	<-st.order
	st.waiting.Add(-1)
}

// deliveredWait bounds how long an outage publication waits for the
// channel's last publication stored from this node to be delivered here.
const deliveredWait = 250 * time.Millisecond

// lastDelivered makes sure this node has handed on l, the last
// publication Publish stored on ch, before an outage publication is
// delivered here at once: its ack can reach the node before the stream's
// copy does (around a leader change the copy comes seconds late, with a
// sweep). It waits for the copy at most deliveredWait, then delivers l
// itself (deliverAcked).
func (b *Broker) lastDelivered(ctx context.Context, ch string, l *lastPub) {
	if l.pos.Epoch == "" {
		return
	}
	c := b.n.Channel(ch)
	if c == nil {
		return // not served here
	}
	deadline := time.Now().Add(deliveredWait)
	for wait := 100 * time.Microsecond; ; wait = min(2*wait, 10*time.Millisecond) {
		if t := c.tail.Load(); t != nil && (t.epoch != l.pos.Epoch || t.seq >= l.pos.Seq) {
			return
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			break
		}
		time.Sleep(wait)
	}
	b.deliverAcked(ch, l)
}

func (b *Broker) newID() string {
	return b.nodeID + "-" + strconv.FormatUint(b.idSeq.Add(1), 36)
}

// waitDrained waits (until deadline at most) for the flusher to empty
// the outbox.
func (b *Broker) waitDrained(ctx context.Context, deadline time.Time) {
	for wait := time.Millisecond; b.outbox.Len() > 0 && time.Now().Before(deadline) && ctx.Err() == nil; wait = min(2*wait, 20*time.Millisecond) {
		time.Sleep(wait)
	}
}

// pubState returns ch's state, creating it.
func (b *Broker) pubState(ch string) *pubState {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	return b.pubStateLocked(ch)
}

func (b *Broker) pubStateLocked(ch string) *pubState {
	st := b.pubs[ch]
	if st == nil {
		// ch may alias the caller's buffer: keep a copy.
		ch = strings.Clone(ch)
		st = &pubState{subj: b.histPre + natsname.Token(ch), order: make(chan struct{}, 1)}
		b.pubs[ch] = st
	}
	return st
}

// publish stores data as ch's next publication. It returns the attempt
// when its outcome is unknown (with the error): prev, when not nil, is
// such an attempt of the same publication, resolved first.
func (b *Broker) publish(ctx context.Context, ch string, data []byte, id, was string, prev *attempt) (stored, *attempt, error) {
	st := b.pubState(ch)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.used = time.Now()
	subj := st.subj
	if prev != nil && prev.was != was {
		// The first attempt was made before the publication got its
		// outage position: a resend carries it (at most one of the two
		// is stored).
		p := *prev
		p.was = was
		prev = &p
	}
	if prev != nil {
		// Only a message of another publication right after the
		// expected seq settles that prev was not stored; until then
		// no other attempt is made (see errInFlight).
		for try := 0; ; try++ {
			s, ok, retry, err := b.resolve(ctx, subj, prev)
			if err != nil {
				return stored{}, prev, err
			}
			if ok {
				st.known = false
				return s, nil, nil
			}
			if !retry {
				break // another publication follows: this one can never be stored
			}
			if try == 2 {
				return stored{}, prev, errInFlight
			}
			// Nothing after the expected seq: not stored (yet). Send it
			// again as it was; at most one of the two can be stored. A
			// conflict means a message follows the expected seq now or
			// a write conditional on it is still in flight (perhaps
			// prev itself): resolve again.
			s, a, err := b.send(ctx, st, subj, data, *prev)
			if !errors.Is(err, natsbase.ErrConflict) {
				return s, a, err
			}
		}
	}
	failed := uint64(0) // the expected seq that just lost a race, if any
	conflicts := 0
	for range maxConflicts {
		if !st.known {
			// After a lost race, the winner's message usually reached
			// this node already (when it serves ch): retry on that at
			// once rather than reread, or the winner, which needs no
			// reread, wins every race.
			if t := b.waitTail(ch, failed); t != nil {
				st.known, st.sseq, st.seq, st.epoch = true, t.sseq, t.seq, t.epoch
			} else if err := b.reload(ctx, st, subj); err != nil {
				return stored{}, nil, err
			}
		}
		a := attempt{expect: st.sseq, seq: st.seq + 1, epoch: st.epoch, id: id, was: was}
		if a.epoch == "" {
			a.seq, a.epoch = 1, b.firstEpoch(ctx, ch)
		}
		s, amb, err := b.send(ctx, st, subj, data, a)
		if errors.Is(err, natsbase.ErrConflict) {
			failed = a.expect + 1 // +1: 0 is a valid expected seq
			if conflicts++; conflicts > conflictBackoff {
				d := time.Duration(rand.N(min(time.Millisecond<<min(conflicts-conflictBackoff, 4), 10*time.Millisecond)))
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return stored{}, nil, ctx.Err()
				}
			}
			continue
		}
		return s, amb, err
	}
	return stored{}, nil, errNoProgress
}

// send makes one conditional write and updates st. The attempt comes back
// when the write may or may not have been stored.
func (b *Broker) send(ctx context.Context, st *pubState, subj string, data []byte, a attempt) (stored, *attempt, error) {
	id := []string{a.id}
	m := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{
		hdrSeq:    []string{strconv.FormatUint(a.seq, 10)},
		hdrEpoch:  []string{a.epoch},
		hdrID:     id,
		hdrMsgID:  id, // the stream's dedupe: see dupWindow
		hdrExpect: []string{strconv.FormatUint(a.expect, 10)},
	}}
	if a.was != "" {
		m.Header[hdrWas] = []string{a.was}
	}
	actx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(b.election.Load().ctx, func() { cancel(errAckLost) })
	sseq, err := natsbase.Publish(actx, b.n.Conn().Conn, m)
	stop()
	cancel(nil)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(actx), errAckLost) {
		err = fmt.Errorf("%w: %w", errAckLost, err)
	}
	switch {
	case err == nil:
		st.known, st.sseq, st.seq, st.epoch = true, sseq, a.seq, a.epoch
		return stored{pos: brokers.Position{Seq: a.seq, Epoch: a.epoch}, sseq: sseq, prev: a.expect}, nil, nil
	case errors.Is(err, natsbase.ErrConflict):
		st.known = false
		return stored{}, nil, err
	case errors.Is(err, natsbase.ErrDuplicate):
		// An earlier attempt of this publication is stored, at sseq,
		// perhaps at another position than a's: read it there.
		st.known = false
		if s, ok := b.storedAt(ctx, subj, sseq, a.id); ok {
			return s, nil, nil
		}
		return stored{}, &a, fmt.Errorf("%w at stream seq %d, unread", err, sseq)
	case notSent(err):
		return stored{}, nil, err
	case natsbase.IsConnErr(err) || natsbase.IsUnavailable(err) || errors.Is(err, context.Canceled):
		// Outcome unknown (a stream without quorum answers 503 to a
		// write its leader may already have proposed): resolved from the
		// outbox, never refused, never dropped.
		st.known = false
		return stored{}, &a, err
	}
	return stored{}, nil, err
}

// waitTail returns the last stored message of ch this node has seen once
// it is newer than failed-1 (the expected seq that lost a race), or nil.
// The stream sends the winner's message to this node before it answers the
// losing write, so it is normally here already or within microseconds; nil
// after a millisecond or so, or when this node does not serve ch.
func (b *Broker) waitTail(ch string, failed uint64) *tail {
	if failed == 0 {
		return nil
	}
	for range 20 {
		t := b.tailOf(ch)
		if t == nil {
			return nil
		}
		if t.sseq+1 > failed {
			return t
		}
		time.Sleep(50 * time.Microsecond)
	}
	return nil
}

// notSent reports errors that prove the request reached no stream.
func notSent(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrMaxPayload)
}

// reload reads the channel's last stored message from the stream leader.
func (b *Broker) reload(ctx context.Context, st *pubState, subj string) error {
	last, err := natsbase.GetLast(ctx, b.n.Conn().Conn, b.cfg.Stream, subj)
	switch {
	case errors.Is(err, natsbase.ErrNotFound):
		st.known, st.sseq, st.seq, st.epoch = true, 0, 0, ""
		return nil
	case err != nil:
		return err
	}
	st.known, st.sseq = true, last.Seq
	st.seq, st.epoch = seqOf(last.Header)
	return nil
}

// resolve finds out whether an attempt was stored. Only the first message
// of the subject after a.expect can be it (the write was conditional on
// a.expect being the last). retry: nothing is there, so it was not stored
// (yet): send the same attempt again.
func (b *Broker) resolve(ctx context.Context, subj string, a *attempt) (s stored, ok, retry bool, err error) {
	next, err := natsbase.GetNext(ctx, b.n.Conn().Conn, b.cfg.Stream, subj, a.expect+1)
	switch {
	case errors.Is(err, natsbase.ErrNotFound):
		// Nothing after the expected seq. If the message the write
		// was conditional on is gone too (the stream was re-created,
		// e.g. a memory-storage server restarted, or the channel's
		// history expired), the write can never be stored: it was
		// not, and is made anew. Otherwise it may still be in flight.
		if a.expect > 0 {
			last, lerr := natsbase.GetLast(ctx, b.n.Conn().Conn, b.cfg.Stream, subj)
			switch {
			case errors.Is(lerr, natsbase.ErrNotFound):
				return s, false, false, nil
			case lerr != nil:
				return s, false, false, lerr
			case last.Seq < a.expect:
				return s, false, false, nil
			}
		}
		return s, false, true, nil
	case err != nil:
		return s, false, false, err
	}
	if next.Header.Get(hdrID) != a.id {
		return s, false, false, nil
	}
	seq, epoch := seqOf(next.Header)
	return stored{pos: brokers.Position{Seq: seq, Epoch: epoch}, sseq: next.Seq, prev: a.expect}, true, false, nil
}

// storedAt reads where publication id is stored: at stream seq sseq (the
// stream's duplicate ack named it); ok false when it cannot be read there
// (then its write is resolved like an interrupted one). The stream seq of
// the subject's message before it is not known: prev is sseq itself, which
// never passes for it (deliverAcked then waits for the stream's copy).
func (b *Broker) storedAt(ctx context.Context, subj string, sseq uint64, id string) (stored, bool) {
	sm, err := natsbase.GetNext(ctx, b.n.Conn().Conn, b.cfg.Stream, subj, sseq)
	if err != nil || sm.Seq != sseq || sm.Header.Get(hdrID) != id {
		return stored{}, false
	}
	seq, epoch := seqOf(sm.Header)
	return stored{pos: brokers.Position{Seq: seq, Epoch: epoch}, sseq: sseq, prev: sseq}, true
}

// seqOf reads the channel seq and epoch of a stored message.
func seqOf(h nats.Header) (uint64, string) {
	seq, _ := strconv.ParseUint(h.Get(hdrSeq), 10, 64)
	return seq, h.Get(hdrEpoch)
}

// enqueue accepts a publication into the outbox, hands it to this node's
// subscribers at once, and returns its outage position: a seq in an outage
// epoch of the channel that no history serves. When the outbox drains the
// publication is stored with its real position and delivered again under
// it; the epoch change tells clients to resync (see doc.go).
func (b *Broker) enqueue(ch string, data []byte, id string, amb *attempt) (brokers.Position, error) {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	ch = strings.Clone(ch) // may alias the caller's buffer
	lp := b.local[ch]
	if lp == nil {
		// The outage epoch names the last position delivered here, so a
		// client holding outage positions can resume from it on any node
		// (brokers.ProvisionalBase).
		lp = &brokers.Position{Epoch: brokers.ProvisionalEpoch(newEpoch(), b.deliveredPos(ch))}
		b.local[ch] = lp
	}
	pos := brokers.Position{Seq: lp.Seq + 1, Epoch: lp.Epoch}
	// With amb, an attempt whose outcome is unknown may be stored
	// already, without Sg-Was; a resend carries it (see inflight.go).
	e := outboxEntry{ch: ch, data: append([]byte(nil), data...), id: id, amb: amb, was: wasHeader(pos)}
	if fault.On(fault.JetStreamRefuseOutage) || b.outbox.Full() {
		return brokers.Position{}, fmt.Errorf("jetstream: publish %s: %w: server unreachable and outbox full", ch, brokers.ErrUnavailable)
	}
	// The flusher may have found the outbox empty, and cleared jsDown,
	// since a failed publish set it: publishes go to the outbox (behind
	// this one) until it is flushed.
	b.jsDown.Store(true)
	lp.Seq++
	// Delivered here before it is pushed: once in the outbox the flusher
	// may store it at once, and its stored copy reach this node's
	// subscribers ahead of this outage copy (TestInFlightOrder/Acked saw
	// that: applied twice). There is room: pushes are serialized by outMu
	// and the flusher only removes entries.
	if amb == nil {
		b.deliverLocal(ch, pos, data)
	} else {
		b.deliverInFlight(ch, pos, data, id, amb.expect)
	}
	b.outbox.Push(e)
	b.n.Poke()
	return pos, nil
}

// deliveredPos is the last position this node delivered on ch, zero when
// it serves no such channel or delivered nothing yet.
func (b *Broker) deliveredPos(ch string) brokers.Position {
	c := b.n.Channel(ch)
	if c == nil {
		return brokers.Position{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ready || c.epoch == "" {
		return brokers.Position{}
	}
	return brokers.Position{Seq: c.seq, Epoch: c.epoch}
}

// wasOf reads a stored publication's Sg-Was header.
func wasOf(h nats.Header) brokers.Position {
	v := h.Get(hdrWas)
	if v == "" {
		return brokers.Position{}
	}
	num, epoch, ok := strings.Cut(v, ":")
	seq, err := strconv.ParseUint(num, 10, 64)
	if !ok || err != nil || epoch == "" {
		return brokers.Position{}
	}
	return brokers.Position{Seq: seq, Epoch: epoch}
}

// deliverLocal hands an outage publication to the Handler if this node
// serves ch.
func (b *Broker) deliverLocal(ch string, pos brokers.Position, data []byte) {
	b.n.DeliverLocal(ch, func(c *channel, h brokers.Handler) {
		c.mu.Lock()
		if c.active && c.ready {
			h.HandlePublication(c.name, brokers.Publication{Seq: pos.Seq, Epoch: pos.Epoch, Data: data})
		}
		c.mu.Unlock()
	})
}

// flusher sends the outbox when the server is back, recovers after a
// reconnect (streams, gaps) and forgets idle publish states.
//
// It checks the streams every Config.CheckEvery, and at once when a
// request found one missing, and re-creates what is gone (see repair.go).
//
// It sweeps every subscribed channel (checks it against the stream and
// fills what is missing) after a reconnect, after an outage of the stream
// (once the outbox is flushed), after the stream elects a new leader (a
// message stored around a leader change may never be republished, and
// with no later message on its channel no node would see the gap), and
// after a delivery queue overflowed (the message dropped may be a
// channel's last).
func (b *Broker) flusher() {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastEvict, lastCheck := time.Now(), time.Now()
	var lastWarn time.Time
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
		// A subscription that dropped messages (its delivery queue was
		// full) may have lost a channel's last message, which no later
		// message would reveal as a gap: check every channel against the
		// stream.
		if n := b.n.Conn().Dropped(); n != b.dropped {
			b.dropped = n
			b.needSweep.Store(true)
		}
		if n := b.n.Conn().Stats().Reconnects; n != b.reconnects {
			// The streams may be gone (a memory stream, its server
			// restarted) or created anew: checkStreams re-creates or
			// notices them, with a read while they are there.
			if err := b.checked(b.checkStreams()); err != nil {
				if time.Since(lastWarn) >= 10*time.Second {
					lastWarn = time.Now()
					b.n.Log().Warn("jetstream: recovering after reconnect", "err", err)
				}
				continue
			}
			b.reconnects = n
			b.needSweep.Store(true)
		}
		// At most every 250ms when asked (publishes in an outage poke the
		// flusher often), else every CheckEvery.
		if since := time.Since(lastCheck); b.needRepair.Load() && since >= 250*time.Millisecond || since >= b.cfg.CheckEvery {
			lastCheck = time.Now()
			if err := b.checked(b.checkStreams()); err != nil {
				if time.Since(lastWarn) >= 10*time.Second {
					lastWarn = time.Now()
					b.n.Log().Warn("jetstream: checking the streams", "err", err)
				}
				// Go on: flushing fails by itself while a stream is
				// missing, and works if only the check cannot.
			}
		}
		if b.jsDown.Load() {
			b.needSweep.Store(true)
		}
		if !b.flushOutbox() {
			continue
		}
		if b.needSweep.Swap(false) && !b.sweep() {
			b.needSweep.Store(true)
		}
		if time.Since(lastEvict) > time.Minute {
			b.evictPubStates()
			// A copy older than the history's age limit is gone.
			b.inflight.evict(time.Now().Add(-b.cfg.HistoryTTL))
			lastEvict = time.Now()
		}
	}
}

// recoverStreams makes sure the streams exist (a memory stream is gone
// after its server restarted) and, when the history stream was created
// anew, resets what the node knows of stream positions.
func (b *Broker) recoverStreams() error {
	ctx, cancel := b.checkCtx()
	defer cancel()
	changed, err := b.ensureHistory(ctx)
	if err != nil {
		return err
	}
	if err := b.n.Presence().Ensure(ctx, b.js); err != nil {
		return err
	}
	if changed {
		b.n.Log().Warn("jetstream: the history stream was created anew; its history is lost")
		b.resetPositions()
	}
	return nil
}

// flushOutbox stores the outbox's publications, oldest first. It reports
// whether the outbox is empty.
func (b *Broker) flushOutbox() bool {
	for {
		e, ok := b.outbox.Peek()
		if !ok {
			break
		}
		if fault.On(fault.JetStreamOutboxDropped) {
			b.outbox.Pop()
			continue
		}
		ctx, cancel := b.flusherCtx(5 * time.Second)
		_, amb, err := b.publish(ctx, e.ch, e.data, e.id, e.was, e.amb)
		ended := ctx.Err() != nil // timed out, or ended by an election: not refused
		cancel()
		if err != nil {
			b.noteErr(err)
			if amb != nil {
				e.amb = amb
				b.outbox.Replace(e)
			}
			if amb != nil || natsbase.IsOutage(err) || ended || b.n.Closing() {
				return false
			}
			b.n.Log().Error("jetstream: dropping an outbox publication the server refuses", "channel", e.ch, "err", err)
		}
		b.inflight.stored(e.id, time.Now()) // or refused: its entry, if any, may expire
		b.outbox.Pop()
	}
	b.outMu.Lock()
	empty := b.outbox.Len() == 0 && b.entering.Load() == 0
	if empty {
		clear(b.local)
		b.jsDown.Store(false)
	}
	b.outMu.Unlock()
	return empty
}

// evictPubStates forgets publish states unused for a minute.
func (b *Broker) evictPubStates() {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	for ch, st := range b.pubs {
		if st.waiting.Load() == 0 && st.mu.TryLock() {
			if time.Since(st.used) > time.Minute {
				delete(b.pubs, ch)
			}
			st.mu.Unlock()
		}
	}
}
