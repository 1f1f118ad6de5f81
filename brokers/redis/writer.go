package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
)

// pubReq is one publication on its way to Redis.
type pubReq struct {
	ch      string
	data    []byte // a copy, owned by the request
	counter uint64 // this node's publish counter: ordered per shard, deduplicates retries
	done    chan pubResult
	// answered: the caller has its answer (a node-local position); the
	// request only waits in the outbox. The writer releases it when done.
	answered bool
	// was is that node-local position, encoded for the publish script
	// (encodeWas); "" when none.
	was string
	// first is the epoch the channel gets if Redis holds none for it: the
	// one this node handed out while it was empty (chanState.empty), read
	// when the request is sent; "" when none.
	first string
	// after is the counter of the request before this one on the same
	// channel in the same pipeline, 0 when none. The script applies this
	// one only if that one was applied: a command rejected mid-pipeline
	// (CLUSTERDOWN, MOVED, TRYAGAIN...) must not be overtaken by a later
	// one of its channel, whose higher counter would make the replay of
	// the rejected one look applied already (it was acked, then lost).
	after uint64
	// maybeApplied: an attempt went out on a connection that failed before
	// its reply, so Redis may hold it already (without was). It is then
	// not delivered locally: it reaches subscribers once, under its real
	// position.
	maybeApplied bool
	// args is the EVALSHA command, reused with the request: every value
	// in it is boxed once (constants, cached keys) or a pointer, so
	// building the command allocates nothing.
	args []any
}

// dataArg makes go-redis write pubReq.data without boxing a slice.
type dataArg pubReq

func (d *dataArg) MarshalBinary() ([]byte, error) { return d.data, nil }

// pubResult answers a Publish. owned tells the caller it may release the
// request (the writer is done with it).
type pubResult struct {
	pos   brokers.Position
	err   error
	owned bool
}

var reqPool = sync.Pool{New: func() any { return &pubReq{done: make(chan pubResult, 1)} }}

func newPubReq(ch string, data []byte) *pubReq {
	r := reqPool.Get().(*pubReq)
	r.ch = ch
	r.data = append(r.data[:0], data...)
	r.answered = false
	r.was = ""
	r.first = ""
	r.maybeApplied = false
	return r
}

func (r *pubReq) release() {
	if cap(r.data) > 64<<10 {
		r.data = nil
	}
	r.ch = ""
	select {
	case <-r.done: // an answer nobody read (the caller gave up)
	default:
	}
	reqPool.Put(r)
}

// complete finishes r: answers the caller, or, when it was answered
// already, releases r.
func (r *pubReq) complete(pos brokers.Position, err error) {
	if r.answered {
		r.release()
		return
	}
	r.done <- pubResult{pos: pos, err: err, owned: true}
}

// maxBatch bounds the publications of one pipeline.
const maxBatch = 512

// writer sends this shard's publications. It is the only goroutine that
// takes from pending and touches the outbox, so the order in which
// publications reach Redis (and get their seqs), the order of the outbox,
// and the order of local deliveries are one order.
//
// One pipeline is in flight at a time per shard: under load, publications
// from many goroutines accumulate in pending while it runs and go out
// together in the next (auto-batching). The single ordered connection is
// also what makes the per-node counter in the publish script exact.
func (sh *shard) writer() {
	w := &writerState{}
	for {
		select {
		case <-sh.writerWake:
		case p := <-sh.pauseCh:
			sh.hold(p) // a cluster topology change (topology.go)
		case <-sh.b.ctx.Done():
			return
		}
		for sh.writeStep(w) {
			if sh.stopping() {
				return
			}
			select {
			case p := <-sh.pauseCh:
				sh.hold(p)
			default:
			}
		}
	}
}

// writerState is the writer's scratch space.
type writerState struct {
	batch []*pubReq
	cmds  []*goredis.Cmd
	// keys caches the boxed key names of recently published channels.
	keys map[string]*boxedKeys
	// last is the counter of each channel's latest request in the
	// pipeline being built (pubReq.after).
	last map[string]uint64
	// chans are the channel states of the requests sent as cmds (nil
	// when this node did not subscribe): an answer is noted there
	// (chanState.noteAcked).
	chans []*chanState
	// deadline is the pipeline's shard.publishDeadline.
	deadline int64
}

// boxedKeys are a channel's key names as interface values, boxed once.
type boxedKeys struct{ history, meta, pubsub any }

// maxKeyCache bounds writerState.keys; it is emptied when full.
const maxKeyCache = 4096

func (w *writerState) keysOf(b *Broker, ch string) *boxedKeys {
	if k := w.keys[ch]; k != nil {
		return k
	}
	if w.keys == nil || len(w.keys) >= maxKeyCache {
		w.keys = make(map[string]*boxedKeys)
	}
	ks := b.keys(ch)
	k := &boxedKeys{ks.history, ks.meta, ks.pubsub}
	w.keys[strings.Clone(ch)] = k
	return k
}

// writeStep does one unit of work and reports whether there may be more.
func (sh *shard) writeStep(w *writerState) bool {
	sh.mu.Lock()
	switch sh.state.Load() {
	case shardDown:
		// Answer everything waiting with a local position, in order:
		// first what was queued while recovering, then new requests.
		if sh.outboxWaiters {
			for _, r := range sh.outbox {
				if !r.answered {
					sh.answerLocally(r)
				}
			}
			sh.outboxWaiters = false
		}
		for _, r := range sh.pending {
			sh.divertLocked(r, false)
		}
		clear(sh.pending)
		sh.pending = sh.pending[:0]
		sh.mu.Unlock()
		return false

	case shardRecovering:
		for _, r := range sh.pending {
			if sh.enqueueLocked(r, false) {
				sh.outboxWaiters = true
			}
		}
		clear(sh.pending)
		sh.pending = sh.pending[:0]
		if len(sh.outbox) == 0 {
			sh.outboxWaiters = false
			sh.local = nil // the outage is over: the next one has new local epochs
			sh.refusals = 0
			sh.state.Store(shardUp)
			sh.mu.Unlock()
			sh.b.cfg.Logger.Info("redis shard up", "shard", sh.name)
			return true
		}
		w.batch = append(w.batch[:0], sh.outbox[:min(len(sh.outbox), maxBatch)]...)
		sh.mu.Unlock()
		n, err := sh.send(w)
		sh.mu.Lock()
		clear(sh.outbox[:n])
		sh.outbox = sh.outbox[n:]
		sh.b.outboxLen.Add(-int64(n))
		if len(sh.outbox) == 0 {
			sh.outbox = nil // let the backing array go
		}
		sh.mu.Unlock()
		clear(w.batch)
		if err != nil {
			sh.fail(err)
		}
		return true

	default: // shardUp
		if len(sh.pending) == 0 {
			sh.mu.Unlock()
			return false
		}
		n := min(len(sh.pending), maxBatch)
		w.batch = append(w.batch[:0], sh.pending[:n]...)
		rest := copy(sh.pending, sh.pending[n:])
		clear(sh.pending[rest:])
		sh.pending = sh.pending[:rest]
		sh.mu.Unlock()
		done, err := sh.send(w)
		if err != nil {
			// The rest of the batch may or may not have been applied:
			// keep it first in the outbox; the counter check in the
			// script makes the replay exactly-once.
			sh.fail(err)
			sh.mu.Lock()
			for _, r := range w.batch[done:] {
				if sh.state.Load() == shardDown {
					sh.divertLocked(r, true)
				} else if sh.enqueueLocked(r, true) {
					// Reconnected meanwhile: r waits for the replay.
					sh.outboxWaiters = true
				}
			}
			sh.mu.Unlock()
		}
		clear(w.batch)
		return true
	}
}

// divertLocked handles r while the shard is down: into the outbox with a
// local answer. forced (r may have reached Redis already) ignores the
// outbox bound. sh.mu is held.
func (sh *shard) divertLocked(r *pubReq, forced bool) {
	if !sh.enqueueLocked(r, forced) {
		return
	}
	sh.answerLocally(r)
}

// enqueueLocked appends r to the outbox, or fails it with
// brokers.ErrUnavailable when the outbox is full (or disabled). sh.mu is
// held.
func (sh *shard) enqueueLocked(r *pubReq, forced bool) bool {
	size := sh.b.cfg.OutboxSize
	if size < 0 || (!forced && sh.b.outboxLen.Load() >= int64(size)) {
		r.complete(brokers.Position{}, errOutboxFull)
		return false
	}
	if !r.answered {
		r.ch = strings.Clone(r.ch) // outlives the caller's string
	}
	sh.outbox = append(sh.outbox, r)
	sh.b.outboxLen.Add(1)
	return true
}

var errOutboxFull = fmt.Errorf("%w: redis down and outbox full", brokers.ErrUnavailable)

// localChan is a channel's node-local state during an outage.
type localChan struct {
	// pos is the last node-local position handed out.
	pos brokers.Position
	// held: a publication of the channel whose outcome is unknown (it may
	// be in Redis already, without was) is waiting in the outbox. It can
	// only be delivered here under its real position, once Redis is back,
	// so the channel's later publications are not delivered locally
	// either (they would overtake it): all of them arrive here in
	// order, under their real positions, when the outbox is replayed.
	held bool
}

// answerLocally gives r the next node-local position of its channel,
// delivers it to this node's subscribers (unless the channel is held, see
// localChan), and answers the caller. sh.mu is held; r is in the outbox.
func (sh *shard) answerLocally(r *pubReq) {
	lc := sh.local[r.ch]
	cs := sh.lookup(r.ch)
	if cs != nil {
		cs.mu.Lock()
		defer cs.mu.Unlock()
	}
	if lc == nil {
		if sh.local == nil {
			sh.local = make(map[string]*localChan)
		}
		// The local epoch names the last real position delivered here,
		// so that a client holding local positions can resume from it
		// (brokers.ProvisionalBase) on any node.
		var base brokers.Position
		if cs != nil && cs.known && !cs.provisional {
			base = brokers.Position{Seq: cs.seq, Epoch: cs.epoch}
		}
		lc = &localChan{pos: brokers.Position{Epoch: brokers.ProvisionalEpoch(sh.b.newEpoch(), base)}}
		sh.local[r.ch] = lc
	}
	if cs != nil && !lc.held && cs.ackedAhead() {
		// This node acknowledged an earlier publication of the channel
		// that its subscribers have not received (its pub/sub copy was
		// lost with the connection): it reaches them after the
		// reconnect, from history, under its real position. Delivered
		// locally now, this one would overtake it, so the channel is held
		// as for an outcome unknown.
		lc.held = true
	}
	lc.pos.Seq++
	pos := lc.pos
	r.answered = true
	if r.maybeApplied {
		// Perhaps stored already, without was: delivered only under its
		// real position (its provisional seq is skipped locally), and so
		// are the channel's later publications, which must not overtake
		// it.
		lc.held = true
		r.done <- pubResult{pos: pos}
		return
	}
	r.was = encodeWas(pos)
	if cs != nil && !cs.removed && !lc.held {
		sh.b.handler.HandlePublication(cs.name, brokers.Publication{Seq: pos.Seq, Epoch: pos.Epoch, Data: r.data})
	}
	r.done <- pubResult{pos: pos}
}

// LocalEpochPrefix starts every node-local epoch: the epoch of
// publications delivered on this node only, while Redis was unreachable.
// Local epochs are provisional epochs (brokers.ProvisionalEpoch).
const LocalEpochPrefix = brokers.ProvisionalPrefix

// IsLocalEpoch reports whether epoch is a node-local epoch.
func IsLocalEpoch(epoch string) bool { return brokers.IsProvisional(epoch) }

// send runs w.batch through the publish script in one pipeline and
// completes the requests in order. It returns how many it completed; when
// the rest cannot be (a connection error, a reply saying the server
// cannot take the write now, a WAIT short of Config.WaitReplicas) also the
// error, and the rest go back to the outbox. Each of the rest is marked
// maybeApplied unless Redis said it was not applied (an error reply). A
// NOSCRIPT reply (a restarted or promoted server) reloads the scripts and
// resends the rest.
func (sh *shard) send(w *writerState) (int, error) {
	ctx := sh.b.ctx
	b := sh.b
	done := 0
	for attempt := 0; done < len(w.batch); attempt++ {
		pipe := sh.cmd().Pipeline()
		w.cmds = w.cmds[:0]
		w.chans = w.chans[:0]
		if w.last == nil {
			w.last = make(map[string]uint64)
		}
		clear(w.last)
		w.deadline = sh.publishDeadline()
		for _, r := range w.batch[done:] {
			r.after = w.last[r.ch]
			w.last[r.ch] = r.counter
			k := w.keysOf(b, r.ch)
			a := &b.args
			r.first = ""
			cs := sh.lookup(r.ch)
			if cs != nil {
				if e := cs.empty.Load(); e != nil {
					r.first = *e
				}
			}
			w.chans = append(w.chans, cs)
			r.args = append(r.args[:0], "evalsha", a.sha, 3, k.history, k.meta, k.pubsub,
				(*dataArg)(r), a.histSize, a.histTTL, a.metaTTL, a.nodeID, a.nodeField, &r.counter, a.publishCmd, &r.was, &r.first, &r.after, &w.deadline)
			cmd := goredis.NewCmd(ctx, r.args...)
			cmd.SetFirstKeyPos(3)
			_ = pipe.Process(ctx, cmd)
			w.cmds = append(w.cmds, cmd)
		}
		var wait *goredis.IntCmd
		if b.args.waitN != nil {
			// After the scripts, on the same connection: it returns when
			// the replicas have every write this connection made.
			wait = goredis.NewIntCmd(ctx, "wait", b.args.waitN, b.args.waitMS)
			_ = pipe.Process(ctx, wait)
		}
		_, _ = pipe.Exec(ctx)
		b.stats.pipelines.Add(1)
		waitErr := sh.checkWait(wait)
		retry := false
		for i, c := range w.cmds {
			r := w.batch[done]
			pos, err := parsePosition(c)
			if err == nil && waitErr != nil {
				err = waitErr
			}
			switch {
			case err == nil:
				b.stats.published.Add(1)
				if cs := w.chans[i]; cs != nil {
					cs.noteAcked(pos)
				}
				r.complete(pos, nil)
			case isNoScript(err) && attempt < 2:
				if lerr := sh.loadScripts(ctx); lerr != nil {
					return done, lerr
				}
				retry = true
			case isConnErr(err):
				markUnknown(w.batch[done:], w.cmds[i:])
				return done, err
			default:
				if r.answered {
					b.cfg.Logger.Error("redis: dropped an outbox publication", "channel", r.ch, "err", err)
				}
				r.complete(brokers.Position{}, err)
			}
			if retry {
				break
			}
			done++
		}
		clear(w.cmds)
		clear(w.chans)
		if !retry {
			break
		}
	}
	return done, nil
}

// markUnknown marks the requests rs, sent as cmds, whose outcome is not
// known: all but those Redis refused with an error reply (the script did
// not run, or refused the write: SGORDER, SGLATE, CLUSTERDOWN,
// TRYAGAIN...) and those never sent (no connection could be dialed),
// which are known not to be applied and so can still be delivered locally
// in order (answerLocally).
func markUnknown(rs []*pubReq, cmds []*goredis.Cmd) {
	for i, r := range rs {
		r.maybeApplied = i >= len(cmds) || !notApplied(cmds[i].Err())
	}
}

// notApplied reports a command error that proves the command was not
// applied: a Redis error reply, or a failed dial.
func notApplied(err error) bool {
	var re goredis.Error
	var op *net.OpError
	return errors.As(err, &re) || (errors.As(err, &op) && op.Op == "dial")
}

// checkWait reads the WAIT pipelined after a batch (nil when none): an
// error unless Config.WaitReplicas replicas acknowledged every write of
// the batch.
func (sh *shard) checkWait(wait *goredis.IntCmd) error {
	if wait == nil {
		return nil
	}
	n, err := wait.Result()
	if err != nil {
		return err
	}
	cfg := &sh.b.cfg
	if int(n) < cfg.WaitReplicas {
		return fmt.Errorf("%w: WAIT: %d of %d replicas acknowledged within %v (redis.wait_replicas); the publications are kept for replay", errNotReplicated, n, cfg.WaitReplicas, cfg.WaitTimeout)
	}
	return nil
}

// errNotReplicated: a WAIT counted fewer replicas than Config.WaitReplicas.
// isConnErr counts it as a connection error (the shard goes down).
var errNotReplicated = errors.New("redis: publications not replicated")

// parsePosition reads the publish script's "<seq>:<epoch>" reply.
func parsePosition(c *goredis.Cmd) (brokers.Position, error) {
	s, err := c.Text()
	if err != nil {
		return brokers.Position{}, err
	}
	num, epoch, ok := strings.Cut(s, ":")
	seq, err := strconv.ParseUint(num, 10, 64)
	if !ok || err != nil || epoch == "" {
		return brokers.Position{}, errBadReply
	}
	return brokers.Position{Seq: seq, Epoch: epoch}, nil
}

var errBadReply = errors.New("redis: unexpected script reply")

// isNoScript reports a NOSCRIPT reply.
func isNoScript(err error) bool {
	return goredis.HasErrorPrefix(err, "NOSCRIPT")
}

// isConnErr reports an error that says the connection, or the server's
// role, is the problem rather than the command: transport errors and
// timeouts, and replies of a server that cannot take writes now. The
// command may have been applied (transport errors) or not (replies); the
// shard goes down and retries through its outbox either way.
func isConnErr(err error) bool {
	if err == nil {
		return false
	}
	var re goredis.Error
	if errors.As(err, &re) {
		for _, p := range []string{"READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "OOM", "BUSY", "NOREPLICAS", "MOVED", "ASK", "SGORDER", "SGLATE"} {
			if goredis.HasErrorPrefix(err, p) {
				return true
			}
		}
		return false
	}
	return !errors.Is(err, errBadReply)
}

// wrapErr marks connection errors as brokers.ErrUnavailable.
func wrapErr(err error) error {
	if isConnErr(err) {
		return fmt.Errorf("%w: %w", brokers.ErrUnavailable, err)
	}
	return err
}

// runScript runs sc on the shard, loading it on NOSCRIPT.
func runScript(ctx context.Context, sh *shard, sc *goredis.Script, keys []string, args ...any) (any, error) {
	res, err := sc.Run(ctx, sh.cmd(), keys, args...).Result()
	sh.noteMoved(err)
	return res, err
}

// noteMoved takes a cluster shard down after a MOVED reply (the slot has a
// new master): it reconnects, following the slot map (topology.go).
func (sh *shard) noteMoved(err error) {
	if err != nil && sh.sharded && goredis.HasErrorPrefix(err, "MOVED") {
		sh.fail(err)
	}
}
