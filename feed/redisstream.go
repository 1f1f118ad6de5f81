package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/gateway"
)

// RedisStreamConfig configures a feed over the redis-streams broker's
// per-channel streams.
type RedisStreamConfig struct {
	// Clients are connections to every Redis server of the nodes'
	// broker.redis_streams.addrs (any order: a channel is looked for on
	// every server, so a changed sharding loses nothing). The feed does
	// not close them. Their read timeout must allow Poll.
	Clients []*goredis.Client
	// Prefix starts the nodes' keys; default "sgs".
	Prefix string
	// Pattern selects channels (see Match).
	Pattern string
	// MaxMessageSize is the nodes' client.max_message_size. Default 65536.
	MaxMessageSize int
	// Rescan is how often the feed looks for new channels (SCAN) and
	// checks the epochs of the known ones. Default 1s.
	Rescan time.Duration
	// Poll is how long one idle read waits for new entries (XREAD BLOCK,
	// shared among the servers). Default 200ms.
	Poll time.Duration
	// MaxChannels bounds the channels followed; past it Next fails.
	// Default 100000.
	MaxChannels int
	// Log gets dropped entries; nil discards.
	Log *slog.Logger
}

// Defaults of RedisStreamConfig, and the read sizes: one XREAD names at
// most readKeys streams and takes at most readCount entries of each, so
// at most readKeys*readCount publications are buffered.
const (
	defaultRescan      = time.Second
	defaultPoll        = 200 * time.Millisecond
	defaultMaxChannels = 100000
	readKeys           = 64
	readCount          = 32
	scanCount          = 1000
)

// RedisStream is a feed over the per-channel streams of the
// redis-streams broker: it finds the matching channels with SCAN and
// reads each from its last seq with XREAD. It runs no goroutine: Next
// does the reads. Not safe for concurrent use.
type RedisStream struct {
	cfg      RedisStreamConfig
	resume   func(string) (brokers.Position, bool)
	chans    map[string]*rsChan
	order    [][]*rsChan // per server, the channels found there
	next     time.Time   // next rescan
	buf      []Publication
	idle     bool // the last pass read nothing: block on the next
	rejected atomic.Uint64
	closed   bool
}

// rsChan is one followed channel.
type rsChan struct {
	ch, key, meta string
	srv           int
	epoch         string // of the last entry delivered or the epoch at the cursor; "" not known
	last          uint64 // the seq delivered last
	cursor        string // the id read last (XREAD after it); "" means <last>-0
}

func (rc *rsChan) from() string {
	if rc.cursor != "" {
		return rc.cursor
	}
	return strconv.FormatUint(rc.last, 10) + "-0"
}

// reset moves the cursor to seq last of epoch.
func (rc *rsChan) reset(epoch string, last uint64) {
	rc.epoch, rc.last, rc.cursor = epoch, last, ""
}

var _ Reader = (*RedisStream)(nil)

// OpenRedisStream starts a feed. Each channel starts after r.Channel's
// position when its epoch is the channel's current one, else at the
// oldest entry its stream holds. r.After is not used.
func OpenRedisStream(ctx context.Context, cfg RedisStreamConfig, r Resume) (*RedisStream, error) {
	if len(cfg.Clients) == 0 {
		return nil, fmt.Errorf("%w: Clients is empty", ErrConfig)
	}
	if err := checkPattern(cfg.Pattern); err != nil {
		return nil, err
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sgs"
	}
	if strings.ContainsAny(cfg.Prefix, "{}") {
		return nil, fmt.Errorf("%w: Prefix %q must not contain '{' or '}'", ErrConfig, cfg.Prefix)
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = defaultRescan
	}
	if cfg.Poll <= 0 {
		cfg.Poll = defaultPoll
	}
	if cfg.MaxChannels <= 0 {
		cfg.MaxChannels = defaultMaxChannels
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if r.Channel == nil {
		r.Channel = func(string) (brokers.Position, bool) { return brokers.Position{}, false }
	}
	f := &RedisStream{cfg: cfg, resume: r.Channel, chans: map[string]*rsChan{}, order: make([][]*rsChan, len(cfg.Clients))}
	if err := f.rescan(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// Next implements Reader.
func (f *RedisStream) Next(ctx context.Context) (Publication, error) {
	for {
		if f.closed {
			return Publication{}, ErrClosed
		}
		if len(f.buf) > 0 {
			p := f.buf[0]
			f.buf[0] = Publication{}
			f.buf = f.buf[1:]
			return p, nil
		}
		if err := ctx.Err(); err != nil {
			return Publication{}, err
		}
		if time.Now().After(f.next) {
			if err := f.rescan(ctx); err != nil {
				return Publication{}, err
			}
		}
		if err := f.readAll(ctx); err != nil {
			return Publication{}, err
		}
	}
}

// rescan finds the matching channels on every server and checks the
// epochs of all of them.
func (f *RedisStream) rescan(ctx context.Context) error {
	match := globEscape(f.cfg.Prefix) + "{" + globEscape(f.cfg.Pattern) + "}:h"
	for srv, c := range f.cfg.Clients {
		it := c.Scan(ctx, 0, match, scanCount).Iterator()
		for it.Next(ctx) {
			key := it.Val()
			ch, ok := f.channelOf(key)
			if !ok {
				continue // a key the pattern's glob matched but Match does not
			}
			if _, known := f.chans[ch]; known {
				continue
			}
			if len(f.chans) >= f.cfg.MaxChannels {
				return fmt.Errorf("feed: more than MaxChannels (%d) channels match %q", f.cfg.MaxChannels, f.cfg.Pattern)
			}
			rc := &rsChan{ch: ch, key: key, meta: strings.TrimSuffix(key, ":h") + ":m", srv: srv}
			if p, ok := f.resume(ch); ok {
				rc.reset(p.Epoch, p.Seq)
			}
			f.chans[ch] = rc
			f.order[srv] = append(f.order[srv], rc)
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("feed: scan %s: %w", c.Options().Addr, err)
		}
		if err := f.checkEpochs(ctx, srv); err != nil {
			return err
		}
	}
	f.next = time.Now().Add(f.cfg.Rescan)
	return nil
}

// checkEpochs reads every channel's current epoch on server srv: a
// channel whose epoch is not the one at its cursor (Redis lost the data,
// or the channel was silent past its TTL and started over) is read again
// from the oldest entry of the new epoch, which its cursor would skip.
func (f *RedisStream) checkEpochs(ctx context.Context, srv int) error {
	chans := f.order[srv]
	for i := 0; i < len(chans); i += scanCount {
		part := chans[i:min(i+scanCount, len(chans))]
		pipe := f.cfg.Clients[srv].Pipeline()
		cmds := make([]*goredis.StringCmd, len(part))
		exists := make([]*goredis.IntCmd, len(part))
		for j, rc := range part {
			cmds[j] = pipe.HGet(ctx, rc.meta, "e")
			exists[j] = pipe.Exists(ctx, rc.key, rc.meta)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
			return fmt.Errorf("feed: epochs on %s: %w", f.cfg.Clients[srv].Options().Addr, err)
		}
		for j, rc := range part {
			e, err := cmds[j].Result()
			switch {
			case errors.Is(err, goredis.Nil):
				// No meta. With the stream gone too the channel is gone
				// (silent past MetaTTL): forget it; if it comes back,
				// SCAN finds it anew. A stream without meta (written
				// by hand) stays followed from its cursor.
				if exists[j].Val() == 0 {
					delete(f.chans, rc.ch)
				}
			case err == nil && e != rc.epoch:
				rc.reset(e, 0)
			}
		}
	}
	kept := chans[:0]
	for _, rc := range chans {
		if f.chans[rc.ch] == rc {
			kept = append(kept, rc)
		}
	}
	clear(chans[len(kept):])
	f.order[srv] = kept
	return nil
}

// readAll reads every server once, buffering what it finds.
func (f *RedisStream) readAll(ctx context.Context) error {
	// An idle pass blocks Poll in all, shared among its reads, so a new
	// entry waits at most about Poll whatever the number of channels.
	block := time.Duration(-1)
	if f.idle {
		reads := 0
		for _, chans := range f.order {
			reads += (len(chans) + readKeys - 1) / readKeys
		}
		block = max(f.cfg.Poll/time.Duration(max(reads, 1)), time.Millisecond)
	}
	found := false
	for srv, chans := range f.order {
		if len(chans) == 0 {
			continue
		}
		for i := 0; i < len(chans); i += readKeys {
			n, err := f.read(ctx, srv, chans[i:min(i+readKeys, len(chans))], block)
			if err != nil {
				return err
			}
			found = found || n > 0
		}
	}
	if !found && !hasChannels(f.order) {
		// Nothing to read yet: wait for the next rescan.
		t := time.NewTimer(min(f.cfg.Poll, time.Until(f.next)))
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	f.idle = !found
	return nil
}

func hasChannels(order [][]*rsChan) bool {
	for _, o := range order {
		if len(o) > 0 {
			return true
		}
	}
	return false
}

// read reads the given channels of server srv from their cursors.
func (f *RedisStream) read(ctx context.Context, srv int, chans []*rsChan, block time.Duration) (int, error) {
	streams := make([]string, 0, 2*len(chans))
	for _, rc := range chans {
		streams = append(streams, rc.key)
	}
	for _, rc := range chans {
		streams = append(streams, rc.from())
	}
	res, err := f.cfg.Clients[srv].XRead(ctx, &goredis.XReadArgs{Streams: streams, Count: readCount, Block: block}).Result()
	if errors.Is(err, goredis.Nil) {
		return 0, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("feed: xread on %s: %w", f.cfg.Clients[srv].Options().Addr, err)
	}
	byKey := make(map[string]*rsChan, len(chans))
	for _, rc := range chans {
		byKey[rc.key] = rc
	}
	n := 0
	for _, s := range res {
		rc := byKey[s.Stream]
		if rc == nil {
			continue
		}
		for _, m := range s.Messages {
			p, ok, restart := f.decode(rc, m)
			if restart {
				// An entry of another epoch: the channel started over
				// under the cursor. Read the new epoch from its start.
				rc.reset(p.Epoch, 0)
				break
			}
			rc.cursor = m.ID // past it, delivered or dropped
			if !ok {
				continue
			}
			rc.last, rc.epoch = p.Seq, p.Epoch
			f.buf = append(f.buf, p)
			n++
		}
	}
	return n, nil
}

// decode checks one stream entry. restart reports an entry of an epoch
// other than the cursor's, seq after it (p holds its epoch).
func (f *RedisStream) decode(rc *rsChan, m goredis.XMessage) (p Publication, ok, restart bool) {
	seq, rest, found := strings.Cut(m.ID, "-")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !found || rest != "0" || err != nil || n <= rc.last {
		f.reject("entry id", rc.ch, m.ID)
		return Publication{}, false, false
	}
	d, _ := m.Values["d"].(string)
	e, _ := m.Values["e"].(string)
	if e == "" || len(m.Values) != 2 {
		f.reject("fields", rc.ch, m.ID)
		return Publication{}, false, false
	}
	if rc.epoch != "" && e != rc.epoch && rc.last > 0 {
		return Publication{Epoch: e}, false, true
	}
	from, data, bin, err := gateway.DecodePublication(brokers.Publication{Seq: n, Epoch: e, Data: []byte(d)}, f.cfg.MaxMessageSize)
	if err != nil {
		f.reject("payload", rc.ch, m.ID)
		return Publication{}, false, false
	}
	return Publication{Ch: rc.ch, Seq: n, Epoch: e, From: from, Data: data, Binary: bin}, true, false
}

func (f *RedisStream) reject(what, ch, id string) {
	f.rejected.Add(1)
	f.cfg.Log.Warn("feed: dropped a malformed stream entry (someone with write access to Redis, or a bug)",
		"what", what, "channel", ch, "id", id)
}

// channelOf returns the channel of a stream key <prefix>{ch}:h, if it is
// a valid channel name (not one written by hand) the pattern matches.
func (f *RedisStream) channelOf(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, f.cfg.Prefix+"{")
	ch, ok2 := strings.CutSuffix(rest, "}:h")
	if !ok || !ok2 || !gateway.ValidChannel(ch) {
		return "", false
	}
	return ch, Match(f.cfg.Pattern, ch)
}

// Rejected implements Reader.
func (f *RedisStream) Rejected() uint64 { return f.rejected.Load() }

// Close implements Reader.
func (f *RedisStream) Close() error {
	f.closed = true
	f.buf = nil
	return nil
}

// globEscape escapes the glob characters of s (SCAN MATCH), except '*'.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '?', '[', ']', '\\', '^', '-':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
