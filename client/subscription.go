package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// EventType tells what an Event is.
type EventType int

const (
	// Message is a `msg`: Seq, Epoch, From, Data.
	Message EventType = iota + 1
	// Join and Leave are presence changes: User, Client.
	Join
	Leave
	// Recovered: after a reconnect the subscription caught up from
	// history; the Missed messages were delivered just before it as
	// Message events. Seq/Epoch are the position now.
	Recovered
	// Reset: the server could not replay what was missed (history gone or
	// epoch changed). Reload the state from your source of truth; live
	// messages follow from Seq+1.
	Reset
	// Gap: a Message arrived whose Seq skips Missed messages of the same
	// epoch (it should not happen on backends with history). The Message
	// follows.
	Gap
)

func (t EventType) String() string {
	switch t {
	case Message:
		return "message"
	case Join:
		return "join"
	case Leave:
		return "leave"
	case Recovered:
		return "recovered"
	case Reset:
		return "reset"
	case Gap:
		return "gap"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one thing that happened on a subscribed channel.
type Event struct {
	Type    EventType
	Channel string
	Seq     uint64
	Epoch   string
	From    string          // Message: the publisher's user id
	Data    json.RawMessage // Message: the published JSON value
	Bin     []byte          // Message: the bytes of a binary publication (Data is empty)
	User    string          // Join, Leave
	Client  string          // Join, Leave
	Missed  int             // Recovered, Gap
}

// Position is a place in a channel's history.
type Position struct {
	Seq   uint64 `json:"seq"`
	Epoch string `json:"epoch"`
}

// SubscribeOptions are the optional settings of Subscribe.
type SubscribeOptions struct {
	// Since, when set, asks for every message after it (`sub` with
	// `since`): a Recovered event follows the replayed messages, or a Reset
	// event when they are gone.
	Since *Position
}

// Subscription is a channel subscription. It stays subscribed across
// reconnects until Unsubscribe or Close.
type Subscription struct {
	c  *Client
	ch string

	// Guarded by c.mu.
	seq        uint64
	epoch      string
	known      bool        // seq/epoch hold a position to resubscribe from
	real       Position    // the last real position delivered (dedupe)
	prov       provisional // the provisional positions delivered (epoch "~...")
	live       bool        // subscribed on conn; messages flow
	conn       *wsConn     // the connection the last `sub` went out on
	subscribed chan struct{}
	firstDone  bool
	firstErr   error
	// catching: a streamed catch-up is under way (`subscribed` said
	// "more"); missed counts the messages it delivered so far.
	catching bool
	missed   int

	qmu   sync.Mutex
	q     []Event
	wake  chan struct{} // closed and replaced on every push
	ended error
}

// Subscribe subscribes to ch and returns once the server confirmed it.
func (c *Client) Subscribe(ctx context.Context, ch string, opts ...SubscribeOptions) (*Subscription, error) {
	s := &Subscription{c: c, ch: ch, subscribed: make(chan struct{}), wake: make(chan struct{})}
	for _, o := range opts {
		if o.Since != nil {
			s.seq, s.epoch, s.known = o.Since.Seq, o.Since.Epoch, true
			if isProvisional(o.Since.Epoch) {
				s.prov.note(*o.Since)
			} else {
				s.real = *o.Since
			}
		}
	}
	c.mu.Lock()
	if c.closeErr != nil {
		err := c.closeErr
		c.mu.Unlock()
		return nil, err
	}
	if _, ok := c.subs[ch]; ok {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrAlreadySubscribed, ch)
	}
	c.subs[ch] = s
	cn := c.cn
	var cmd []byte
	if cn != nil {
		cmd = c.subCmdLocked(cn, s)
	}
	c.mu.Unlock()
	if cmd != nil {
		// On failure the connection is gone; the supervisor resubscribes.
		_ = c.writeRaw(cn, cmd)
	}
	select {
	case <-s.subscribed:
		c.mu.Lock()
		err := s.firstErr
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return s, nil
	case <-ctx.Done():
		s.drop(ctx.Err())
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, c.closedErr()
	}
}

// subCmdLocked builds the `sub` of s for cn and registers its reply
// handler. c.mu is held.
func (c *Client) subCmdLocked(cn *wsConn, s *Subscription) []byte {
	id := c.nextID.Add(1)
	cmd := map[string]any{"op": "sub", "id": id, "ch": s.ch}
	withSince := s.known
	if withSince {
		cmd["since"] = map[string]any{"seq": s.seq, "epoch": s.epoch}
		// Take a large catch-up in pages (docs/protocol.md): the server
		// paces them by how fast this client reads.
		cmd["stream"] = true
	}
	s.conn, s.live = cn, false
	cn.addPending(id, &pending{reply: make(chan *frame, 1), onReply: func(f *frame) { c.onSubscribed(s, cn, withSince, f) }})
	b, _ := json.Marshal(cmd)
	return b
}

// onSubscribed handles the reply to a `sub`, in the reader goroutine, so
// the missed messages go out before any live one.
func (c *Client) onSubscribed(s *Subscription, cn *wsConn, withSince bool, f *frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs[s.ch] != s || s.conn != cn {
		return
	}
	if f.Op == "error" {
		err := &ServerError{Code: f.Code, Message: f.Message}
		delete(c.subs, s.ch)
		s.firstDoneLocked(err)
		s.end(err)
		return
	}
	s.catching, s.missed = false, 0
	if withSince && f.Recovered != nil && *f.Recovered {
		n := 0
		for i := range f.Pubs {
			if s.deliverLocked(&f.Pubs[i]) {
				n++
			}
		}
		if f.More {
			// The rest of the history follows as msg frames, then
			// caught_up (caughtUpLocked).
			s.catching, s.missed = true, n
			s.known, s.live = true, true
			s.firstDoneLocked(nil)
			return
		}
		s.real = Position{Seq: f.Seq, Epoch: f.Epoch}
		s.seq, s.epoch = f.Seq, f.Epoch
		s.push(Event{Type: Recovered, Channel: s.ch, Seq: s.seq, Epoch: s.epoch, Missed: n})
	} else {
		s.seq, s.epoch = f.Seq, f.Epoch
		s.real = Position{Seq: f.Seq, Epoch: f.Epoch}
		if withSince {
			s.push(Event{Type: Reset, Channel: s.ch, Seq: s.seq, Epoch: s.epoch})
		}
	}
	s.known, s.live = true, true
	s.firstDoneLocked(nil)
}

// caughtUpLocked ends a streamed catch-up: Recovered after the replayed
// messages, or Reset when the server could not finish it from history
// (live messages follow from Seq+1). c.mu is held.
func (s *Subscription) caughtUpLocked(f *frame) {
	s.catching = false
	if f.Recovered != nil && *f.Recovered {
		s.push(Event{Type: Recovered, Channel: s.ch, Seq: s.seq, Epoch: s.epoch, Missed: s.missed})
		return
	}
	s.seq, s.epoch = f.Seq, f.Epoch
	s.real = Position{Seq: f.Seq, Epoch: f.Epoch}
	s.push(Event{Type: Reset, Channel: s.ch, Seq: s.seq, Epoch: s.epoch})
}

func (s *Subscription) firstDoneLocked(err error) {
	if !s.firstDone {
		s.firstDone, s.firstErr = true, err
		close(s.subscribed)
	}
}

// deliverLocked queues a msg unless it is a duplicate: a seq not above the
// last delivered in the same epoch (real and provisional positions are
// tracked apart: they interleave during a broker outage), or a real one
// whose `was` names a provisional position delivered already (see
// docs/protocol.md). c.mu is held.
func (s *Subscription) deliverLocked(f *frame) bool {
	if f.Seq != 0 && isProvisional(f.Epoch) {
		if s.prov.has(Position{Seq: f.Seq, Epoch: f.Epoch}) {
			return false
		}
		s.prov.note(Position{Seq: f.Seq, Epoch: f.Epoch})
		s.seq, s.epoch, s.known = f.Seq, f.Epoch, true
		s.push(Event{Type: Message, Channel: s.ch, Seq: f.Seq, Epoch: f.Epoch, From: f.From, Data: f.Data, Bin: f.Bin})
		return true
	}
	if f.Seq != 0 && f.Epoch == s.real.Epoch && f.Seq <= s.real.Seq {
		return false
	}
	if f.Was != nil && s.prov.has(*f.Was) {
		s.real = Position{Seq: f.Seq, Epoch: f.Epoch}
		s.seq, s.epoch, s.known = f.Seq, f.Epoch, true
		return false
	}
	if f.Seq != 0 && f.Epoch != "" && f.Epoch == s.real.Epoch && f.Seq > s.real.Seq+1 {
		s.push(Event{Type: Gap, Channel: s.ch, Seq: f.Seq, Epoch: f.Epoch, Missed: int(f.Seq - s.real.Seq - 1)})
	}
	if f.Seq != 0 {
		s.real = Position{Seq: f.Seq, Epoch: f.Epoch}
		s.seq, s.epoch, s.known = f.Seq, f.Epoch, true
	}
	s.push(Event{Type: Message, Channel: s.ch, Seq: f.Seq, Epoch: f.Epoch, From: f.From, Data: f.Data, Bin: f.Bin})
	return true
}

// Channel is the subscribed channel's name.
func (s *Subscription) Channel() string { return s.ch }

// Position is the last seq and epoch delivered (or, before any message,
// the channel's position when subscribed).
func (s *Subscription) Position() Position {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return Position{Seq: s.seq, Epoch: s.epoch}
}

// Next returns the next event, waiting for one until ctx is done. After
// Unsubscribe or Close it returns the events already queued, then
// ErrUnsubscribed or ErrClosed (or the error that ended the client).
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	for {
		s.qmu.Lock()
		if len(s.q) > 0 {
			e := s.q[0]
			s.q[0] = Event{}
			s.q = s.q[1:]
			s.qmu.Unlock()
			return e, nil
		}
		if s.ended != nil {
			err := s.ended
			s.qmu.Unlock()
			return Event{}, err
		}
		wake := s.wake
		s.qmu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

func (s *Subscription) push(e Event) {
	s.qmu.Lock()
	if s.ended == nil {
		s.q = append(s.q, e)
		close(s.wake)
		s.wake = make(chan struct{})
	}
	s.qmu.Unlock()
}

func (s *Subscription) end(err error) {
	s.qmu.Lock()
	if s.ended == nil {
		s.ended = err
		close(s.wake)
		s.wake = make(chan struct{})
	}
	s.qmu.Unlock()
}

// Unsubscribe stops the subscription: `unsub` on the live connection (none
// is needed while reconnecting). Next then returns the queued events and
// ErrUnsubscribed.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	c := s.c
	c.mu.Lock()
	if c.subs[s.ch] != s {
		c.mu.Unlock()
		return nil
	}
	delete(c.subs, s.ch)
	cn := c.cn
	sent := s.conn == cn && cn != nil
	c.mu.Unlock()
	s.end(ErrUnsubscribed)
	if !sent {
		return nil
	}
	_, err := c.callOn(ctx, cn, map[string]any{"op": "unsub", "ch": s.ch}, nil)
	if errors.Is(err, ErrConnectionLost) {
		return nil // the next connection does not resubscribe it
	}
	return err
}

// drop forgets a subscription whose Subscribe gave up; an `unsub` (no
// reply awaited) undoes a `sub` already sent.
func (s *Subscription) drop(err error) {
	c := s.c
	c.mu.Lock()
	if c.subs[s.ch] != s {
		c.mu.Unlock()
		return
	}
	delete(c.subs, s.ch)
	cn := c.cn
	sent := s.conn == cn && cn != nil
	c.mu.Unlock()
	s.end(err)
	if sent {
		_ = c.write(cn, map[string]any{"op": "unsub", "ch": s.ch})
	}
}

// isProvisional reports whether epoch is a provisional epoch (a node's own
// publishes during a broker outage; docs/protocol.md).
func isProvisional(epoch string) bool { return strings.HasPrefix(epoch, "~") }

// provisional remembers the last seq delivered in each of the few latest
// provisional epochs (one per broker outage).
type provisional []Position

const maxProvisional = 16

// has reports whether p was delivered: its epoch is known and its seq at
// or below the last delivered there.
func (ps provisional) has(p Position) bool {
	for _, q := range ps {
		if q.Epoch == p.Epoch {
			return p.Seq <= q.Seq
		}
	}
	return false
}

// note records p as delivered.
func (ps *provisional) note(p Position) {
	for i, q := range *ps {
		if q.Epoch == p.Epoch {
			(*ps)[i].Seq = max(q.Seq, p.Seq)
			return
		}
	}
	if len(*ps) == maxProvisional {
		*ps = (*ps)[1:]
	}
	*ps = append(*ps, p)
}
