package redisstream

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/redisbase"
)

// Key layout. Every key of a channel ch carries the hash tag {ch}:
//
//	<prefix>{ch}:h   stream: the channel's messages, entry id <seq>-0,
//	                 fields d = data, e = epoch
//	<prefix>{ch}:m   hash: e = epoch, s = last seq
//	<prefix>{ch}:e   stream: presence events (join, leave)
//	<prefix>{ch}:p   hash: client -> user (presence)
//	<prefix>{ch}:x   sorted set: client -> expiry (ms, server time)
type chanKeys struct {
	stream, meta, events, members, expiry string
}

func (b *Broker) keys(ch string) chanKeys {
	base := b.cfg.Prefix + "{" + ch + "}"
	return chanKeys{
		stream:  base + ":h",
		meta:    base + ":m",
		events:  base + ":e",
		members: base + ":p",
		expiry:  base + ":x",
	}
}

// shardFor returns the tailer that owns ch: the Redis server by jump
// consistent hashing of the name (the redis backend's mapping: same Addrs,
// same server), then one of its Config.Tailers by another hash of it.
func (b *Broker) shardFor(ch string) *shard {
	if len(b.shards) == 1 {
		return b.shards[0]
	}
	h := redisbase.HashString(ch)
	srv := 0
	if n := len(b.cmds); n > 1 {
		srv = redisbase.JumpHash(h, n)
	}
	t := b.cfg.Tailers
	return b.shards[srv*t+int(((h*0x9E3779B97F4A7C15)>>32)%uint64(t))]
}

// chanState is one subscribed channel on this node. epoch, last and
// evCursor belong to the shard's tailer (set before the state is
// published in shard.chans); pruneAt is guarded by shard.mu.
type chanState struct {
	ch       string
	keys     chanKeys
	epoch    string // of the last delivered publication; "" unknown
	last     uint64 // last delivered seq in epoch (the XREAD cursor)
	evCursor string // id of the last presence event seen
	pruneAt  time.Time

	// Guarded by the shard's mu. empty is the epoch Since handed out while
	// the channel had no epoch in Redis (nothing is stored for it; see
	// emptyEpochArg), "" none; seen counts the reads that found entries
	// (and reconnects), each of which forgets empty.
	empty string
	seen  uint64
}

// shard is one tailer of a Redis server: a dedicated connection on which
// it reads every subscribed channel of the shard with XREAD BLOCK, and the
// server's command client.
type shard struct {
	b    *Broker
	addr string
	cmd  *goredis.Client
	tail *goredis.Client // pool of one connection, used by tailLoop only

	tailID      atomic.Int64 // CLIENT ID of the tail connection
	reconnected atomic.Bool  // the tail connection was (re)made: validate
	lostTail    atomic.Bool  // the tail connection failed or was made again: forget empty epochs
	seenGen     atomic.Uint64

	mu      sync.Mutex
	chans   map[string]*chanState
	pending map[string]*pendingSub
	gen     uint64 // bumped on every change of chans

	kickC chan struct{} // the subscribed set changed
	wake  chan struct{} // wakes an idle tailer
}

// clientOptions are the options of every connection to addr.
func (c Config) clientOptions(addr string) *goredis.Options {
	return &goredis.Options{
		Addr:         addr,
		Username:     c.Username,
		Password:     c.Password,
		TLSConfig:    c.TLS,
		DB:           c.DB,
		DialTimeout:  c.DialTimeout,
		ReadTimeout:  c.ReadTimeout,
		WriteTimeout: c.ReadTimeout,
		// No retries: a publish whose reply was lost may have been
		// applied, and retrying it would store it twice.
		MaxRetries: -1,
	}
}

// newShard makes a tailer of the server at addr; cmd is the server's
// command client, shared by its tailers.
func newShard(b *Broker, addr string, cmd *goredis.Client) *shard {
	sh := &shard{
		b:       b,
		addr:    addr,
		cmd:     cmd,
		chans:   make(map[string]*chanState),
		pending: make(map[string]*pendingSub),
		kickC:   make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
	}
	to := b.cfg.clientOptions(addr)
	to.PoolSize = 1
	to.MinIdleConns = 0
	to.OnConnect = func(ctx context.Context, cn *goredis.Conn) error {
		id, err := cn.ClientID(ctx).Result()
		if err != nil {
			return err
		}
		if sh.tailID.Swap(id) != 0 {
			sh.lostTail.Store(true)
		}
		sh.reconnected.Store(true)
		return nil
	}
	sh.tail = goredis.NewClient(to)
	return sh
}

// kicker makes the tailer take up a changed subscribed set at once: while
// the tailer has not read the current set, it interrupts its blocking
// XREAD with CLIENT UNBLOCK (a few times if needed: an unblock that comes
// before the XREAD blocks does nothing).
func (sh *shard) kicker(ctx context.Context) {
	defer sh.b.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sh.kickC:
		}
		for ctx.Err() == nil {
			sh.mu.Lock()
			target := sh.gen
			sh.mu.Unlock()
			if sh.seenGen.Load() >= target {
				break
			}
			kick(sh.wake)
			if id := sh.tailID.Load(); id != 0 {
				_ = sh.cmd.ClientUnblock(ctx, id).Err()
			}
			sleep(ctx, 5*time.Millisecond)
		}
	}
}

// tailLoop reads every subscribed channel of the shard: one XREAD BLOCK
// over all their streams (messages and presence events), re-issued with
// the new set when it changes, from the last seq delivered of each.
func (sh *shard) tailLoop(ctx context.Context) {
	defer sh.b.wg.Done()
	cfg := sh.b.cfg
	backoff := cfg.ReconnectMin
	var (
		lastValidate time.Time
		chans        []*chanState
		streams      []string // XREAD's keys then ids, for chans
		idx          = make(map[string]int)
		builtGen     uint64
		built        bool
	)
	for ctx.Err() == nil {
		sh.mu.Lock()
		gen := sh.gen
		if !built || gen != builtGen {
			chans = chans[:0]
			for _, st := range sh.chans {
				chans = append(chans, st)
			}
		}
		sh.mu.Unlock()
		sh.seenGen.Store(gen)
		if len(chans) == 0 {
			built = false
			select {
			case <-ctx.Done():
			case <-sh.wake:
			}
			continue
		}
		validated := false
		if sh.lostTail.Swap(false) {
			// Entries may have come and gone unseen.
			sh.forgetEmpty()
		}
		if sh.reconnected.Swap(false) || time.Since(lastValidate) >= cfg.ValidateInterval {
			began := time.Now() // what changed after its reads waits for the next check
			if err := sh.validate(ctx, chans); err != nil {
				sh.reconnected.Store(true)
				cfg.Logger.Warn("redis-streams: validate", "addr", sh.addr, "err", err)
				sleep(ctx, backoff)
				backoff = min(2*backoff, cfg.ReconnectMax)
				continue
			}
			lastValidate = began
			validated = true
		}
		// The arguments are rebuilt when the set changes or validation
		// may have moved cursors; otherwise only the ids of the streams
		// that delivered are updated (below).
		if !built || gen != builtGen || validated {
			streams = make([]string, 2*2*len(chans))
			clear(idx)
			for i, st := range chans {
				streams[2*i] = st.keys.stream
				streams[2*i+1] = st.keys.events
				streams[2*len(chans)+2*i] = cursor(st.last)
				streams[2*len(chans)+2*i+1] = st.evCursor
				idx[st.keys.stream] = i
				idx[st.keys.events] = -1 - i
			}
			built, builtGen = true, gen
		}
		// The read ends by the next check, so a channel whose epoch
		// changed behind the cursor is noticed within ValidateInterval,
		// not up to a Block later.
		block := min(cfg.Block, max(cfg.ValidateInterval-time.Since(lastValidate), time.Millisecond))
		res, err := sh.tail.XRead(ctx, &goredis.XReadArgs{
			Streams: streams,
			Count:   int64(cfg.ReadCount),
			Block:   block,
		}).Result()
		if err == goredis.Nil {
			backoff = cfg.ReconnectMin
			continue // timeout or CLIENT UNBLOCK
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			sh.reconnected.Store(true)
			sh.lostTail.Store(true)
			cfg.Logger.Warn("redis-streams: read", "addr", sh.addr, "err", err)
			sleep(ctx, backoff)
			backoff = min(2*backoff, cfg.ReconnectMax)
			continue
		}
		backoff = cfg.ReconnectMin
		for _, xs := range res {
			i, ok := idx[xs.Stream]
			if !ok {
				continue
			}
			if i >= 0 {
				st := chans[i]
				sh.deliverPubs(ctx, st, xs.Messages)
				streams[2*len(chans)+2*i] = cursor(st.last)
			} else {
				st := chans[-1-i]
				sh.deliverEvents(st, xs.Messages)
				streams[2*len(chans)+2*(-1-i)+1] = st.evCursor
			}
		}
	}
}

// forgetEmpty drops every empty-channel epoch the shard's channels hold.
func (sh *shard) forgetEmpty() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, st := range sh.chans {
		st.empty = ""
		st.seen++
	}
}

// cursor is the stream id after which XREAD reads.
func cursor(seq uint64) string { return strconv.FormatUint(seq, 10) + "-0" }

// validate checks the channels' epoch and seq in Redis against what this
// node delivered. A channel whose epoch changed or vanished (its data was
// lost or expired) is read again from the start of its stream; one whose
// seq went backwards within the epoch (writes lost in a crash without
// fsync) gets a new epoch, so no seq is ever reused with other data.
func (sh *shard) validate(ctx context.Context, chans []*chanState) error {
	pipe := sh.cmd.Pipeline()
	cmds := make([]*goredis.SliceCmd, len(chans))
	for i, st := range chans {
		cmds[i] = pipe.HMGet(ctx, st.keys.meta, "e", "s")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	for i, st := range chans {
		v := cmds[i].Val()
		epoch, _ := v[0].(string)
		s, _ := v[1].(string)
		seq, _ := strconv.ParseUint(s, 10, 64)
		switch {
		case epoch == "" || epoch != st.epoch:
			if st.epoch != "" || st.last != 0 {
				sh.b.cfg.Logger.Info("redis-streams: channel epoch changed", "channel", st.ch, "was", st.epoch, "now", epoch)
			}
			st.epoch, st.last = "", 0
		case seq < st.last:
			err := resetScript.Run(ctx, sh.cmd, []string{st.keys.stream, st.keys.meta},
				st.epoch, strconv.FormatUint(st.last, 10), sh.b.newEpoch(), sh.b.metaTTLArg).Err()
			if err != nil {
				return err
			}
			sh.b.cfg.Logger.Warn("redis-streams: channel seq went backwards: new epoch", "channel", st.ch, "delivered", st.last, "stored", seq)
			st.epoch, st.last = "", 0
		}
	}
	return nil
}

// deliverPubs hands the entries read from st's stream to the handler, in
// seq order. An entry that does not follow the last delivered one (an
// epoch that changed under the reader, or a gap) is preceded by what
// XRANGE still holds of the gap.
func (sh *shard) deliverPubs(ctx context.Context, st *chanState, msgs []goredis.XMessage) {
	if len(msgs) > 0 {
		sh.mu.Lock()
		st.empty = ""
		st.seen++
		sh.mu.Unlock()
	}
	pubs := make([]brokers.Publication, 0, len(msgs))
	for _, m := range msgs {
		seq, ok := seqOf(m.ID)
		if !ok {
			continue
		}
		d, _ := m.Values["d"].(string)
		e, _ := m.Values["e"].(string)
		if e != st.epoch {
			fill := st.epoch != "" // the stream restarted under us
			st.epoch, st.last = e, 0
			if fill && seq > 1 {
				pubs = append(pubs, sh.fill(ctx, st, 1, seq-1)...)
			}
		} else if seq > st.last+1 && st.last > 0 {
			pubs = append(pubs, sh.fill(ctx, st, st.last+1, seq-1)...)
		}
		if seq <= st.last {
			continue
		}
		pubs = append(pubs, brokers.Publication{Seq: seq, Epoch: e, Data: []byte(d)})
		st.last = seq
	}
	if len(pubs) == 0 {
		return
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.chans[st.ch] != st {
		return // unsubscribed meanwhile
	}
	h := sh.b.h
	for _, p := range pubs {
		h.HandlePublication(st.ch, p)
	}
}

// fill reads seqs from..to of st's epoch with XRANGE and advances st.last
// over what it found. A range the stream no longer holds (trimmed) is
// skipped.
func (sh *shard) fill(ctx context.Context, st *chanState, from, to uint64) []brokers.Publication {
	msgs, err := sh.cmd.XRange(ctx, st.keys.stream, strconv.FormatUint(from, 10)+"-0", strconv.FormatUint(to, 10)+"-0").Result()
	if err != nil {
		sh.b.cfg.Logger.Warn("redis-streams: fill", "channel", st.ch, "err", err)
		return nil
	}
	var out []brokers.Publication
	for _, m := range msgs {
		seq, ok := seqOf(m.ID)
		e, _ := m.Values["e"].(string)
		if !ok || e != st.epoch || seq <= st.last {
			continue
		}
		d, _ := m.Values["d"].(string)
		out = append(out, brokers.Publication{Seq: seq, Epoch: e, Data: []byte(d)})
		st.last = seq
	}
	return out
}

// deliverEvents hands presence events to the handler and schedules the
// expiry check of joined members.
func (sh *shard) deliverEvents(st *chanState, msgs []goredis.XMessage) {
	if len(msgs) == 0 {
		return
	}
	st.evCursor = msgs[len(msgs)-1].ID
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.chans[st.ch] != st {
		return
	}
	h := sh.b.h
	for _, m := range msgs {
		t, _ := m.Values["t"].(string)
		c, _ := m.Values["c"].(string)
		u, _ := m.Values["u"].(string)
		mem := brokers.Member{User: u, Client: c}
		switch t {
		case "j":
			if x, _ := m.Values["x"].(string); x != "" {
				if ms, err := strconv.ParseInt(x, 10, 64); err == nil {
					st.notePruneLocked(time.Now().Add(time.Duration(ms) * time.Millisecond))
				}
			}
			h.HandlePresence(st.ch, brokers.Join, mem)
		case "l":
			h.HandlePresence(st.ch, brokers.Leave, mem)
		}
	}
}

// notePruneLocked schedules a prune of st at t, if earlier than the one
// scheduled. Call with shard.mu held.
func (st *chanState) notePruneLocked(t time.Time) {
	if st.pruneAt.IsZero() || t.Before(st.pruneAt) {
		st.pruneAt = t
	}
}

// pruner prunes the subscribed channels that have a member due to expire,
// so the members of a node that crashed leave within their TTL (plus
// PruneInterval), announced once to every node.
func (sh *shard) pruner(ctx context.Context) {
	defer sh.b.wg.Done()
	t := time.NewTicker(sh.b.cfg.PruneInterval)
	defer t.Stop()
	var due []*chanState
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		due = due[:0]
		sh.mu.Lock()
		for _, st := range sh.chans {
			if !st.pruneAt.IsZero() && !st.pruneAt.After(now) {
				st.pruneAt = time.Time{}
				due = append(due, st)
			}
		}
		sh.mu.Unlock()
		for _, st := range due {
			next, err := sh.b.Presence.Prune(ctx, sh.cmd, st.ch).Int64()
			sh.mu.Lock()
			switch {
			case err != nil:
				st.notePruneLocked(now.Add(sh.b.cfg.PruneInterval))
			case next >= 0:
				st.notePruneLocked(time.Now().Add(time.Duration(next) * time.Millisecond))
			}
			sh.mu.Unlock()
		}
	}
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
