package gateway

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/fault"
)

// The hub maps channels to this node's subscribers. It holds exactly one
// broker subscription per channel however many local subscribers there are,
// and keeps it for unsubLinger after the last one leaves, so reconnect churn
// does not turn into subscribe/unsubscribe storms on the broker.
//
// The broker calls HandlePublication for a channel from one goroutine at a
// time, in seq order; the hub encodes the msg frame once and queues the same
// bytes on every subscriber.

const hubShards = 64

type hub struct {
	nchans atomic.Int64 // channels with a broker subscription (metric)
	srv    *Server
	broker brokers.Broker
	seed   maphash.Seed
	linger time.Duration
	shards [hubShards]hubShard
}

type hubShard struct {
	mu    sync.RWMutex
	chans map[string]*hubChannel
}

type hubChannel struct {
	name string
	subs []*sub

	ready chan struct{} // closed when the broker subscription is settled
	err   error         // the broker's Subscribe error, set before ready closes

	lingerGen     uint64
	lingerTimer   *time.Timer
	unsubscribing chan struct{} // non-nil while the broker unsubscribe runs

	// Owned by the broker's delivery goroutine for this channel: the
	// current real epoch and provisional epoch (brokers.IsProvisional).
	epoch     string
	provEpoch string
}

// sub is one connection's subscription to one channel.
//
// Until live is set, publications are kept in buf: the catch-up merge (see
// catchup.go) replays history first, then what was buffered, deduplicated by
// seq, and then flips live. After that, deliver drops any seq <= lastSeq, so
// a publication seen in history is never delivered twice.
type sub struct {
	c  *conn
	ch string

	live atomic.Bool
	// overflow and removed are guarded by mu (below); they sit here
	// beside live to pack sub into the 112-byte size class.
	overflow bool
	// removed is set (under mu) once the subscription is taken out of the
	// hub: a catch-up still running sends nothing more. stop cancels it.
	removed bool
	// inflight is set (under c.smu) while the `sub` that made this
	// subscription is still talking to the broker (hub add, presence
	// join, catch-up); unsubAsked records a server-side unsubscribe that
	// landed meanwhile, carried out by settle once the sub is done.
	inflight   bool
	unsubAsked bool
	lastSeq    uint64 // written under mu before live; then only by delivery
	// provSeq is the watermark of provisional publications (a node's own
	// publishes during a broker outage), kept apart from lastSeq: they
	// interleave with real ones and must not reset its dedupe.
	provSeq uint64

	mu       sync.Mutex
	buf      []bufferedPub
	bufBytes int
	// bufLimit bounds bufBytes (0: only maxBuffered counts); a streamed
	// catch-up sets it so its final merge fits in the client's queue.
	bufLimit int
	stop     func()

	idx int32 // position in hubChannel.subs, guarded by the shard lock
	// binary: the connection takes binary messages (set before the sub
	// is added, never changed): a binary publication reaches it as one.
	// Beside idx (an int32) to keep sub in the 112-byte size class.
	binary bool
}

type bufferedPub struct {
	seq   uint64
	epoch string
	frame []byte
}

// errTooManyChannels: the node holds server.max_channels channels already.
var errTooManyChannels = errors.New("too many channels on this node")

// reserve counts one more channel unless the node holds
// server.max_channels already: each costs a broker subscription and state
// on the node, and anonymous clients can name as many channels as they
// like.
func (h *hub) reserve() bool {
	limit := int64(h.srv.cfg.Server.MaxChannels)
	for {
		n := h.nchans.Load()
		if limit > 0 && n >= limit {
			return false
		}
		if h.nchans.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// maxBuffered bounds the publications kept for one subscriber while its
// catch-up runs; past it the subscribe fails with unavailable.
const maxBuffered = 10000

func newHub(srv *Server, b brokers.Broker) *hub {
	h := &hub{srv: srv, broker: b, seed: maphash.MakeSeed(), linger: time.Second}
	for i := range h.shards {
		h.shards[i].chans = make(map[string]*hubChannel)
	}
	return h
}

func (h *hub) shard(ch string) *hubShard {
	return &h.shards[maphash.String(h.seed, ch)%hubShards]
}

// add registers s (not yet live) and makes sure this node is subscribed to
// the channel on the broker. When add returns nil, every publication that
// the broker orders after this point reaches s.
func (h *hub) add(ctx context.Context, s *sub) error {
	sh := h.shard(s.ch)
	for {
		sh.mu.Lock()
		hc := sh.chans[s.ch]
		if hc != nil && hc.unsubscribing != nil {
			wait := hc.unsubscribing
			sh.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		creator := hc == nil
		if creator {
			if !h.reserve() {
				sh.mu.Unlock()
				return errTooManyChannels
			}
			hc = &hubChannel{name: s.ch, ready: make(chan struct{})}
			sh.chans[s.ch] = hc
		}
		if hc.lingerTimer != nil {
			hc.lingerTimer.Stop()
			hc.lingerTimer = nil
			hc.lingerGen++
		}
		s.idx = int32(len(hc.subs))
		hc.subs = append(hc.subs, s)
		sh.mu.Unlock()

		if creator {
			err := h.broker.Subscribe(ctx, s.ch)
			sh.mu.Lock()
			hc.err = err
			if err != nil && sh.chans[s.ch] == hc {
				delete(sh.chans, s.ch)
				h.nchans.Add(-1)
			}
			close(hc.ready)
			sh.mu.Unlock()
		} else {
			select {
			case <-hc.ready:
			case <-ctx.Done():
				h.remove(s)
				return ctx.Err()
			}
		}
		if hc.err == nil {
			h.srv.metrics.subscriptions.Inc()
		}
		return hc.err
	}
}

// remove unregisters s. After the last subscriber the broker subscription
// lingers briefly, then is dropped.
func (h *hub) remove(s *sub) { h.removeThen(s, nil) }

// removeThen is remove that runs then (when not nil) under s.mu right
// after marking s removed, before s's catch-up is stopped: a frame then
// queues goes out before anything the catch-up sends when it stops (the
// `unsubscribed` reply before the error answering a `sub` whose streamed
// catch-up had not started, docs/protocol.md).
func (h *hub) removeThen(s *sub, then func()) {
	s.mu.Lock()
	s.removed = true
	stop := s.stop
	s.stop = nil
	if then != nil {
		then()
	}
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	sh := h.shard(s.ch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	hc := sh.chans[s.ch]
	if hc == nil || int(s.idx) >= len(hc.subs) || hc.subs[s.idx] != s {
		return
	}
	h.srv.metrics.subscriptions.Dec()
	last := len(hc.subs) - 1
	moved := hc.subs[last]
	hc.subs[s.idx] = moved
	moved.idx = s.idx
	hc.subs[last] = nil
	hc.subs = hc.subs[:last]
	if len(hc.subs) == 0 && hc.err == nil {
		hc.subs = nil
		hc.lingerGen++
		gen := hc.lingerGen
		hc.lingerTimer = time.AfterFunc(h.linger, func() { h.expire(hc, gen) })
	}
}

func (h *hub) expire(hc *hubChannel, gen uint64) {
	sh := h.shard(hc.name)
	sh.mu.Lock()
	if sh.chans[hc.name] != hc || hc.lingerGen != gen || len(hc.subs) > 0 {
		sh.mu.Unlock()
		return
	}
	hc.lingerTimer = nil
	hc.unsubscribing = make(chan struct{})
	sh.mu.Unlock()

	ctx, cancel := context.WithTimeout(h.srv.ctx, h.srv.brokerTimeout)
	if err := h.broker.Unsubscribe(ctx, hc.name); err != nil {
		h.srv.log.Debug("broker unsubscribe failed", "channel", hc.name, "err", err)
	}
	cancel()

	sh.mu.Lock()
	if sh.chans[hc.name] == hc {
		delete(sh.chans, hc.name)
		h.nchans.Add(-1)
	}
	close(hc.unsubscribing)
	sh.mu.Unlock()
}

// stopTimers cancels lingering unsubscribes (shutdown: the broker is closed
// right after, which drops its subscriptions anyway).
func (h *hub) stopTimers() {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, hc := range sh.chans {
			if hc.lingerTimer != nil {
				hc.lingerTimer.Stop()
				hc.lingerTimer = nil
				hc.lingerGen++
			}
		}
		sh.mu.Unlock()
	}
}

// HandlePublication implements brokers.Handler.
func (h *hub) HandlePublication(ch string, p brokers.Publication) {
	if ch == ControlChannel {
		h.srv.handleControl(p.Data)
		return
	}
	sh := h.shard(ch)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	hc := sh.chans[ch]
	if hc == nil || len(hc.subs) == 0 {
		return
	}
	// Once per publication per node, before anything of it is encoded: the
	// payload is untrusted (payload.go). A dropped one leaves a seq gap,
	// like a message lost in transit.
	data, ok := h.srv.brokerPubData(ch, &p, payloadKindPublication)
	if !ok {
		return
	}
	prov := brokers.IsProvisional(p.Epoch)
	switch {
	case prov && p.Epoch != hc.provEpoch:
		// A new provisional epoch: every live subscriber follows it from
		// seq 1, also one that went live holding back the last one
		// (mergeState.liveProvSeq).
		for _, s := range hc.subs {
			if s.live.Load() {
				s.provSeq = 0
			}
		}
		hc.provEpoch = p.Epoch
	case !prov && p.Epoch != hc.epoch:
		if hc.epoch != "" {
			// History was lost and restarted: seqs start over, so the
			// dedupe watermark does too.
			for _, s := range hc.subs {
				if s.live.Load() {
					s.lastSeq = 0
				}
			}
		}
		hc.epoch = p.Epoch
	}
	fb := newFrameBuilder(64 + len(ch) + len(p.Epoch) + len(p.Was.Epoch) + len(data))
	fb.b = appendMsg(fb.b, ch, p.Seq, p.Epoch, p.Was, data)
	frame := fb.finish(ws.OpText)
	// A binary publication gets its binary frame too, once, when some
	// subscriber here takes binary messages (binary.go).
	var bframe []byte
	if from, text, bin := splitPubBin(data); bin {
		for _, s := range hc.subs {
			if s.binary {
				var head [320]byte
				bframe = binFrame(appendMsgHead(head[:0], ch, p.Seq, p.Epoch, p.Was), from, text)
				break
			}
		}
	}
	h.srv.metrics.fanouts.Inc()
	h.srv.metrics.deliveries.Add(float64(len(hc.subs)))
	for _, s := range hc.subs {
		if s.binary && bframe != nil {
			s.deliver(ch, p.Seq, p.Epoch, prov, bframe)
			continue
		}
		s.deliver(ch, p.Seq, p.Epoch, prov, frame)
	}
}

func (s *sub) deliver(ch string, seq uint64, epoch string, prov bool, frame []byte) {
	if !s.live.Load() {
		if fault.On(fault.CatchUpGap) {
			return
		}
		s.mu.Lock()
		if !s.live.Load() {
			switch {
			case s.overflow:
			case len(s.buf) >= maxBuffered, s.bufLimit > 0 && s.bufBytes+len(frame) > s.bufLimit:
				// The catch-up drops the buffer and reads on from history.
				s.overflow = true
				s.buf, s.bufBytes = nil, 0
			default:
				s.buf = append(s.buf, bufferedPub{seq, epoch, frame})
				s.bufBytes += len(frame)
			}
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
	if s.accept(seq, prov) {
		s.c.sendFrame(event{"msg", ch, seq, epoch}, frame)
	}
}

// accept is the live-path dedupe: a seq at or below the last one delivered
// (seen in history during catch-up, or redelivered) is dropped, real and
// provisional seqs each against their own watermark. Seq 0 means the
// backend keeps no order numbers; everything passes.
func (s *sub) accept(seq uint64, prov bool) bool {
	if seq == 0 {
		return true
	}
	w := &s.lastSeq
	if prov {
		w = &s.provSeq
	}
	if seq <= *w && !fault.On(fault.LiveDedupeOff) {
		return false
	}
	*w = seq
	return true
}

// HandlePresence implements brokers.Handler.
func (h *hub) HandlePresence(ch string, t brokers.PresenceEventType, m brokers.Member) {
	if h.srv.cfg.Presence.NoJoinLeave {
		return
	}
	sh := h.shard(ch)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	hc := sh.chans[ch]
	if hc == nil || len(hc.subs) == 0 {
		return
	}
	// Big rooms: above the limit, join/leave would cost O(N) frames per
	// event and O(N^2) per wave of joins; clients ask for `presence`.
	if lim := h.srv.cfg.Presence.JoinLeaveLimit; lim > 0 && len(hc.subs) > lim {
		return
	}
	if !validMember(m) {
		h.srv.brokerMembers(ch, []brokers.Member{m}) // counts and logs it
		return
	}
	var buf [512]byte
	join := t == brokers.Join
	frame := textFrame(appendPresenceEvent(buf[:0], join, ch, m.User, m.Client))
	ev := event{op: "leave"}
	if join {
		ev.op = "join"
	}
	for _, s := range hc.subs {
		if s.c.id == m.Client {
			continue
		}
		if s.live.Load() {
			s.c.sendFrame(ev, frame)
			continue
		}
		// Its catch-up sends `subscribed` and makes it live under s.mu:
		// a subscriber whose reply is out but not yet marked live (the
		// client may act on the reply at once) must not miss the event.
		// One still catching up misses it, and lists presence itself.
		s.mu.Lock()
		if s.live.Load() {
			s.c.sendFrame(ev, frame)
		}
		s.mu.Unlock()
	}
}

// members lists this node's live subscribers of every channel, for the
// presence refresh.
func (h *hub) members(fn func(ch string, ms []brokers.Member)) {
	var ms []brokers.Member
	var names []string
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		names = names[:0]
		for name := range sh.chans {
			names = append(names, name)
		}
		sh.mu.RUnlock()
		for _, name := range names {
			ms = ms[:0]
			sh.mu.RLock()
			if hc := sh.chans[name]; hc != nil {
				for _, s := range hc.subs {
					if s.live.Load() {
						ms = append(ms, brokers.Member{User: s.c.user, Client: s.c.id})
					}
				}
			}
			sh.mu.RUnlock()
			if len(ms) > 0 {
				fn(name, ms)
			}
		}
	}
}
