package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/redisbase"
)

// Shard states.
const (
	// shardDown: the pub/sub connection is not verified. Publications go
	// to the outbox and are delivered locally under a node-local epoch;
	// live pub/sub messages are ignored (history fills the gap later).
	shardDown int32 = iota
	// shardRecovering: pub/sub is back and verified; the outbox is being
	// replayed. New publications queue behind it.
	shardRecovering
	// shardUp: normal operation.
	shardUp
)

func stateName(st int32) string {
	switch st {
	case shardDown:
		return "down"
	case shardRecovering:
		return "recovering"
	}
	return "up"
}

// shard is one Redis server (or cluster master) and this node's
// connections to it: a command client (pooled, pipelined) and one pub/sub
// connection that multiplexes every channel of the shard.
//
// Goroutines, all owned by Broker.wg:
//   - run: reads pub/sub, delivers live publications and presence events,
//     and reconnects (with jittered backoff) when the connection fails;
//   - writer: sends publications in ordered pipelines, keeps the outbox
//     while the shard is down and replays it when it is back;
//   - control: batches SUBSCRIBE/UNSUBSCRIBE;
//   - filler: fills gaps from history, prunes expired presence members and
//     probes the pub/sub connection.
//
// Lock order: mu, then chmu, then a chanState's mu.
type shard struct {
	b    *Broker
	idx  int
	name string // for errors and logs

	cmdRef atomic.Pointer[cmdRef] // the command client: cmd()
	// newPubSub returns a fresh, unconnected PubSub on this shard's
	// current server (it resolves the master with Sentinel or Cluster).
	newPubSub func(ctx context.Context) (*goredis.PubSub, error)
	// scripter is where scripts are loaded (the shard's master).
	scripter func(ctx context.Context) (goredis.Scripter, error)
	sharded  bool                   // SSUBSCRIBE (Cluster)
	probe    atomic.Pointer[string] // this node's probe channel on this shard

	// Cluster only (topology.go): the master serving the shard's slots
	// (guarded by mu), how many slots the route table gives it (0: the
	// shard is retired and waits on reviveWake), pauses of its writer.
	master     string
	topoGen    uint64 // guarded by mu: bumped when master or probe change
	slotCount  atomic.Int32
	reviveWake chan struct{}
	pauseCh    chan *writerPause
	started    atomic.Bool // its goroutines run

	state atomic.Int32 // written under mu

	mu sync.Mutex
	ps *goredis.PubSub // the verified connection; nil while down
	// connecting is the connection being set up, so close can close it.
	connecting *goredis.PubSub
	downCh     chan struct{} // closed when the shard goes down
	closed     bool
	// dirty channels changed subscription since the last batch; remote
	// is what the current connection is subscribed to.
	dirty  map[string]struct{}
	remote map[string]struct{}
	// unsubSent counts this node's SUNSUBSCRIBEs not yet confirmed, so
	// that their confirmations are not taken for the server dropping a
	// channel (Cluster).
	unsubSent map[string]int
	// pending publications, not yet taken by the writer.
	pending []*pubReq
	outbox  []*pubReq
	// outboxWaiters: the outbox holds requests whose callers still wait
	// (queued while recovering); they are answered locally if the shard
	// goes down again.
	outboxWaiters bool
	// local positions handed out while down, per channel; a new map (so
	// new local epochs) for each outage, kept until the outbox is replayed
	// (a failure during the replay continues the same epochs).
	local map[string]*localChan
	fillQ []*chanState

	chmu  sync.RWMutex
	chans map[string]*chanState

	writerWake, controlWake, fillWake chan struct{}
	pongs                             chan string
	lastProbe                         atomic.Uint64 // last probe token received
	probeSeq                          atomic.Uint64
	// clockOffset is the master's clock (TIME) minus this node's, in ms,
	// measured at connect: the publish script refuses a publication that
	// runs after the node stopped waiting for it (publishDeadline).
	clockOffset atomic.Int64
	downSince   time.Time // guarded by mu
	// refusals counts the outages in a row caused by a cluster slot in
	// migration (TRYAGAIN, ASK: the publication was not applied), so the
	// reconnects back off until the slot has its new master. Guarded by
	// mu; reset when the shard is up again.
	refusals int
}

func newShard(b *Broker, idx int, name string, cmd goredis.UniversalClient) *shard {
	sh := &shard{
		b:           b,
		idx:         idx,
		name:        name,
		sharded:     b.cfg.Cluster,
		downCh:      make(chan struct{}),
		dirty:       make(map[string]struct{}),
		remote:      make(map[string]struct{}),
		unsubSent:   make(map[string]int),
		chans:       make(map[string]*chanState),
		writerWake:  make(chan struct{}, 1),
		controlWake: make(chan struct{}, 1),
		fillWake:    make(chan struct{}, 1),
		pongs:       make(chan string, 4),
		reviveWake:  make(chan struct{}, 1),
		pauseCh:     make(chan *writerPause, 1),
	}
	sh.setCmd(cmd)
	probe := b.probeName("")
	sh.probe.Store(&probe)
	sh.scripter = func(context.Context) (goredis.Scripter, error) { return cmd, nil }
	sh.state.Store(shardDown)
	return sh
}

// start launches the shard's goroutines; the shard is connected.
func (sh *shard) start() {
	wg := &sh.b.wg
	sh.started.Store(true)
	wg.Go(sh.run)
	wg.Go(sh.writer)
	wg.Go(sh.control)
	wg.Go(sh.filler)
}

// close closes the pub/sub connections so the reader returns. Broker.ctx
// is canceled already.
func (sh *shard) close() {
	sh.mu.Lock()
	sh.closed = true
	ps, conn := sh.ps, sh.connecting
	sh.ps, sh.connecting = nil, nil
	sh.mu.Unlock()
	for _, p := range []*goredis.PubSub{ps, conn} {
		if p != nil {
			_ = p.Close()
		}
	}
}

// failWaiters completes every publication still waiting, after the
// goroutines exited.
func (sh *shard) failWaiters(err error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, q := range [][]*pubReq{sh.pending, sh.outbox} {
		for _, r := range q {
			r.complete(brokers.Position{}, err)
		}
	}
	sh.b.outboxLen.Add(-int64(len(sh.outbox)))
	sh.pending, sh.outbox = nil, nil
}

func (sh *shard) stopping() bool { return sh.b.ctx.Err() != nil }

// lookup returns the state of ch if this node subscribed it.
func (sh *shard) lookup(ch string) *chanState {
	sh.chmu.RLock()
	cs := sh.chans[ch]
	sh.chmu.RUnlock()
	return cs
}

// subscribe registers ch and queues its SUBSCRIBE; the returned state's
// ready closes when the subscription is active.
// sh.mu is held (Broker.lockedShard); subscribe unlocks it.
func (sh *shard) subscribe(ch string) *chanState {
	sh.chmu.Lock()
	cs := sh.chans[ch]
	if cs == nil {
		cs = newChanState(ch, sh)
		sh.chans[cs.name] = cs
		sh.dirty[cs.name] = struct{}{}
	}
	sh.chmu.Unlock()
	if sh.state.Load() == shardDown {
		// Subscribed at reconnect; the fill then covers what was missed.
		sh.markReady(cs)
	}
	sh.mu.Unlock()
	kick(sh.controlWake)
	return cs
}

// unsubscribe drops ch (only if its state is cs, when cs is not nil).
// Delivery stops before it returns. sh.mu is held (Broker.lockedShard);
// unsubscribe unlocks it.
func (sh *shard) unsubscribe(ch string, only *chanState) {
	sh.chmu.Lock()
	cs := sh.chans[ch]
	if cs == nil || (only != nil && cs != only) {
		sh.chmu.Unlock()
		sh.mu.Unlock()
		return
	}
	delete(sh.chans, ch)
	sh.dirty[cs.name] = struct{}{}
	sh.chmu.Unlock()
	sh.markReady(cs) // a concurrent Subscribe of the same state returns
	sh.mu.Unlock()
	cs.mu.Lock()
	cs.removed = true
	cs.buf = nil
	cs.mu.Unlock()
	kick(sh.controlWake)
}

// markReady closes cs.ready once and schedules a first presence check.
// sh.mu is held.
func (sh *shard) markReady(cs *chanState) {
	if !cs.readyClosed {
		cs.readyClosed = true
		close(cs.ready)
	}
}

// fail takes the shard down after err (a connection error, a failed probe,
// a demoted master): the pub/sub connection is closed, so run reconnects.
// It is a no-op when the shard is down already.
func (sh *shard) fail(err error) {
	sh.mu.Lock()
	if sh.state.Load() == shardDown {
		sh.mu.Unlock()
		return
	}
	sh.state.Store(shardDown)
	sh.downSince = time.Now()
	if sh.sharded && (goredis.HasErrorPrefix(err, "TRYAGAIN") || goredis.HasErrorPrefix(err, "ASK")) {
		sh.refusals++
	}
	ps := sh.ps
	sh.ps = nil
	close(sh.downCh)
	sh.downCh = make(chan struct{})
	if sh.local == nil {
		// A new outage. One that interrupts the recovery from the last
		// keeps its local epochs: their seqs continue, so a flapping
		// connection does not open an epoch per publish.
		sh.local = make(map[string]*localChan)
	}
	sh.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	if !sh.stopping() {
		sh.b.cfg.Logger.Warn("redis shard down", "shard", sh.name, "err", err)
	}
	kick(sh.writerWake)
	kick(sh.controlWake)
}

// measureClock sets clockOffset from the master's TIME.
func (sh *shard) measureClock(ctx context.Context) error {
	t0 := time.Now()
	ts, err := sh.cmd().Time(ctx).Result()
	if err != nil {
		return err
	}
	mid := t0.Add(time.Since(t0) / 2)
	sh.clockOffset.Store(ts.UnixMilli() - mid.UnixMilli())
	return nil
}

// publishDeadline is the master's time (ms) after which a pipeline sent
// now is no longer waited for: a command the server runs later (it was
// paused, or the network held it back) is refused by the publish script
// instead of storing and fanning out a publication whose node has already
// handed it to the outbox for replay (maybe to another master).
func (sh *shard) publishDeadline() int64 {
	return time.Now().UnixMilli() + sh.clockOffset.Load() + sh.b.cfg.ReadTimeout.Milliseconds()
}

// run is the reader: it connects, reads until the connection fails, and
// reconnects with jittered exponential backoff, until Close.
func (sh *shard) run() {
	sh.mu.Lock()
	ps := sh.ps
	sh.mu.Unlock()
	for attempt := 0; ; {
		if ps != nil {
			err := sh.receive(ps)
			if sh.stopping() {
				return
			}
			sh.fail(err)
			ps = nil
			sh.mu.Lock()
			if sh.refusals > 0 {
				// A slot in migration refused a publication: reconnecting
				// at once would be refused again.
				attempt = min(sh.refusals, 3)
			}
			sh.mu.Unlock()
		}
		if attempt > 0 && !sh.sleep(backoff(attempt, sh.b.cfg.ReconnectMin, sh.b.cfg.ReconnectMax)) {
			return
		}
		attempt++
		if err := sh.connect(sh.b.ctx); err != nil {
			if sh.stopping() {
				return
			}
			if errors.Is(err, errRetired) {
				// Its slots moved to other masters: wait until one
				// comes back (rebalance kicks reviveWake).
				select {
				case <-sh.reviveWake:
				case <-sh.b.ctx.Done():
					return
				}
				attempt = 0
				continue
			}
			sh.b.cfg.Logger.Debug("redis reconnect failed", "shard", sh.name, "attempt", attempt, "err", err)
			continue
		}
		attempt = 0
		sh.mu.Lock()
		ps = sh.ps
		sh.mu.Unlock()
	}
}

// backoff is the wait before reconnection attempt n (n >= 1): exponential
// from lo to hi, with the upper half jittered so nodes do not reconnect in
// lockstep.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until Close; it reports whether to go on.
func (sh *shard) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-sh.b.ctx.Done():
		return false
	}
}

var errProbe = errors.New("probe not received")

// connect makes a fresh pub/sub connection, subscribes every channel of
// the shard and the probe channel, and proves the connection receives
// what is published (a probe published through the command client comes
// back). Then the shard turns recovering: every channel is queued for a
// fill from history, and the writer replays the outbox.
func (sh *shard) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, sh.b.cfg.DialTimeout+2*sh.b.cfg.ProbeTimeout+sh.b.cfg.ReadTimeout)
	defer cancel()
	if sh.b.topo != nil {
		// A reconnect may follow a topology change: follow the slot map
		// first (this shard's master, channels moved in or out).
		if err := sh.b.rebalance(ctx, sh); err != nil {
			return fmt.Errorf("cluster slots: %w", err)
		}
		if sh.slotCount.Load() == 0 {
			return errRetired
		}
	}
	sh.mu.Lock()
	gen := sh.topoGen
	sh.mu.Unlock()
	probe := *sh.probe.Load()
	if err := sh.loadScripts(ctx); err != nil {
		return fmt.Errorf("load scripts: %w", err)
	}
	if err := sh.measureClock(ctx); err != nil {
		return fmt.Errorf("time: %w", err)
	}
	ps, err := sh.newPubSub(ctx)
	if err != nil {
		return err
	}
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		_ = ps.Close()
		return brokers.ErrClosed
	}
	sh.connecting = ps
	sh.mu.Unlock()
	ok := false
	defer func() {
		sh.mu.Lock()
		if sh.connecting == ps {
			sh.connecting = nil
		}
		sh.mu.Unlock()
		if !ok {
			_ = ps.Close()
		}
	}()

	sh.chmu.RLock()
	names := make([]string, 0, len(sh.chans)+1)
	for ch := range sh.chans {
		names = append(names, ch)
	}
	sh.chmu.RUnlock()
	if err := sh.sendSubs(ctx, ps, names, nil, true); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	token := strconv.FormatUint(sh.probeSeq.Add(1), 10)
	if err := ps.Ping(ctx, "r"+token); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if err := sh.awaitOnConnect(ctx, ps, func(m any) bool {
		p, ok := m.(*goredis.Pong)
		return ok && p.Payload == "r"+token
	}); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if err := sh.publishProbe(ctx, token); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	if err := sh.awaitOnConnect(ctx, ps, func(m any) bool {
		msg, ok := m.(*goredis.Message)
		return ok && msg.Channel == probe && msg.Payload == "x"+token
	}); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	n, _ := strconv.ParseUint(token, 10, 64)
	sh.lastProbe.Store(n)

	// Verified: go live. Everything delivered from here is real; local
	// delivery stops, and every channel refills from its last position.
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		return brokers.ErrClosed
	}
	if sh.topoGen != gen {
		// Another shard's rebalance moved this one's master or probe
		// while it connected: connect again, to the right master.
		sh.mu.Unlock()
		return errTopology
	}
	ok = true
	sh.ps = ps
	clear(sh.unsubSent)
	clear(sh.remote)
	for _, ch := range names {
		sh.remote[ch] = struct{}{}
	}
	wasDown := !sh.downSince.IsZero()
	sh.state.Store(shardRecovering)
	sh.chmu.RLock()
	for _, cs := range sh.chans {
		cs.mu.Lock()
		if !cs.removed {
			cs.filling, cs.refill = true, false
			sh.queueFillLocked(cs)
		}
		cs.mu.Unlock()
	}
	sh.chmu.RUnlock()
	for ch := range sh.dirty {
		if _, have := sh.remote[ch]; have == (sh.chans[ch] != nil) {
			delete(sh.dirty, ch)
			if cs := sh.chans[ch]; cs != nil {
				sh.markReady(cs)
			}
		}
	}
	if wasDown {
		sh.b.stats.reconnects.Add(1)
		sh.b.cfg.Logger.Info("redis shard reconnected", "shard", sh.name, "down_for", time.Since(sh.downSince).Round(time.Millisecond), "outbox", len(sh.outbox))
	}
	sh.downSince = time.Time{}
	sh.mu.Unlock()
	kick(sh.writerWake)
	kick(sh.controlWake)
	kick(sh.fillWake)
	return nil
}

// awaitOnConnect reads ps until want accepts a message, dropping the rest
// (channels are refilled from history once the connection is verified).
func (sh *shard) awaitOnConnect(ctx context.Context, ps *goredis.PubSub, want func(any) bool) error {
	deadline := time.Now().Add(sh.b.cfg.ProbeTimeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errProbe
		}
		m, err := ps.ReceiveTimeout(ctx, left)
		if err != nil {
			return err
		}
		if want(m) {
			return nil
		}
	}
}

// publishProbe publishes probe token on this node's probe channel.
func (sh *shard) publishProbe(ctx context.Context, token string) error {
	probe := *sh.probe.Load()
	if sh.sharded {
		return sh.cmd().SPublish(ctx, probe, "x"+token).Err()
	}
	return sh.cmd().Publish(ctx, probe, "x"+token).Err()
}

// probeWrite asks the shard's server whether it takes writes (readiness).
func (sh *shard) probeWrite(ctx context.Context) error {
	s, err := sh.scripter(ctx)
	if err != nil {
		return err
	}
	return redisbase.ProbeWrite(ctx, s)
}

// loadScripts loads every script on the shard's server.
func (sh *shard) loadScripts(ctx context.Context) error {
	s, err := sh.scripter(ctx)
	if err != nil {
		return err
	}
	for _, sc := range slices.Concat(scripts, sh.b.Presence.Scripts()) {
		if err := sc.Load(ctx, s).Err(); err != nil {
			return err
		}
	}
	return nil
}

// subBatch bounds the channels of one SUBSCRIBE command.
const subBatch = 1000

// sendSubs writes SUBSCRIBE (and the probe channel, with probe) and
// UNSUBSCRIBE commands for the given channels, many channels per command
// (with Cluster, one command per hash slot, as SSUBSCRIBE requires).
func (sh *shard) sendSubs(ctx context.Context, ps *goredis.PubSub, subs, unsubs []string, probe bool) error {
	names := func(chs []string) []string {
		out := make([]string, len(chs))
		for i, ch := range chs {
			out[i] = sh.b.pubsubName(ch)
		}
		return out
	}
	sub, unsub := ps.Subscribe, ps.Unsubscribe
	if sh.sharded {
		sub, unsub = ps.SSubscribe, ps.SUnsubscribe
	}
	var groups [][]string
	if sh.sharded && len(unsubs) > 0 {
		sh.mu.Lock()
		for _, ch := range unsubs {
			sh.unsubSent[sh.b.pubsubName(ch)]++
		}
		sh.mu.Unlock()
	}
	subNames := names(subs)
	if probe {
		subNames = append(subNames, *sh.probe.Load())
	}
	for _, op := range []struct {
		f     func(context.Context, ...string) error
		names []string
	}{{sub, subNames}, {unsub, names(unsubs)}} {
		groups = sh.group(op.names, groups[:0])
		for _, g := range groups {
			if err := op.f(ctx, g...); err != nil {
				return err
			}
		}
	}
	return nil
}

// group splits names into command-sized groups: by hash slot with
// Cluster, else by subBatch.
func (sh *shard) group(names []string, out [][]string) [][]string {
	if !sh.sharded {
		for len(names) > 0 {
			n := min(len(names), subBatch)
			out = append(out, names[:n])
			names = names[n:]
		}
		return out
	}
	slices.SortFunc(names, func(a, b string) int { return int(keySlot(a)) - int(keySlot(b)) })
	for len(names) > 0 {
		s := keySlot(names[0])
		n := 1
		for n < len(names) && n < subBatch && keySlot(names[n]) == s {
			n++
		}
		out = append(out, names[:n])
		names = names[n:]
	}
	return out
}

// receive reads ps until it fails and dispatches what it reads.
func (sh *shard) receive(ps *goredis.PubSub) error {
	for {
		m, err := ps.Receive(sh.b.ctx)
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *goredis.Message:
			sh.onMessage(m.Channel, m.Payload)
		case *goredis.Pong:
			select {
			case sh.pongs <- m.Payload:
			default:
			}
		case *goredis.Subscription:
			if m.Kind == "sunsubscribe" && !sh.confirmUnsub(m.Channel) && sh.isDesired(m.Channel) {
				// The slot moved away (resharding): reconnect, which
				// resolves the slot's new owner.
				return fmt.Errorf("server dropped shard channel %s", m.Channel)
			}
		}
	}
}

// confirmUnsub consumes one pending SUNSUBSCRIBE of name, reporting
// whether there was one.
func (sh *shard) confirmUnsub(name string) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := sh.unsubSent[name]
	if n == 0 {
		return false
	}
	if n == 1 {
		delete(sh.unsubSent, name)
	} else {
		sh.unsubSent[name] = n - 1
	}
	return true
}

// isDesired reports whether the pub/sub channel name belongs to a channel
// this node subscribed.
func (sh *shard) isDesired(name string) bool {
	ch, ok := sh.b.channelOf(name)
	return ok && sh.lookup(ch) != nil
}

// onMessage handles one pub/sub message on the live connection.
func (sh *shard) onMessage(name, payload string) {
	if name == *sh.probe.Load() {
		if n, err := strconv.ParseUint(payload[min(1, len(payload)):], 10, 64); err == nil {
			sh.lastProbe.Store(n)
		}
		return
	}
	ch, ok := sh.b.channelOf(name)
	if !ok {
		return
	}
	cs := sh.lookup(ch)
	if cs == nil {
		return
	}
	e, err := decodeEvent(payload)
	if err != nil {
		sh.b.cfg.Logger.Warn("redis: dropped a malformed pub/sub message", "channel", ch, "err", err)
		return
	}
	h := sh.b.handler
	needFill := false
	cs.mu.Lock()
	if !cs.removed && cs.owner == sh && sh.state.Load() != shardDown {
		switch e.kind {
		case 'p':
			needFill = cs.live(h, e.epoch, e.seq, e.was, e.data)
		case 'j':
			h.HandlePresence(cs.name, brokers.Join, brokers.Member{User: e.user, Client: e.cl})
			cs.notePrune(time.Now().Add(time.Duration(e.ttlMS) * time.Millisecond))
		case 'l':
			h.HandlePresence(cs.name, brokers.Leave, brokers.Member{User: e.user, Client: e.cl})
		}
	}
	cs.mu.Unlock()
	if needFill {
		sh.queueFill(cs)
	}
}

// queueFill queues cs (whose filling is set) for the filler.
func (sh *shard) queueFill(cs *chanState) {
	sh.mu.Lock()
	sh.queueFillLocked(cs)
	sh.mu.Unlock()
	kick(sh.fillWake)
}

// queueFillLocked: sh.mu is held.
func (sh *shard) queueFillLocked(cs *chanState) {
	if !cs.fillQueued {
		cs.fillQueued = true
		sh.fillQ = append(sh.fillQ, cs)
	}
}
