package redisstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/redisbase"
)

// Broker is the redis-streams backend. Make one with New.
type Broker struct {
	// Presence implements brokers.Presence (brokers/internal/redisbase).
	*redisbase.Presence

	cfg Config

	nodeID   string
	epochCtr atomic.Uint64
	// Script arguments that never change, rendered once.
	histArg, histTTLArg, metaTTLArg string

	mu      sync.Mutex // guards the lifecycle fields below
	started bool
	closed  bool
	ready   atomic.Bool       // started and not closed
	cmds    []*goredis.Client // per server
	shards  []*shard          // per server, Config.Tailers each
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	h       brokers.Handler
}

var (
	_ brokers.Broker   = (*Broker)(nil)
	_ brokers.History  = (*Broker)(nil)
	_ brokers.Presence = (*Broker)(nil)
	_ brokers.Pinger   = (*Broker)(nil)
)

// New returns a broker for cfg. It only stores the configuration: Start
// connects.
func New(cfg Config) *Broker {
	var id [6]byte
	_, _ = rand.Read(id[:])
	c := cfg.withDefaults()
	b := &Broker{
		cfg:        c,
		nodeID:     hex.EncodeToString(id[:]),
		histArg:    strconv.Itoa(c.HistorySize),
		histTTLArg: strconv.FormatInt(max(c.HistoryTTL.Milliseconds(), 1), 10),
		metaTTLArg: strconv.FormatInt(max(int64(c.MetaTTL/time.Second), 1), 10),
	}
	b.Presence = redisbase.NewPresence("redis-streams", presenceAnnounce, errBadReply, presenceBackend{b})
	return b
}

// errBadReply: a script answered something this code does not expect.
var errBadReply = errors.New("redis-streams: unexpected reply")

// Start implements brokers.Broker: it connects every shard (failing with
// brokers.ErrUnavailable when one cannot be reached) and starts the
// tailers.
func (b *Broker) Start(ctx context.Context, h brokers.Handler) error {
	if err := b.cfg.Validate(); err != nil {
		return err
	}
	redisbase.WarnPlaintextPassword(b.cfg.Logger, "redis-streams", b.cfg.Password != "", b.cfg.TLS != nil, b.cfg.Addrs...)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("redis-streams: start: %w", brokers.ErrClosed)
	}
	if b.started {
		return errors.New("redis-streams: start: already started")
	}
	cmds := make([]*goredis.Client, len(b.cfg.Addrs))
	var shards []*shard
	for i, addr := range b.cfg.Addrs {
		cmds[i] = goredis.NewClient(b.cfg.clientOptions(addr))
		for range b.cfg.Tailers {
			shards = append(shards, newShard(b, addr, cmds[i]))
		}
	}
	closeAll := func() {
		for _, c := range cmds {
			_ = c.Close()
		}
		for _, sh := range shards {
			_ = sh.tail.Close()
		}
	}
	for i, c := range cmds {
		if err := c.Ping(ctx).Err(); err != nil {
			closeAll()
			return fmt.Errorf("redis-streams: start: %s: %w", b.cfg.Addrs[i], wrapErr(err))
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	b.cmds, b.shards, b.cancel, b.h, b.started = cmds, shards, cancel, h, true
	for _, sh := range shards {
		b.wg.Add(3)
		go sh.tailLoop(runCtx)
		go sh.kicker(runCtx)
		go sh.pruner(runCtx)
	}
	b.ready.Store(true)
	return nil
}

// Close implements brokers.Broker.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.ready.Store(false)
	cmds, shards, cancel := b.cmds, b.shards, b.cancel
	b.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	for _, sh := range shards {
		_ = sh.tail.Close() // interrupts a blocked XREAD
	}
	b.wg.Wait()
	for _, c := range cmds {
		_ = c.Close()
	}
	return nil
}

func (b *Broker) check(ctx context.Context) error {
	if !b.ready.Load() {
		return brokers.ErrClosed
	}
	return ctx.Err()
}

// newEpoch returns an epoch no other node or call uses.
func (b *Broker) newEpoch() string {
	return b.nodeID + "." + strconv.FormatUint(b.epochCtr.Add(1), 36)
}

// Publish implements brokers.Broker: one script appends data to the
// channel's stream with the next seq as entry id.
func (b *Broker) Publish(ctx context.Context, ch string, data []byte) (brokers.Position, error) {
	if err := b.check(ctx); err != nil {
		return brokers.Position{}, fmt.Errorf("redis-streams: publish %s: %w", ch, err)
	}
	sh := b.shardFor(ch)
	k := b.keys(ch)
	epoch, _, _ := sh.emptyEpochArg(ch)
	res, err := publishScript.Run(ctx, sh.cmd, []string{k.stream, k.meta},
		data, b.histArg, b.histTTLArg, b.metaTTLArg, epoch).Text()
	if err != nil {
		return brokers.Position{}, fmt.Errorf("redis-streams: publish %s: %w", ch, wrapErr(err))
	}
	s, epoch, ok := strings.Cut(res, ":")
	seq, perr := strconv.ParseUint(s, 10, 64)
	if !ok || perr != nil || seq == 0 {
		return brokers.Position{}, fmt.Errorf("redis-streams: publish %s: %w", ch, errBadReply)
	}
	return brokers.Position{Seq: seq, Epoch: epoch}, nil
}

// Since implements brokers.History: XRANGE after since and the position,
// read atomically.
func (b *Broker) Since(ctx context.Context, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position, error) {
	if err := b.check(ctx); err != nil {
		return nil, brokers.Position{}, fmt.Errorf("redis-streams: since %s: %w", ch, err)
	}
	sh := b.shardFor(ch)
	k := b.keys(ch)
	epoch, st, seen := sh.emptyEpochArg(ch)
	res, err := sinceScript.Run(ctx, sh.cmd, []string{k.stream, k.meta},
		strconv.FormatUint(since, 10), strconv.Itoa(max(limit, 0)), epoch, b.metaTTLArg).Result()
	if err != nil {
		return nil, brokers.Position{}, fmt.Errorf("redis-streams: since %s: %w", ch, wrapErr(err))
	}
	pubs, pos, _, err := parseSince(res)
	if err != nil {
		return nil, brokers.Position{}, fmt.Errorf("redis-streams: since %s: %w", ch, err)
	}
	if pos.Seq == 0 {
		sh.keepEmpty(st, seen, pos.Epoch)
	}
	return pubs, pos, nil
}

// emptyEpochArg is the epoch the scripts give ch when Redis holds none
// for it: the one this node handed out for the empty channel, if it
// serves ch and has, else a new one. It also returns ch's state (nil when
// not served) and its seen count, for keepEmpty.
//
// Nothing is stored for an empty channel (a subscriber to a channel nobody
// publishes on costs Redis nothing), so its epoch lives on the node: kept
// while the node serves the channel and has read no entry of it (nor lost
// its connection, when entries could come and go unseen), and kept by the
// node's own first publication. Other nodes hand out their own: a client
// resuming from one the first publication did not keep gets
// `recovered: false` and resyncs; never a silent loss.
func (sh *shard) emptyEpochArg(ch string) (string, *chanState, uint64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.chans[ch]
	if st == nil {
		return sh.b.newEpoch(), nil, 0
	}
	if st.empty != "" {
		return st.empty, st, st.seen
	}
	return sh.b.newEpoch(), st, st.seen
}

// keepEmpty records epoch as st's empty-channel epoch, unless st was
// unsubscribed or read entries since seen was taken.
func (sh *shard) keepEmpty(st *chanState, seen uint64, epoch string) {
	if st == nil {
		return
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.chans[st.ch] == st && st.seen == seen && st.empty == "" {
		st.empty = epoch
	}
}

// Subscribe implements brokers.Broker. It reads the channel's position and
// the last presence event id, then hands the channel to the shard's tailer,
// which reads the stream from that position on: nothing published after
// Subscribe returns is missed.
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis-streams: subscribe %s: %w", ch, err)
	}
	sh := b.shardFor(ch)
	sh.mu.Lock()
	if _, ok := sh.chans[ch]; ok {
		sh.mu.Unlock()
		return nil
	}
	// An Unsubscribe made while this reads the position cancels it.
	p := sh.pending[ch]
	if p == nil {
		p = &pendingSub{}
		sh.pending[ch] = p
	}
	p.n++
	unsubs := p.unsubs
	sh.mu.Unlock()
	k := b.keys(ch)
	res, err := sinceScript.Run(ctx, sh.cmd, []string{k.stream, k.meta, k.events},
		"0", "0", b.newEpoch(), b.metaTTLArg).Result()
	var pos brokers.Position
	var evID string
	if err == nil {
		_, pos, evID, err = parseSince(res)
		if err == nil && evID == "" {
			err = errBadReply
		}
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if p.n--; p.n == 0 {
		delete(sh.pending, ch)
	}
	if err != nil {
		return fmt.Errorf("redis-streams: subscribe %s: %w", ch, wrapErr(err))
	}
	if _, ok := sh.chans[ch]; ok || p.unsubs != unsubs {
		return nil // subscribed concurrently, or unsubscribed meanwhile
	}
	st := &chanState{ch: ch, keys: k, last: pos.Seq, evCursor: evID}
	if pos.Seq > 0 {
		st.epoch = pos.Epoch // else none is stored: the first entry read sets it
	}
	sh.chans[ch] = st
	sh.gen++
	kick(sh.kickC)
	return nil
}

// pendingSub counts the Subscribe calls of one channel reading its
// position, and the Unsubscribe calls made meanwhile.
type pendingSub struct {
	n      int
	unsubs uint64
}

// Unsubscribe implements brokers.Broker. Nothing of ch is delivered once
// it returns (the tailer delivers under the same lock and checks).
func (b *Broker) Unsubscribe(ctx context.Context, ch string) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis-streams: unsubscribe %s: %w", ch, err)
	}
	sh := b.shardFor(ch)
	sh.mu.Lock()
	_, ok := sh.chans[ch]
	if ok {
		delete(sh.chans, ch)
		sh.gen++
	}
	if p := sh.pending[ch]; p != nil {
		p.unsubs++
	}
	sh.mu.Unlock()
	if ok {
		kick(sh.kickC)
	}
	return nil
}

// Ping implements brokers.Pinger, for readiness: every server takes writes
// (every publish and subscribe runs a script that may write; a read-only
// replica or a server out of memory answers PING but refuses them, see
// redisbase.ProbeWrite).
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis-streams: ping: %w", err)
	}
	for i, c := range b.cmds {
		if err := redisbase.ProbeWrite(ctx, c); err != nil {
			return fmt.Errorf("redis-streams: ping %s: %w", b.cfg.Addrs[i], wrapErr(err))
		}
	}
	return nil
}

// parseSince reads the since script's {epoch, seq, entries[, last event
// id]} reply.
func parseSince(res any) ([]brokers.Publication, brokers.Position, string, error) {
	vals, ok := res.([]any)
	if !ok || len(vals) < 3 {
		return nil, brokers.Position{}, "", errBadReply
	}
	epoch, ok1 := vals[0].(string)
	seq, ok2 := vals[1].(int64)
	entries, ok3 := vals[2].([]any)
	if !ok1 || !ok2 || !ok3 || seq < 0 {
		return nil, brokers.Position{}, "", errBadReply
	}
	var evID string
	if len(vals) > 3 {
		evID, _ = vals[3].(string)
	}
	pos := brokers.Position{Seq: uint64(seq), Epoch: epoch}
	pubs := make([]brokers.Publication, 0, len(entries))
	for _, e := range entries {
		kv, ok := e.([]any)
		if !ok || len(kv) != 2 {
			return nil, brokers.Position{}, "", errBadReply
		}
		id, _ := kv[0].(string)
		fields, _ := kv[1].([]any)
		n, ok := seqOf(id)
		if !ok {
			return nil, brokers.Position{}, "", errBadReply
		}
		var data string
		for i := 0; i+1 < len(fields); i += 2 {
			if f, _ := fields[i].(string); f == "d" {
				data, _ = fields[i+1].(string)
			}
		}
		pubs = append(pubs, brokers.Publication{Seq: n, Epoch: epoch, Data: []byte(data)})
	}
	return pubs, pos, evID, nil
}

// seqOf returns the seq of stream entry id "<seq>-0".
func seqOf(id string) (uint64, bool) {
	s, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// isConnErr reports an error that says the connection, or the server's
// state, is the problem rather than the command.
func isConnErr(err error) bool {
	if err == nil {
		return false
	}
	var re goredis.Error
	if errors.As(err, &re) {
		for _, p := range []string{"READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "OOM", "BUSY", "NOREPLICAS"} {
			if goredis.HasErrorPrefix(err, p) {
				return true
			}
		}
		return false
	}
	return !errors.Is(err, errBadReply) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// wrapErr marks connection errors as brokers.ErrUnavailable.
func wrapErr(err error) error {
	if isConnErr(err) {
		return fmt.Errorf("%w: %w", brokers.ErrUnavailable, err)
	}
	return err
}

// kick wakes a goroutine waiting on c without blocking.
func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
