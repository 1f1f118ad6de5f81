package redisstream

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Presence is brokers/internal/redisbase's (the redis backend's design): per
// channel a hash client -> user and a sorted set client -> expiry, kept by
// scripts that prune the expired first and announce each join and leave,
// atomically, so a leave is announced once. Events are appended to the
// channel's events stream, which the tailers read with the messages.
//
// presenceBackend is the broker as redisbase.Presence needs it.
type presenceBackend struct{ b *Broker }

func (p presenceBackend) Check(ctx context.Context) error { return p.b.check(ctx) }

func (p presenceBackend) PresenceKeys(ch string) ([]string, any) {
	k := p.b.keys(ch)
	return []string{k.members, k.expiry, k.events}, eventsMaxLen
}

func (p presenceBackend) Run(ctx context.Context, ch string, sc *goredis.Script, keys []string, args ...any) (any, error) {
	res, err := sc.Run(ctx, p.b.shardFor(ch).cmd, keys, args...).Result()
	if err != nil {
		return nil, wrapErr(err)
	}
	return res, nil
}

// NotePrune schedules the prune of ch if this node serves it.
func (p presenceBackend) NotePrune(ch string, at time.Time) {
	sh := p.b.shardFor(ch)
	sh.mu.Lock()
	if st := sh.chans[ch]; st != nil {
		st.notePruneLocked(at)
	}
	sh.mu.Unlock()
}

// NoteTTL does nothing: the prune loop runs every PruneInterval.
func (p presenceBackend) NoteTTL(time.Duration) {}
