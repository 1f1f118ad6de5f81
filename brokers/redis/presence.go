package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
)

// Presence: per channel, a hash client -> user and a sorted set client ->
// expiry (ms, Redis server time). Every presence script first prunes the
// members whose expiry passed, publishing a leave for each, so a member is
// announced as left exactly once, by whichever node prunes first. Each
// node also prunes the channels it subscribed when a member is due to
// expire (it learns expiries from the join events and from its own
// calls), so a crashed node's members leave within the TTL (plus one
// filler tick) even when nobody calls Join or Refresh.

// keyGrace is how long presence keys outlive the last expiry, so that
// members are pruned (and announced) before the keys vanish.
const keyGrace = time.Minute

// Join implements brokers.Presence.
func (b *Broker) Join(ctx context.Context, ch string, m brokers.Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("redis: join %s: ttl %v: must be positive", ch, ttl)
	}
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis: join %s: %w", ch, err)
	}
	b.notePresenceTTL(ttl)
	k := b.keys(ch)
	ms := max(ttl.Milliseconds(), 1)
	err := b.presenceCall(ctx, ch, joinScript, []string{k.members, k.expiry, k.pubsub},
		b.publishCmd, m.Client, m.User, msToArg(ms), msToArg(ms+keyGrace.Milliseconds()))
	if err != nil {
		return fmt.Errorf("redis: join %s: %w", ch, err)
	}
	return nil
}

// Leave implements brokers.Presence.
func (b *Broker) Leave(ctx context.Context, ch string, m brokers.Member) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis: leave %s: %w", ch, err)
	}
	k := b.keys(ch)
	if err := b.presenceCall(ctx, ch, leaveScript, []string{k.members, k.expiry, k.pubsub}, b.publishCmd, m.Client); err != nil {
		return fmt.Errorf("redis: leave %s: %w", ch, err)
	}
	return nil
}

// Refresh implements brokers.Presence.
func (b *Broker) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("redis: refresh %s: ttl %v: must be positive", ch, ttl)
	}
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("redis: refresh %s: %w", ch, err)
	}
	b.notePresenceTTL(ttl)
	k := b.keys(ch)
	ttlMS := max(ttl.Milliseconds(), 1)
	args := make([]any, 0, 3+len(ms))
	args = append(args, b.publishCmd, msToArg(ttlMS), msToArg(ttlMS+keyGrace.Milliseconds()))
	for _, m := range ms {
		args = append(args, m.Client)
	}
	if err := b.presenceCall(ctx, ch, refreshScript, []string{k.members, k.expiry, k.pubsub}, args...); err != nil {
		return fmt.Errorf("redis: refresh %s: %w", ch, err)
	}
	return nil
}

// Members implements brokers.Presence. It lists unexpired members sorted
// by expiry.
func (b *Broker) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("redis: members %s: %w", ch, err)
	}
	k := b.keys(ch)
	res, err := runScript(ctx, b.shardFor(ch), membersScript, []string{k.members, k.expiry})
	if err != nil {
		return nil, fmt.Errorf("redis: members %s: %w", ch, wrapErr(err))
	}
	vals, ok := res.([]any)
	if !ok || len(vals)%2 != 0 {
		return nil, fmt.Errorf("redis: members %s: %w", ch, errBadReply)
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
func (b *Broker) presenceCall(ctx context.Context, ch string, sc *goredis.Script, keys []string, args ...any) error {
	sh := b.shardFor(ch)
	res, err := runScript(ctx, sh, sc, keys, args...)
	if err != nil {
		return wrapErr(err)
	}
	next, ok := res.(int64)
	if !ok {
		return errBadReply
	}
	if next >= 0 {
		if cs := sh.lookup(ch); cs != nil {
			cs.notePrune(time.Now().Add(time.Duration(next) * time.Millisecond))
		}
	}
	return nil
}

// notePresenceTTL records ttl if it is the shortest so far (the filler
// checks expiry a few times per TTL).
func (b *Broker) notePresenceTTL(ttl time.Duration) {
	for {
		cur := b.minPresenceTTL.Load()
		if cur != 0 && cur <= int64(ttl) {
			return
		}
		if b.minPresenceTTL.CompareAndSwap(cur, int64(ttl)) {
			for _, sh := range b.shards {
				kick(sh.fillWake)
			}
			return
		}
	}
}

// parseSince reads the since script's {epoch, seq[, entries]} reply.
func parseSince(res any) ([]brokers.Publication, brokers.Position, error) {
	vals, ok := res.([]any)
	if !ok || len(vals) < 2 {
		return nil, brokers.Position{}, errBadReply
	}
	epoch, ok1 := vals[0].(string)
	seq, ok2 := vals[1].(int64)
	if !ok1 || !ok2 || seq < 0 {
		return nil, brokers.Position{}, errBadReply
	}
	pos := brokers.Position{Seq: uint64(seq), Epoch: epoch}
	if len(vals) < 3 {
		return nil, pos, nil
	}
	entries, ok := vals[2].([]any)
	if !ok {
		return nil, brokers.Position{}, errBadReply
	}
	pubs := make([]brokers.Publication, 0, len(entries))
	for _, e := range entries {
		kv, ok := e.([]any)
		if !ok || len(kv) != 2 {
			return nil, brokers.Position{}, errBadReply
		}
		id, _ := kv[0].(string)
		fields, _ := kv[1].([]any)
		s, _, _ := cutDash(id)
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || (len(fields) != 2 && len(fields) != 4) {
			return nil, brokers.Position{}, errBadReply
		}
		data, _ := fields[1].(string)
		p := brokers.Publication{Seq: n, Epoch: epoch, Data: []byte(data)}
		if len(fields) == 4 {
			w, _ := fields[3].(string)
			if p.Was, _, err = cutWas(w); err != nil {
				return nil, brokers.Position{}, errBadReply
			}
			p.Was.Epoch = strings.Clone(p.Was.Epoch)
		}
		pubs = append(pubs, p)
	}
	return pubs, pos, nil
}

func cutDash(id string) (string, string, bool) {
	for i := 0; i < len(id); i++ {
		if id[i] == '-' {
			return id[:i], id[i+1:], true
		}
	}
	return id, "", false
}
