package redis

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/redisbase"
)

// Lifecycle states of a Broker.
const (
	stateNew int32 = iota
	stateRunning
	stateClosed
)

// Broker is the Redis backend. Create it with New; see the package doc.
type Broker struct {
	// Presence implements brokers.Presence (brokers/internal/redisbase).
	*redisbase.Presence

	cfg Config

	// nodeID names this node in Redis: its publish-counter field, probe
	// channel and the epochs it creates. Random per Broker.
	nodeID    string
	nodeField string
	counter   atomic.Uint64 // publish counter (outbox dedupe) and epoch suffix

	// Script arguments that never change, rendered once.
	histSizeArg, histTTLArg, metaTTLArg string
	publishCmd                          string // publish or spublish
	// args are the publish script's constant arguments, boxed once.
	args struct {
		sha, histSize, histTTL, metaTTL, nodeID, nodeField, publishCmd any
		// waitN, waitMS: the WAIT pipelined after the scripts
		// (Config.WaitReplicas); waitN is nil without one.
		waitN, waitMS any
	}

	lifeMu  sync.Mutex // serializes Start and Close
	state   atomic.Int32
	handler brokers.Handler
	ctx     context.Context // canceled by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	closers []io.Closer // go-redis clients, closed last
	// shards grows when a cluster gains a master (under shardsMu;
	// allShards); fixed otherwise.
	shards   []*shard
	shardsMu sync.RWMutex
	// route maps a cluster hash slot to its shard, and topo follows the
	// cluster's topology (Cluster only; topology.go).
	route atomic.Pointer[routeTable]
	topo  *topology

	outboxLen atomic.Int64 // publications held in all shards' outboxes
	stats     struct {
		published, pipelines, reconnects, fills atomic.Uint64
	}
	// minPresenceTTL is the shortest presence TTL seen (ns): presence
	// expiry is checked a few times per TTL.
	minPresenceTTL atomic.Int64
}

var (
	_ brokers.Broker   = (*Broker)(nil)
	_ brokers.History  = (*Broker)(nil)
	_ brokers.Presence = (*Broker)(nil)
	_ brokers.Pinger   = (*Broker)(nil)
)

// New returns a Broker configured by cfg. It does not connect until Start.
func New(cfg Config) *Broker {
	cfg = cfg.withDefaults()
	b := &Broker{cfg: cfg, nodeID: randomID()}
	b.Presence = redisbase.NewPresence("redis", presenceAnnounce, errBadReply, presenceBackend{b})
	b.nodeField = "n:" + b.nodeID
	b.histSizeArg = strconv.Itoa(max(cfg.HistorySize, 0))
	b.histTTLArg = msToArg(cfg.HistoryTTL.Milliseconds())
	b.metaTTLArg = strconv.FormatInt(max(int64(cfg.MetaTTL/time.Second), 1), 10)
	b.publishCmd = "publish"
	if cfg.Cluster {
		b.publishCmd = "spublish"
	}
	a := &b.args
	a.sha, a.histSize, a.histTTL, a.metaTTL = publishScript.Hash(), b.histSizeArg, b.histTTLArg, b.metaTTLArg
	a.nodeID, a.nodeField, a.publishCmd = b.nodeID, b.nodeField, b.publishCmd
	if cfg.WaitReplicas > 0 {
		a.waitN, a.waitMS = strconv.Itoa(cfg.WaitReplicas), msToArg(cfg.WaitTimeout.Milliseconds())
	}
	return b
}

// NodeID returns the random id this broker uses in Redis.
func (b *Broker) NodeID() string { return b.nodeID }

// Start connects to every shard, loads the scripts, subscribes the probe
// channels and starts the background goroutines. It fails (and leaves
// nothing running) when a shard cannot be reached: a node does not start
// without Redis. After Close it fails with brokers.ErrClosed.
func (b *Broker) Start(ctx context.Context, h brokers.Handler) error {
	if h == nil {
		return errors.New("redis: start: nil handler")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis: start: %w", err)
	}
	if err := b.cfg.Validate(); err != nil {
		return err
	}
	dataAddrs := b.cfg.Addrs
	if b.cfg.SentinelMaster != "" {
		dataAddrs = b.cfg.SentinelAddrs // the master is found there, on the same network
	}
	redisbase.WarnPlaintextPassword(b.cfg.Logger, "redis", b.cfg.Password != "", b.cfg.TLS != nil, dataAddrs...)
	redisbase.WarnPlaintextPassword(b.cfg.Logger, "redis: sentinel", b.cfg.SentinelPassword != "", b.cfg.TLS != nil, b.cfg.SentinelAddrs...)
	b.lifeMu.Lock()
	defer b.lifeMu.Unlock()
	switch b.state.Load() {
	case stateRunning:
		return errors.New("redis: start: already started")
	case stateClosed:
		return fmt.Errorf("redis: start: %w", brokers.ErrClosed)
	}
	b.handler = h
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if err := b.buildShards(ctx); err != nil {
		b.shutdown()
		return fmt.Errorf("redis: start: %w: %w", brokers.ErrUnavailable, err)
	}
	for _, sh := range b.allShards() {
		if err := sh.connect(ctx); err != nil && !errors.Is(err, errRetired) {
			b.shutdown()
			return fmt.Errorf("redis: start: shard %s: %w: %w", sh.masterAddrOrName(), brokers.ErrUnavailable, err)
		}
	}
	b.shardsMu.Lock()
	for _, sh := range b.shards {
		sh.start()
	}
	b.shardsMu.Unlock()
	b.state.Store(stateRunning)
	return nil
}

// buildShards creates the go-redis clients and one shard per Redis
// server (per master with Cluster).
func (b *Broker) buildShards(ctx context.Context) error {
	switch {
	case b.cfg.SentinelMaster != "":
		fc := goredis.NewFailoverClient(&goredis.FailoverOptions{
			MasterName:            b.cfg.SentinelMaster,
			SentinelAddrs:         b.cfg.SentinelAddrs,
			Username:              b.cfg.Username,
			Password:              b.cfg.Password,
			SentinelUsername:      b.cfg.SentinelUsername,
			SentinelPassword:      b.cfg.SentinelPassword,
			TLSConfig:             b.cfg.TLS,
			DB:                    b.cfg.DB,
			Protocol:              2,
			DisableIdentity:       true,
			MaxRetries:            -1,
			DialTimeout:           b.cfg.DialTimeout,
			ReadTimeout:           b.cfg.ReadTimeout,
			WriteTimeout:          b.cfg.ReadTimeout,
			ContextTimeoutEnabled: true,
		})
		b.closers = append(b.closers, fc)
		sh := newShard(b, 0, "sentinel:"+b.cfg.SentinelMaster, fc)
		sh.newPubSub = func(ctx context.Context) (*goredis.PubSub, error) { return fc.Subscribe(ctx), nil }
		b.shards = []*shard{sh}
	case b.cfg.Cluster:
		return b.buildCluster(ctx)
	default:
		for i, addr := range b.cfg.Addrs {
			c := goredis.NewClient(b.options(addr))
			b.closers = append(b.closers, c)
			sh := newShard(b, i, addr, c)
			sh.newPubSub = func(ctx context.Context) (*goredis.PubSub, error) { return c.Subscribe(ctx), nil }
			b.shards = append(b.shards, sh)
		}
	}
	return nil
}

// options are the go-redis options of a client of addr. Retries are off:
// a retried pipeline could publish twice; the broker retries through its
// outbox, which deduplicates.
func (b *Broker) options(addr string) *goredis.Options {
	return &goredis.Options{
		Addr:                     addr,
		Username:                 b.cfg.Username,
		Password:                 b.cfg.Password,
		TLSConfig:                b.cfg.TLS,
		DB:                       b.cfg.DB,
		Protocol:                 2,
		DisableIdentity:          true,
		MaxRetries:               -1,
		DialTimeout:              b.cfg.DialTimeout,
		ReadTimeout:              b.cfg.ReadTimeout,
		WriteTimeout:             b.cfg.ReadTimeout,
		ContextTimeoutEnabled:    true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

// Close stops the broker: the goroutines exit, pending publications fail
// with brokers.ErrClosed (those in the outbox are dropped), and no Handler
// method runs after it returns. Closing twice, or a broker never started,
// is a no-op.
func (b *Broker) Close() error {
	b.lifeMu.Lock()
	defer b.lifeMu.Unlock()
	if b.state.Load() != stateRunning {
		b.state.Store(stateClosed)
		return nil
	}
	b.state.Store(stateClosed)
	b.shutdown()
	return nil
}

// shutdown stops goroutines and closes connections; lifeMu is held.
func (b *Broker) shutdown() {
	if b.cancel != nil {
		b.cancel()
	}
	// A rebalance starts no shard once the context is canceled.
	shards := b.allShards()
	for _, sh := range shards {
		sh.close()
	}
	b.wg.Wait()
	for _, sh := range shards {
		sh.failWaiters(brokers.ErrClosed)
	}
	for _, c := range b.closers {
		_ = c.Close()
	}
	b.closers = nil
	b.shardsMu.Lock()
	b.shards = nil // a failed Start may be retried
	b.shardsMu.Unlock()
	b.route.Store(nil)
}

// Ping reports an error wrapping brokers.ErrUnavailable while any shard is
// not fully up (disconnected, or still replaying its outbox), or its server
// does not take writes (a read-only replica, out of memory: see
// redisbase.ProbeWrite) within Config.ProbeTimeout.
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis: ping: %w", err)
	}
	for _, sh := range b.allShards() {
		if b.topo != nil && sh.slotCount.Load() == 0 {
			continue // retired: its slots moved to other masters
		}
		if st := sh.state.Load(); st != shardUp {
			return fmt.Errorf("redis: ping %s: %s (outbox %d): %w", sh.masterAddrOrName(), stateName(st), b.outboxLen.Load(), brokers.ErrUnavailable)
		}
		pctx, cancel := context.WithTimeout(ctx, b.cfg.ProbeTimeout)
		err := sh.probeWrite(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("redis: ping %s: %w: %w", sh.masterAddrOrName(), brokers.ErrUnavailable, err)
		}
	}
	return nil
}

// Publish implements brokers.Broker. It copies data.
//
// While the channel's shard is up, the publication joins the shard's next
// pipeline and Publish returns the seq and epoch Redis gave it. While the
// shard is down, it is queued in the outbox, delivered at once to this
// node's subscribers under a node-local epoch, and Publish returns that
// local position (see the package doc); when the outbox is full it fails
// with brokers.ErrUnavailable. While the shard replays its outbox, Publish
// waits for its turn and returns the real position.
func (b *Broker) Publish(ctx context.Context, ch string, data []byte) (brokers.Position, error) {
	if err := b.check(ctx); err != nil {
		return brokers.Position{}, fmt.Errorf("redis: publish %s: %w", ch, err)
	}
	req := newPubReq(ch, data)
	sh := b.lockedShard(ch)
	if sh.closed {
		sh.mu.Unlock()
		req.release()
		return brokers.Position{}, fmt.Errorf("redis: publish %s: %w", ch, brokers.ErrClosed)
	}
	// The counter is taken under the shard lock, so that pending (and
	// so Redis) sees each shard's counters in increasing order.
	req.counter = b.counter.Add(1)
	sh.pending = append(sh.pending, req)
	sh.mu.Unlock()
	kick(sh.writerWake)
	select {
	case res := <-req.done:
		if res.owned {
			req.release()
		}
		if res.err != nil {
			return brokers.Position{}, fmt.Errorf("redis: publish %s: %w", ch, res.err)
		}
		return res.pos, nil
	case <-ctx.Done():
		// The publication may still go out; req is left to the writer.
		return brokers.Position{}, fmt.Errorf("redis: publish %s: %w", ch, ctx.Err())
	}
}

// Subscribe implements brokers.Broker. It returns once Redis confirmed the
// subscription (or at once, when the shard is down: the subscription is
// made when it reconnects, and the gap is filled from history).
// Subscribing twice is the same as once.
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis: subscribe %s: %w", ch, err)
	}
	cs := b.lockedShard(ch).subscribe(ch)
	select {
	case <-cs.ready:
		return nil
	case <-ctx.Done():
		b.lockedShard(ch).unsubscribe(ch, cs)
		return fmt.Errorf("redis: subscribe %s: %w", ch, ctx.Err())
	case <-b.ctx.Done():
		return fmt.Errorf("redis: subscribe %s: %w", ch, brokers.ErrClosed)
	}
}

// Unsubscribe implements brokers.Broker. Delivery of ch stops before it
// returns; the UNSUBSCRIBE is sent in the shard's next batch.
func (b *Broker) Unsubscribe(ctx context.Context, ch string) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis: unsubscribe %s: %w", ch, err)
	}
	b.lockedShard(ch).unsubscribe(ch, nil)
	return nil
}

// Since implements brokers.History: one script reads the history after
// since and the current position atomically. It fails with
// brokers.ErrUnavailable while the shard is down.
func (b *Broker) Since(ctx context.Context, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position, error) {
	if err := b.check(ctx); err != nil {
		return nil, brokers.Position{}, fmt.Errorf("redis: since %s: %w", ch, err)
	}
	sh := b.shardFor(ch)
	if sh.state.Load() == shardDown {
		return nil, brokers.Position{}, fmt.Errorf("redis: since %s: shard %s down: %w", ch, sh.name, brokers.ErrUnavailable)
	}
	limit = b.historyLimit(limit)
	k := b.keys(ch)
	// A channel Redis holds no epoch for gets the one this node handed
	// out for it already (see chanState.empty), else a new one; nothing
	// is stored for it.
	cs := sh.lookup(ch)
	epoch, seen := "", uint64(0)
	if cs != nil {
		cs.mu.Lock()
		seen = cs.seen
		if e := cs.empty.Load(); e != nil {
			epoch = *e
		}
		cs.mu.Unlock()
	}
	if epoch == "" {
		epoch = b.newEpoch()
	}
	res, err := runScript(ctx, sh, sinceScript, []string{k.history, k.meta},
		strconv.FormatUint(since, 10), strconv.Itoa(limit), epoch, b.metaTTLArg)
	if err != nil {
		return nil, brokers.Position{}, fmt.Errorf("redis: since %s: %w", ch, wrapErr(err))
	}
	pubs, pos, err := parseSince(res)
	if err != nil {
		return nil, brokers.Position{}, fmt.Errorf("redis: since %s: %w", ch, err)
	}
	if cs != nil {
		cs.mu.Lock()
		cs.noteSince(pos)
		switch {
		case pos.Seq > 0:
			cs.forgetEmpty()
		case cs.seen == seen && !cs.removed && cs.empty.Load() == nil:
			// Nothing was delivered or filled since the read: keep it.
			e := strings.Clone(pos.Epoch)
			cs.empty.Store(&e)
		}
		cs.mu.Unlock()
	}
	return pubs, pos, nil
}

// historyLimit caps a Since limit at what history can hold.
func (b *Broker) historyLimit(limit int) int {
	if b.cfg.HistorySize <= 0 || limit <= 0 {
		return 0
	}
	return min(limit, b.cfg.HistorySize)
}

// check returns ctx's error or brokers.ErrClosed when the broker is not
// running. Callers wrap the result.
func (b *Broker) check(ctx context.Context) error {
	if b.state.Load() != stateRunning {
		return brokers.ErrClosed
	}
	return ctx.Err()
}

// newEpoch is an epoch for a channel that has none: the node id and a
// counter value, unique across nodes and calls.
func (b *Broker) newEpoch() string {
	return b.nodeID + strconv.FormatUint(b.counter.Add(1), 10)
}

// shardFor returns the shard that owns ch.
func (b *Broker) shardFor(ch string) *shard {
	if rt := b.route.Load(); rt != nil {
		return rt[slotOf(ch)]
	}
	if len(b.shards) == 1 {
		return b.shards[0]
	}
	return b.shards[redisbase.JumpHash(redisbase.HashString(ch), len(b.shards))]
}

// ShardOf returns the index of the shard (Redis server, or cluster master
// in slot order) that owns ch. For tests and operations tooling.
func (b *Broker) ShardOf(ch string) int { return b.shardFor(ch).idx }

// OutboxLen returns how many publications wait in the outbox.
func (b *Broker) OutboxLen() int { return int(b.outboxLen.Load()) }

// randomID returns 8 random characters of lower-case base32hex.
func randomID() string {
	const alphabet = "0123456789abcdefghijklmnopqrstuv"
	var raw [8]byte
	_, _ = rand.Read(raw[:])
	for i := range raw {
		raw[i] = alphabet[raw[i]&31]
	}
	return string(raw[:])
}

// kick wakes the goroutine waiting on c without blocking.
func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
