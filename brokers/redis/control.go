package redis

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// control batches this shard's SUBSCRIBE and UNSUBSCRIBE commands. While
// one batch is in flight (written, and confirmed by a PING that comes back
// after it on the same connection), further Subscribe and Unsubscribe
// calls accumulate; the next batch carries them all, many channels per
// command. Subscribe returns when its batch is confirmed.
func (sh *shard) control() {
	for {
		select {
		case <-sh.controlWake:
		case <-sh.b.ctx.Done():
			return
		}
		for sh.controlStep() {
			if sh.stopping() {
				return
			}
		}
	}
}

var errNoPong = errors.New("subscribe batch not confirmed")

// controlStep sends one batch; it reports whether there may be more.
func (sh *shard) controlStep() bool {
	sh.mu.Lock()
	ps, down := sh.ps, sh.downCh
	if sh.state.Load() == shardDown || ps == nil {
		// The reconnect subscribes everything; until then, Subscribe
		// returns at once (local delivery only).
		for ch := range sh.dirty {
			if cs := sh.chans[ch]; cs != nil {
				sh.markReady(cs)
			}
		}
		sh.mu.Unlock()
		return false
	}
	var subs, unsubs []string
	var waiting, subscribed []*chanState
	for ch := range sh.dirty {
		cs := sh.chans[ch]
		_, have := sh.remote[ch]
		switch {
		case cs != nil && !have:
			subs = append(subs, ch)
			waiting = append(waiting, cs)
			sh.remote[ch] = struct{}{}
		case cs == nil && have:
			unsubs = append(unsubs, ch)
			delete(sh.remote, ch)
		case cs != nil:
			sh.markReady(cs)
			subscribed = append(subscribed, cs)
		}
	}
	clear(sh.dirty)
	sh.mu.Unlock()
	for _, cs := range subscribed {
		sh.refill(cs)
	}
	if len(subs) == 0 && len(unsubs) == 0 {
		return false
	}

	ctx, cancel := context.WithTimeout(sh.b.ctx, sh.b.cfg.ReadTimeout)
	defer cancel()
	err := sh.sendSubs(ctx, ps, subs, unsubs, false)
	if err == nil {
		token := "c" + strconv.FormatUint(sh.probeSeq.Add(1), 10)
		if err = ps.Ping(ctx, token); err == nil {
			err = sh.awaitPong(ctx, token, down)
		}
	}
	if err != nil {
		if sh.stopping() {
			return false
		}
		sh.fail(err) // the reconnect subscribes every channel
	}
	sh.mu.Lock()
	now := time.Now()
	for _, cs := range waiting {
		sh.markReady(cs)
	}
	sh.mu.Unlock()
	for _, cs := range waiting {
		// Members may have joined before this node subscribed: check
		// their expiry soon.
		cs.mu.Lock()
		cs.notePrune(now)
		cs.mu.Unlock()
		if err == nil {
			sh.refill(cs)
		}
	}
	return true
}

// awaitPong waits for the reader to see the PING reply token.
func (sh *shard) awaitPong(ctx context.Context, token string, down <-chan struct{}) error {
	for {
		select {
		case p := <-sh.pongs:
			if p == token {
				return nil
			}
		case <-down:
			return errNoPong
		case <-ctx.Done():
			return errNoPong
		}
	}
}

// refill queues the fill of a channel that moved here from another
// master's shard (topology.go), once its subscription here is confirmed:
// it catches up on what was published before.
func (sh *shard) refill(cs *chanState) {
	cs.mu.Lock()
	do := cs.refill && cs.owner == sh && !cs.removed
	cs.refill = false
	cs.mu.Unlock()
	if do {
		sh.queueFill(cs)
	}
}
