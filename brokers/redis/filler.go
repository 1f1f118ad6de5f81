package redis

import (
	"context"
	"errors"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// filler is the shard's background worker: it fills gaps from history,
// prunes expired presence members, and probes the pub/sub connection.
func (sh *shard) filler() {
	f := &fillerState{nextProbe: time.Now().Add(sh.b.cfg.ProbeInterval)}
	timer := time.NewTimer(sh.tick())
	defer timer.Stop()
	for {
		select {
		case <-sh.fillWake:
		case <-timer.C:
			timer.Reset(sh.tick())
		case <-sh.b.ctx.Done():
			return
		}
		sh.runFills(f)
		sh.runPrunes(f)
		sh.runProbe(f)
	}
}

// fillerState is the filler's scratch space and probe state.
type fillerState struct {
	jobs    []*chanState
	results []fillResult
	cmds    []*goredis.Cmd

	nextProbe time.Time
	awaiting  uint64 // probe token in flight, 0 if none
	deadline  time.Time
}

// tick is how often the filler looks at expiry and probes: a quarter of
// the shortest of the probe interval, probe timeout and presence TTL, but
// between 5ms and 250ms.
func (sh *shard) tick() time.Duration {
	d := min(sh.b.cfg.ProbeInterval, sh.b.cfg.ProbeTimeout)
	if p := time.Duration(sh.b.minPresenceTTL.Load()); p > 0 {
		d = min(d, p)
	}
	return min(max(d/4, 5*time.Millisecond), 250*time.Millisecond)
}

// fillBatch bounds the channels filled in one pipeline.
const fillBatch = 64

var errProbeTimeout = errors.New("probe timed out: the pub/sub connection receives nothing")

// runFills fills every queued channel: a history read from its last
// delivered position, then applyFill.
func (sh *shard) runFills(f *fillerState) {
	b := sh.b
	for !sh.stopping() {
		sh.mu.Lock()
		n := min(len(sh.fillQ), fillBatch)
		if n == 0 || sh.state.Load() == shardDown {
			sh.mu.Unlock()
			return
		}
		f.jobs = append(f.jobs[:0], sh.fillQ[:n]...)
		rest := copy(sh.fillQ, sh.fillQ[n:])
		clear(sh.fillQ[rest:])
		sh.fillQ = sh.fillQ[:rest]
		for _, cs := range f.jobs {
			cs.fillQueued = false
		}
		sh.mu.Unlock()

		limit := b.historyLimit(b.cfg.HistorySize)
		f.results = f.results[:0]
		jobs := f.jobs[:0]
		for _, cs := range f.jobs {
			cs.mu.Lock()
			if !cs.removed && cs.filling && cs.owner == sh {
				cs.forgetEmpty() // something may have been missed
				r := fillResult{epoch: cs.epoch, mark: len(cs.buf), limit: limit}
				if cs.known {
					r.from = cs.seq
				}
				f.results = append(f.results, r)
				jobs = append(jobs, cs)
			}
			cs.mu.Unlock()
		}
		if len(jobs) == 0 {
			continue
		}
		pipe := sh.cmd().Pipeline()
		f.cmds = f.cmds[:0]
		for i, cs := range jobs {
			k := b.keys(cs.name)
			f.cmds = append(f.cmds, sinceScript.EvalSha(b.ctx, pipe, []string{k.history, k.meta},
				strconv.FormatUint(f.results[i].from, 10), strconv.Itoa(limit), b.newEpoch(), b.metaTTLArg))
		}
		_, _ = pipe.Exec(b.ctx)
		b.stats.fills.Add(uint64(len(jobs)))
		for i, cs := range jobs {
			res, err := f.cmds[i].Result()
			r := &f.results[i]
			if err == nil {
				r.pubs, r.pos, err = parseSince(res)
			}
			switch {
			case err == nil:
			case isNoScript(err):
				if lerr := sh.loadScripts(b.ctx); lerr != nil {
					sh.fail(lerr)
					return
				}
				sh.queueFill(cs)
				continue
			case isConnErr(err):
				// The channels stay filling; the reconnect queues them
				// all again.
				sh.fail(err)
				return
			default:
				b.cfg.Logger.Error("redis: history read failed; delivering without filling", "channel", cs.name, "err", err)
				cs.mu.Lock()
				if cs.owner == sh {
					cs.giveUpFill(b.handler)
				}
				cs.mu.Unlock()
				continue
			}
			cs.mu.Lock()
			out := fillDone
			if !cs.removed && cs.owner == sh && sh.state.Load() != shardDown {
				out = cs.applyFill(b.handler, r)
			}
			epoch, seq := cs.epoch, cs.seq
			cs.mu.Unlock()
			switch out {
			case fillAgain:
				sh.queueFill(cs)
			case fillReset:
				sh.resetEpoch(cs, epoch, seq)
				sh.queueFill(cs)
			}
		}
		clear(f.cmds)
		clear(f.results)
	}
}

// resetEpoch gives cs's channel a new epoch: its history in Redis went
// back below seq, which this node delivered (writes lost in a failover or
// a crash). Publications after the loss would reuse seqs clients hold
// with other data; a new epoch makes every client resync instead.
func (sh *shard) resetEpoch(cs *chanState, epoch string, seq uint64) {
	k := sh.b.keys(cs.name)
	n, err := resetScript.Run(sh.b.ctx, sh.cmd(), []string{k.history, k.meta},
		epoch, strconv.FormatUint(seq, 10), sh.b.newEpoch(), sh.b.metaTTLArg).Int()
	if err != nil {
		sh.b.cfg.Logger.Warn("redis: epoch reset failed", "channel", cs.name, "err", err)
		return
	}
	if n == 1 {
		sh.b.cfg.Logger.Warn("redis: channel history went backwards (lost writes); started a new epoch",
			"channel", cs.name, "epoch", epoch, "delivered_seq", seq)
	}
}

// runPrunes prunes the channels whose members are due to expire.
func (sh *shard) runPrunes(f *fillerState) {
	if sh.state.Load() == shardDown {
		return
	}
	b := sh.b
	now := time.Now()
	f.jobs = f.jobs[:0]
	sh.chmu.RLock()
	for _, cs := range sh.chans {
		at := cs.pruneAt.Load()
		if at != 0 && at <= now.UnixNano() && cs.pruneAt.CompareAndSwap(at, 0) {
			f.jobs = append(f.jobs, cs)
		}
	}
	sh.chmu.RUnlock()
	for len(f.jobs) > 0 && !sh.stopping() {
		n := min(len(f.jobs), fillBatch)
		pipe := sh.cmd().Pipeline()
		f.cmds = f.cmds[:0]
		for _, cs := range f.jobs[:n] {
			f.cmds = append(f.cmds, b.Presence.Prune(b.ctx, pipe, cs.name))
		}
		_, _ = pipe.Exec(b.ctx)
		for i, cs := range f.jobs[:n] {
			next, err := f.cmds[i].Int64()
			switch {
			case err == nil:
				if next >= 0 {
					cs.notePrune(time.Now().Add(time.Duration(next) * time.Millisecond))
				}
			case isNoScript(err):
				_ = sh.loadScripts(b.ctx)
				cs.notePrune(now)
			default:
				cs.notePrune(now.Add(sh.tick()))
				if isConnErr(err) {
					for _, rest := range f.jobs[i+1:] {
						rest.notePrune(now)
					}
					clear(f.cmds)
					f.jobs = f.jobs[:0]
					return
				}
			}
		}
		clear(f.cmds)
		f.jobs = f.jobs[n:]
	}
}

// runProbe publishes a probe to this node every ProbeInterval and takes
// the shard down when it does not come back within ProbeTimeout.
func (sh *shard) runProbe(f *fillerState) {
	now := time.Now()
	if sh.state.Load() == shardDown {
		f.awaiting = 0
		f.nextProbe = now.Add(sh.b.cfg.ProbeInterval)
		return
	}
	if f.awaiting != 0 {
		switch {
		case sh.lastProbe.Load() >= f.awaiting:
			f.awaiting = 0
			f.nextProbe = now.Add(sh.b.cfg.ProbeInterval)
		case now.After(f.deadline):
			f.awaiting = 0
			sh.fail(errProbeTimeout)
		}
		return
	}
	if now.Before(f.nextProbe) {
		return
	}
	token := sh.probeSeq.Add(1)
	ctx, cancel := context.WithTimeout(sh.b.ctx, sh.b.cfg.ProbeTimeout)
	err := sh.publishProbe(ctx, strconv.FormatUint(token, 10))
	cancel()
	if err != nil {
		if !sh.stopping() {
			sh.fail(err)
		}
		return
	}
	f.awaiting = token
	f.deadline = now.Add(sh.b.cfg.ProbeTimeout)
}
