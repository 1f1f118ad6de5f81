package redis

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
)

// Following the topology of a Redis Cluster.
//
// The route table (slot -> shard) changes only in rebalance, which holds
// every shard's mu while it stores a new one: whoever holds a shard's mu
// and finds a channel routed to that shard (Broker.lockedShard) keeps it
// there until it unlocks. When slots change master, rebalance first
// pauses every shard's writer (none has a pipeline in flight), then moves
// each channel of those slots to the shard of its new master: its
// delivery state, its publications still pending or in the outbox (in
// their order, behind nothing of theirs: the target shard had none of the
// channel's), and its node-local epoch. The target replays what it got
// (an up shard turns recovering), subscribes the moved channels on its
// connection and then fills each from history, so a subscriber misses
// nothing that was published meanwhile: the channel's meta hash and
// history moved with the slot (MIGRATE), and with them the per-node
// publish counters that keep the replay exactly-once.

// routeTable maps a cluster slot to the shard serving it.
type routeTable [numSlots]*shard

// topology is a cluster broker's view of the cluster.
type topology struct {
	mu    sync.Mutex // serializes rebalance
	nodes *nodeClients
}

// errRetired: the shard serves no slot any more (all moved to other
// masters); it waits until one comes back to it.
var errRetired = errors.New("shard serves no slot")

// errTopology takes a shard down whose master or probe changed.
var errTopology = errors.New("cluster topology changed")

// writerPause stops a shard's writer between two pipelines.
type writerPause struct{ paused, resume chan struct{} }

// hold is the writer's side of a pause: it reports being paused and waits.
func (sh *shard) hold(p *writerPause) {
	close(p.paused)
	select {
	case <-p.resume:
	case <-sh.b.ctx.Done():
	}
}

// allShards returns the shards (the slice grows when a cluster gains a
// master).
func (b *Broker) allShards() []*shard {
	b.shardsMu.RLock()
	defer b.shardsMu.RUnlock()
	return b.shards
}

// lockedShard returns the shard of ch with its mu held: until the caller
// unlocks it, ch stays routed to it.
func (b *Broker) lockedShard(ch string) *shard {
	for {
		sh := b.shardFor(ch)
		sh.mu.Lock()
		if b.route.Load() == nil || b.shardFor(ch) == sh {
			return sh
		}
		sh.mu.Unlock()
	}
}

// rebalance reads the cluster's slot map and makes the route table and
// every shard's master follow it. self is the shard calling it (from its
// connect); every other shard whose master, probe or slots changed in a
// way its connection cannot follow is taken down, so it reconnects.
func (b *Broker) rebalance(ctx context.Context, self *shard) error {
	t := b.topo
	owners, err := t.nodes.owners(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if b.ctx.Err() != nil {
		return brokers.ErrClosed
	}
	rt := b.route.Load()
	shards := b.allShards()

	// Each shard keeps the master that serves most of its slots, unless a
	// shard with more of them claimed it first.
	type cand struct {
		sh   *shard
		addr string
		n    int
	}
	counts := make(map[*shard]map[string]int)
	for s, o := range owners {
		if o == "" {
			continue
		}
		m := counts[rt[s]]
		if m == nil {
			m = make(map[string]int)
			counts[rt[s]] = m
		}
		m[o]++
	}
	var cands []cand
	for sh, m := range counts {
		for a, n := range m {
			cands = append(cands, cand{sh, a, n})
		}
	}
	slices.SortFunc(cands, func(x, y cand) int {
		return cmp.Or(y.n-x.n, x.sh.idx-y.sh.idx, cmp.Compare(x.addr, y.addr))
	})
	claimed := make(map[string]*shard)
	master := make(map[*shard]string)
	for _, c := range cands {
		if _, ok := master[c.sh]; ok || claimed[c.addr] != nil {
			continue
		}
		claimed[c.addr], master[c.sh] = c.sh, c.addr
	}

	// Slots whose master no shard claimed go to a shard that serves no
	// slot (retired), else to a new one.
	next := *rt
	var created []*shard
	moved := false
	for s, o := range owners {
		if o == "" {
			continue
		}
		target := claimed[o]
		if target == nil {
			for _, sh := range shards {
				if _, busy := master[sh]; !busy && sh.slotCount.Load() == 0 {
					target = sh
					break
				}
			}
			if target == nil {
				target = b.newClusterShard(len(shards)+len(created), o)
				created = append(created, target)
			}
			claimed[o], master[target] = target, o
		}
		if next[s] != target {
			next[s] = target
			moved = true
		}
	}

	var down []*shard // to reconnect
	if !moved {
		for sh, addr := range master {
			sh.mu.Lock()
			changed := sh.master != addr
			if changed {
				sh.setMaster(addr)
			}
			sh.mu.Unlock()
			if changed && sh != self {
				down = append(down, sh)
			}
		}
		for _, sh := range down {
			sh.fail(errTopology)
		}
		return nil
	}

	// Pause every running writer: no pipeline is in flight while
	// publications move between shards.
	var held []*writerPause
	defer func() {
		for _, p := range held {
			close(p.resume)
		}
	}()
	for _, sh := range shards {
		if !sh.started.Load() {
			continue
		}
		p := &writerPause{paused: make(chan struct{}), resume: make(chan struct{})}
		held = append(held, p)
		sh.pauseCh <- p // buffered: one rebalance at a time
	}
	for _, p := range held {
		select {
		case <-p.paused:
		case <-b.ctx.Done():
			return brokers.ErrClosed
		}
	}

	all := append(slices.Clone(shards), created...)
	for _, sh := range all { // in idx order
		sh.mu.Lock()
	}
	touched := make(map[*shard]bool)
	for _, sh := range shards {
		sh.moveOut(&next, touched)
	}
	b.route.Store(&next)
	for _, sh := range all {
		probeMoved := sh.retarget(&next)
		if probeMoved {
			sh.topoGen++
		}
		changed := false
		if addr, ok := master[sh]; ok && addr != sh.master {
			sh.setMaster(addr)
			changed = true
		}
		if len(sh.outbox) > 0 && sh.state.Load() == shardUp {
			sh.state.Store(shardRecovering) // replay what moved in
		}
		if sh != self && sh.started.Load() && (changed || probeMoved || sh.slotCount.Load() == 0) {
			down = append(down, sh)
		}
	}
	for _, sh := range all {
		sh.mu.Unlock()
	}
	b.cfg.Logger.Info("redis cluster: slots moved between masters; channels follow them", "shards", len(all), "new", len(created))

	b.shardsMu.Lock()
	b.shards = all
	for _, sh := range created {
		// While Start runs (self not started yet), Start starts them.
		if b.ctx.Err() == nil && self.started.Load() {
			sh.start()
		}
	}
	b.shardsMu.Unlock()
	for _, sh := range all {
		if sh.slotCount.Load() > 0 {
			kick(sh.reviveWake)
		}
		if touched[sh] {
			kick(sh.writerWake)
			kick(sh.controlWake)
			kick(sh.fillWake)
		}
	}
	for _, sh := range down {
		sh.fail(errTopology)
	}
	return nil
}

// setMaster points the shard at the master at addr. sh.mu is held.
func (sh *shard) setMaster(addr string) {
	sh.master = addr
	sh.topoGen++
	sh.setCmd(sh.b.topo.nodes.client(addr))
}

// moveOut moves everything of the channels that next routes elsewhere to
// their new shard: delivery state (to be subscribed there, then filled),
// pending publications and outbox entries (appended in order), node-local
// epochs. Every shard's mu is held and every writer paused.
func (sh *shard) moveOut(next *routeTable, touched map[*shard]bool) {
	for ch, cs := range sh.chans {
		to := next[slotOf(ch)]
		if to == sh {
			continue
		}
		sh.chmu.Lock()
		delete(sh.chans, ch)
		sh.chmu.Unlock()
		delete(sh.dirty, ch)
		delete(sh.remote, ch) // its old master dropped it
		to.chmu.Lock()
		to.chans[ch] = cs
		to.chmu.Unlock()
		to.dirty[ch] = struct{}{}
		cs.mu.Lock()
		cs.owner = to
		// Buffer live publications until the new subscription is
		// confirmed, then fill from history (controlStep, connect).
		cs.filling, cs.refill = true, true
		cs.mu.Unlock()
		touched[to] = true
	}
	for ch := range sh.dirty {
		if next[slotOf(ch)] != sh {
			delete(sh.dirty, ch) // an unsubscription: the old master dropped it
			delete(sh.remote, ch)
		}
	}
	kept := sh.fillQ[:0]
	for _, cs := range sh.fillQ {
		if next[slotOf(cs.name)] == sh {
			kept = append(kept, cs)
		} else {
			cs.fillQueued = false // its new shard fills it
		}
	}
	clear(sh.fillQ[len(kept):])
	sh.fillQ = kept
	sh.outbox = moveReqs(sh, sh.outbox, next, touched, func(to *shard, r *pubReq) {
		to.outbox = append(to.outbox, r)
		if !r.answered {
			to.outboxWaiters = true
		}
	})
	sh.pending = moveReqs(sh, sh.pending, next, touched, func(to *shard, r *pubReq) {
		to.pending = append(to.pending, r)
	})
	for ch, pos := range sh.local {
		if to := next[slotOf(ch)]; to != sh {
			if to.local == nil {
				to.local = make(map[string]*localChan)
			}
			to.local[ch] = pos
			delete(sh.local, ch)
		}
	}
}

// moveReqs hands the requests of q that next routes elsewhere to put, in
// order, and returns the rest.
func moveReqs(sh *shard, q []*pubReq, next *routeTable, touched map[*shard]bool, put func(*shard, *pubReq)) []*pubReq {
	kept := q[:0]
	for _, r := range q {
		if to := next[slotOf(r.ch)]; to != sh {
			put(to, r)
			touched[to] = true
			continue
		}
		kept = append(kept, r)
	}
	clear(q[len(kept):])
	return kept
}

// masterAddrOrName names the shard for errors: its master's address now
// (Cluster), else its server.
func (sh *shard) masterAddrOrName() string {
	if sh.b.topo != nil {
		return sh.masterAddr()
	}
	return sh.name
}

// cmd returns the shard's command client (a cluster shard's follows its
// master).
func (sh *shard) cmd() goredis.UniversalClient { return sh.cmdRef.Load().c }

func (sh *shard) setCmd(c goredis.UniversalClient) { sh.cmdRef.Store(&cmdRef{c}) }

type cmdRef struct{ c goredis.UniversalClient }
