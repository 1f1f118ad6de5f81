package jetstream

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
)

// How a channel's publications stay in publish order on the publishing
// node when an outage starts while one is in flight (pubState.order makes
// the later ones wait for it):
//
//   - Acked, but its copy has not reached this node (waitDelivered gave up:
//     around a leader change it may come only with a sweep, seconds later):
//     it is delivered here at once under its real position, from the copy
//     of its data Publish kept (pubState.last), when it directly follows
//     what this node delivered last; the stream's copy, when it comes, is
//     accounted for already. Then the later ones are delivered under their
//     outage positions.
//   - Outcome unknown: it is delivered here at once under its outage
//     position, like the later ones, unless its copy may have reached this
//     node already. Its first write may have been stored without Sg-Was, so
//     the node remembers its id (inflightWas): a stored copy without Sg-Was
//     whose id is there gets Publication.Was all the same, live, from a
//     fill or from Since, and a client that applied it does not apply it
//     again. A resend carries Sg-Was as usual.

// lastPub is the last publication Publish stored on a channel, for
// deliverAcked.
type lastPub struct {
	pos        brokers.Position
	sseq, prev uint64 // its stream seq, and that of the subject's message before it
	data       []byte // a copy (nil when larger than maxKeptData); reused
}

// maxKeptData bounds the copy of a channel's last publication kept for
// deliverAcked: a larger one is not delivered early (its copy is awaited,
// as before).
const maxKeptData = 64 << 10

// keep records a publication Publish stored (pubState.order held).
func (l *lastPub) keep(s stored, data []byte) {
	l.pos, l.sseq, l.prev = s.pos, s.sseq, s.prev
	if len(data) > maxKeptData {
		l.data = nil
		return
	}
	l.data = append(l.data[:0], data...)
}

// stored is where a publication was stored: its position, its stream seq
// and the stream seq of the subject's message before it.
type stored struct {
	pos        brokers.Position
	sseq, prev uint64
}

// deliverAcked delivers l, acked but not yet delivered here, under its
// real position when it directly follows what this node delivered on ch;
// the stream's copy is then skipped (its stream seq is accounted for).
func (b *Broker) deliverAcked(ch string, l *lastPub) {
	if l.pos.Epoch == "" || l.data == nil {
		return
	}
	b.n.DeliverLocal(ch, func(c *channel, h brokers.Handler) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.active || !c.ready || c.lastStream != l.prev || c.epoch != l.pos.Epoch || c.seq+1 != l.pos.Seq {
			return
		}
		c.acceptPubLocked(h, l.sseq, "", brokers.Publication{Seq: l.pos.Seq, Epoch: l.pos.Epoch, Data: l.data})
	})
}

// deliverInFlight delivers, under its outage position pos, a publication
// whose write's outcome is unknown (expect: the stream seq it was
// conditional on), unless this node accounted for a message after expect
// already that may be that write's copy (the last one, right after
// expect, is another's: then the write was refused). It records the id
// first, so that a copy stored without Sg-Was is delivered with Was = pos.
func (b *Broker) deliverInFlight(ch string, pos brokers.Position, data []byte, id string, expect uint64) {
	b.n.DeliverLocal(ch, func(c *channel, h brokers.Handler) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.active || !c.ready {
			return
		}
		if c.lastStream > expect {
			if t := c.tail.Load(); t == nil || t.prev != expect || t.id == "" || t.id == id {
				return
			}
		}
		if !b.inflight.add(id, pos) {
			return
		}
		h.HandlePublication(c.name, brokers.Publication{Seq: pos.Seq, Epoch: pos.Epoch, Data: data})
	})
}

// inflightWas maps the ids of publications delivered here under an outage
// position while a write of theirs without Sg-Was may have been stored, to
// that position. An entry stays while its publication is in the outbox
// and for the history's age limit after it is stored (no replay can bring
// the copy later); at most maxInflightWas entries (past it, such a
// publication is not delivered under its outage position).
type inflightWas struct {
	n  atomic.Int32 // len(m), so that the delivery path skips the lock when empty
	mu sync.Mutex
	m  map[string]inflightEntry
}

type inflightEntry struct {
	pos    brokers.Position
	stored time.Time // zero while in the outbox
}

const maxInflightWas = 10000

func (t *inflightWas) add(id string, pos brokers.Position) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= maxInflightWas {
		return false
	}
	if t.m == nil {
		t.m = make(map[string]inflightEntry)
	}
	t.m[id] = inflightEntry{pos: pos}
	t.n.Store(int32(len(t.m)))
	return true
}

// stored notes that the outbox stored id's publication at now.
func (t *inflightWas) stored(id string, now time.Time) {
	if t.n.Load() == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.m[id]; ok {
		e.stored = now
		t.m[id] = e
	}
}

// evict forgets the entries stored before cutoff.
func (t *inflightWas) evict(cutoff time.Time) {
	if t.n.Load() == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, e := range t.m {
		if !e.stored.IsZero() && e.stored.Before(cutoff) {
			delete(t.m, id)
		}
	}
	t.n.Store(int32(len(t.m)))
}

// was is a stored publication's Was: its Sg-Was header or, without one,
// the outage position its id was delivered under here.
func (t *inflightWas) was(h nats.Header) brokers.Position {
	if w := wasOf(h); w.Epoch != "" || t.n.Load() == 0 {
		return w
	}
	id := h.Get(hdrID)
	t.mu.Lock()
	e, ok := t.m[id]
	t.mu.Unlock()
	if !ok {
		return brokers.Position{}
	}
	return e.pos
}

// wasHeader is the Sg-Was value of an outage position.
func wasHeader(pos brokers.Position) string {
	return strconv.FormatUint(pos.Seq, 10) + ":" + pos.Epoch
}
