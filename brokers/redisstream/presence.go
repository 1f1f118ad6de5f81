package redisstream

import (
	"context"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
)

// Presence is the redis backend's design: per channel a hash client ->
// user and a sorted set client -> expiry (ms, Redis server time); every
// presence script first prunes the members whose expiry passed and
// announces each leave, atomically, so a leave is announced once. Events
// are appended to the channel's events stream, which the tailers read
// with the messages.

// keyGrace is how long presence keys outlive the last expiry, so that
// members are pruned (and announced) before the keys vanish.
const keyGrace = time.Minute

// Join implements brokers.Presence.
func (b *Broker) Join(ctx context.Context, ch string, m brokers.Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("redis-streams: join %s: ttl %v: must be positive", ch, ttl)
	}
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis-streams: join %s: %w", ch, err)
	}
	ms := max(ttl.Milliseconds(), 1)
	if err := b.presenceCall(ctx, ch, joinScript, m.Client, m.User, msArg(ms), msArg(ms+keyGrace.Milliseconds())); err != nil {
		return fmt.Errorf("redis-streams: join %s: %w", ch, err)
	}
	return nil
}

// Leave implements brokers.Presence.
func (b *Broker) Leave(ctx context.Context, ch string, m brokers.Member) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis-streams: leave %s: %w", ch, err)
	}
	if err := b.presenceCall(ctx, ch, leaveScript, m.Client); err != nil {
		return fmt.Errorf("redis-streams: leave %s: %w", ch, err)
	}
	return nil
}

// Refresh implements brokers.Presence.
func (b *Broker) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("redis-streams: refresh %s: ttl %v: must be positive", ch, ttl)
	}
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis-streams: refresh %s: %w", ch, err)
	}
	ttlMS := max(ttl.Milliseconds(), 1)
	args := make([]any, 0, 2+len(ms))
	args = append(args, msArg(ttlMS), msArg(ttlMS+keyGrace.Milliseconds()))
	for _, m := range ms {
		args = append(args, m.Client)
	}
	if err := b.presenceCall(ctx, ch, refreshScript, args...); err != nil {
		return fmt.Errorf("redis-streams: refresh %s: %w", ch, err)
	}
	return nil
}

// Members implements brokers.Presence.
func (b *Broker) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("redis-streams: members %s: %w", ch, err)
	}
	k := b.keys(ch)
	res, err := membersScript.Run(ctx, b.shardFor(ch).cmd, []string{k.members, k.expiry}).Result()
	if err != nil {
		return nil, fmt.Errorf("redis-streams: members %s: %w", ch, wrapErr(err))
	}
	vals, ok := res.([]any)
	if !ok || len(vals)%2 != 0 {
		return nil, fmt.Errorf("redis-streams: members %s: %w", ch, errBadReply)
	}
	out := make([]brokers.Member, 0, len(vals)/2)
	for i := 0; i < len(vals); i += 2 {
		c, _ := vals[i].(string)
		u, _ := vals[i+1].(string)
		out = append(out, brokers.Member{User: u, Client: c})
	}
	return out, nil
}

// presenceCall runs a presence script and schedules the channel's next
// prune from its reply (ms until the earliest expiry, -1 for none).
func (b *Broker) presenceCall(ctx context.Context, ch string, sc *goredis.Script, args ...any) error {
	sh := b.shardFor(ch)
	k := b.keys(ch)
	next, err := sc.Run(ctx, sh.cmd, []string{k.members, k.expiry, k.events}, args...).Int64()
	if err != nil {
		return wrapErr(err)
	}
	if next >= 0 {
		at := time.Now().Add(time.Duration(next) * time.Millisecond)
		sh.mu.Lock()
		if st := sh.chans[ch]; st != nil {
			st.notePruneLocked(at)
		}
		sh.mu.Unlock()
	}
	return nil
}

func msArg(ms int64) string { return strconv.FormatInt(ms, 10) }
