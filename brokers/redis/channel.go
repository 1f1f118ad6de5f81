package redis

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncgate/syncgate/brokers"
)

// chanState is the delivery state of one channel this node subscribed.
// All fields are guarded by mu, except ready, readyClosed and fillQueued
// (shard.mu).
//
// The node delivers each channel contiguously: it remembers the last
// position it handed to the Handler (epoch, seq) and, when a live
// publication does not follow it (a pub/sub message was lost, the
// connection was down, the epoch changed), it buffers live publications
// and fills the gap from history first (see fill.go).
type chanState struct {
	name string

	mu      sync.Mutex
	removed bool // unsubscribed: deliver nothing more
	// owner is the shard serving the channel; it changes when a cluster
	// slot moves to another master (topology.go). Only the owner's
	// goroutines deliver; refill: moved, to be filled once its new
	// subscription is confirmed.
	owner  *shard
	refill bool

	// The last real position delivered. known is false until the first
	// delivery or Since. provisional marks a position learnt from Since
	// (the lowest seen) rather than from a delivery: it is where a fill
	// starts after a reconnect, but live publications are not checked
	// against it.
	epoch       string
	seq         uint64
	known       bool
	provisional bool

	// While filling, live publications wait in buf (at most maxBuffered;
	// overflow drops them, and the fill reads them from history).
	filling    bool
	fillQueued bool
	buf        []livePub
	overflow   bool

	// pruneAt is when a member of this channel is due to expire (unix ns,
	// local clock), 0 when none is known: the shard's filler prunes the
	// channel then. Atomic: the filler scans it without the lock.
	pruneAt atomic.Int64

	ready       chan struct{} // closed when the subscription is active
	readyClosed bool

	// empty is the epoch Since handed out while Redis held none for the
	// channel (nothing is stored for it: a subscriber to a channel nobody
	// publishes on costs Redis nothing), nil when none; the writer gives
	// it to the channel's first publication. Written under mu, read
	// without. seen counts what forgets it: a delivery, a fill (something
	// may have been missed), a Since that found a stored position.
	empty atomic.Pointer[string]
	seen  uint64

	// ackedEpoch and ackedSeq are the last real position this node's
	// writer got back for a publication of the channel (the Publish
	// answer), nil when none. Until the node delivers up to it (its
	// pub/sub copy is on the way), a publication the node answers locally
	// must not be delivered locally: it would overtake that one, which
	// reaches the subscribers later, from history (see answerLocally).
	// Atomic: written by the writer without mu.
	ackedEpoch atomic.Pointer[string]
	ackedSeq   atomic.Uint64
}

// noteAcked records pos, a real position the writer got for a publication
// of the channel. It allocates only when the epoch changes.
func (cs *chanState) noteAcked(pos brokers.Position) {
	if e := cs.ackedEpoch.Load(); e == nil || *e != pos.Epoch {
		epoch := strings.Clone(pos.Epoch) // do not pin the reply
		cs.ackedEpoch.Store(&epoch)
	}
	cs.ackedSeq.Store(pos.Seq)
}

// ackedAhead reports whether this node acknowledged a publication of the
// channel it has not delivered: the last acknowledged position is past
// the last delivered one, or in another epoch (then it may be ahead; when
// it is an older one, holding is merely cautious). cs.mu is held.
func (cs *chanState) ackedAhead() bool {
	e := cs.ackedEpoch.Load()
	if e == nil {
		return false
	}
	return !cs.known || cs.provisional || *e != cs.epoch || cs.ackedSeq.Load() > cs.seq
}

// forgetEmpty drops the empty-channel epoch. cs.mu is held.
func (cs *chanState) forgetEmpty() {
	cs.seen++
	if cs.empty.Load() != nil {
		cs.empty.Store(nil)
	}
}

// livePub is a publication received from pub/sub.
type livePub struct {
	epoch string
	seq   uint64
	was   brokers.Position
	data  []byte
}

// maxBuffered bounds the live publications kept per channel while a fill
// runs.
const maxBuffered = 10000

func newChanState(ch string, owner *shard) *chanState {
	return &chanState{name: strings.Clone(ch), owner: owner, ready: make(chan struct{})}
}

// noteSince records a position a Since returned: the lowest one becomes
// the fill start while nothing was delivered yet.
func (cs *chanState) noteSince(pos brokers.Position) {
	switch {
	case !cs.known:
		cs.epoch, cs.seq, cs.known, cs.provisional = pos.Epoch, pos.Seq, true, true
	case cs.provisional && pos.Epoch == cs.epoch && pos.Seq < cs.seq:
		cs.seq = pos.Seq
	}
}

// deliver hands p to h and records it as the last position. cs.mu is held.
func (cs *chanState) deliver(h brokers.Handler, epoch string, seq uint64, was brokers.Position, data []byte) {
	cs.forgetEmpty()
	if epoch != cs.epoch {
		cs.epoch = strings.Clone(epoch) // do not pin a whole payload
	}
	cs.seq, cs.known, cs.provisional = seq, true, false
	h.HandlePublication(cs.name, brokers.Publication{Seq: seq, Epoch: cs.epoch, Data: data, Was: was})
}

// live handles a publication received from pub/sub. It returns true when a
// fill must be queued. cs.mu is held.
func (cs *chanState) live(h brokers.Handler, epoch string, seq uint64, was brokers.Position, data string) (needFill bool) {
	if cs.filling {
		cs.bufferLive(epoch, seq, was, data)
		return false
	}
	switch {
	case !cs.known || cs.provisional:
		cs.deliver(h, epoch, seq, was, []byte(data))
		return false
	case epoch == cs.epoch:
		if seq <= cs.seq {
			return false // already delivered (a fill got it from history)
		}
		if seq == cs.seq+1 {
			cs.deliver(h, epoch, seq, was, []byte(data))
			return false
		}
	case seq == 1:
		// A new epoch from its start: nothing of it was missed.
		cs.deliver(h, epoch, seq, was, []byte(data))
		return false
	}
	// A gap, or a new epoch joined in its middle: fill from history.
	cs.filling = true
	cs.bufferLive(epoch, seq, was, data)
	return true
}

func (cs *chanState) bufferLive(epoch string, seq uint64, was brokers.Position, data string) {
	if len(cs.buf) >= maxBuffered {
		cs.overflow = true
		clear(cs.buf)
		cs.buf = cs.buf[:0]
		return
	}
	cs.buf = append(cs.buf, livePub{epoch: strings.Clone(epoch), seq: seq, was: cloneWas(was), data: []byte(data)})
}

// fillResult is what one history read for a fill returned.
type fillResult struct {
	from  uint64 // the since the read used
	epoch string // the epoch the fill expected (cs.epoch when queried)
	mark  int    // len(cs.buf) when queried: older buffered entries predate the read
	limit int
	pubs  []brokers.Publication
	pos   brokers.Position
}

// fillOutcome tells the filler what to do next with a channel.
type fillOutcome uint8

const (
	fillDone  fillOutcome = iota
	fillAgain             // read more history
	fillReset             // history went backwards: start a new epoch, then again
)

// applyFill delivers what a history read found, then the buffered live
// publications that follow it. cs.mu is held.
func (cs *chanState) applyFill(h brokers.Handler, r *fillResult) fillOutcome {
	pos := r.pos
	switch {
	case !cs.known:
		// Nothing was delivered and no Since gave a start: begin here.
		cs.epoch, cs.seq, cs.known = pos.Epoch, pos.Seq, true
	case pos.Epoch == cs.epoch:
		if pos.Seq < cs.seq {
			return fillReset
		}
		for _, p := range r.pubs {
			if p.Seq > cs.seq {
				cs.deliver(h, p.Epoch, p.Seq, p.Was, p.Data)
			}
		}
		if len(r.pubs) == r.limit && r.limit > 0 && cs.seq < pos.Seq {
			return fillAgain
		}
		// What history no longer holds (trimmed, expired) cannot be
		// filled: continue after it.
		cs.seq = pos.Seq
	default:
		// The epoch changed (history lost, or reset).
		if r.from > 0 || r.epoch != cs.epoch {
			cs.epoch, cs.seq = strings.Clone(pos.Epoch), 0
			return fillAgain // read the new epoch from its start
		}
		cs.epoch, cs.seq = strings.Clone(pos.Epoch), 0
		for _, p := range r.pubs {
			cs.deliver(h, p.Epoch, p.Seq, p.Was, p.Data)
		}
		if len(r.pubs) == r.limit && r.limit > 0 && cs.seq < pos.Seq {
			return fillAgain
		}
		cs.seq = pos.Seq
	}
	cs.provisional = false
	if cs.overflow {
		cs.overflow = false
		clear(cs.buf)
		cs.buf = cs.buf[:0]
		return fillAgain
	}
	buf := cs.buf
	for i, m := range buf {
		if m.epoch == cs.epoch {
			if m.seq <= cs.seq {
				continue
			}
			if m.seq == cs.seq+1 {
				cs.deliver(h, m.epoch, m.seq, m.was, m.data)
				continue
			}
		} else if i < r.mark {
			continue // an older epoch's publication, superseded by the read
		}
		// Another gap, or a newer epoch: read again, keeping the rest.
		n := copy(buf, buf[i:])
		clear(buf[n:])
		cs.buf = buf[:n]
		return fillAgain
	}
	clear(buf)
	cs.buf = buf[:0]
	if cap(cs.buf) > 64 {
		cs.buf = nil
	}
	cs.filling = false
	return fillDone
}

// notePrune makes the channel due for pruning at t at the latest.
func (cs *chanState) notePrune(t time.Time) {
	at := t.UnixNano()
	for {
		cur := cs.pruneAt.Load()
		if cur != 0 && cur <= at {
			return
		}
		if cs.pruneAt.CompareAndSwap(cur, at) {
			return
		}
	}
}

// giveUpFill ends a fill that cannot be done (history unreadable): the
// buffered publications are delivered as they are. cs.mu is held.
func (cs *chanState) giveUpFill(h brokers.Handler) {
	for _, m := range cs.buf {
		if m.epoch != cs.epoch || m.seq > cs.seq {
			cs.deliver(h, m.epoch, m.seq, m.was, m.data)
		}
	}
	clear(cs.buf)
	cs.buf = cs.buf[:0]
	cs.filling, cs.overflow = false, false
}

// cloneWas copies was's epoch, which may alias a payload.
func cloneWas(was brokers.Position) brokers.Position {
	was.Epoch = strings.Clone(was.Epoch)
	return was
}
