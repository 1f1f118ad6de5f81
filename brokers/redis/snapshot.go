package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
)

// Snapshots: the hash <prefix>{ch}:s holds a channel's latest snapshot,
// q = seq, e = epoch, d = data, with no expiry (a snapshot is there to
// outlive the history window; deleting the key forgets it). snapScript
// checks and writes in one step, so concurrent writers on any nodes end
// with the rule of brokers.Snapshots.
//
// KEYS: snapshot. ARGV: 1 seq, 2 epoch, 3 data.
// Returns {1} when stored, else {0, seq, epoch, data} (the kept one).
var snapScript = goredis.NewScript(`
local q = redis.call('hget', KEYS[1], 'q')
local e = redis.call('hget', KEYS[1], 'e')
if q and e == ARGV[2] then
  -- seqs compared as decimal strings: exact beyond 2^53
  local a, b = ARGV[1], q
  if #a < #b or (#a == #b and a <= b) then
    return {0, q, e, redis.call('hget', KEYS[1], 'd') or ''}
  end
end
redis.call('hset', KEYS[1], 'q', ARGV[1], 'e', ARGV[2], 'd', ARGV[3])
return {1}
`)

func (b *Broker) snapKey(ch string) string { return b.cfg.Prefix + "{" + ch + "}:s" }

// StoreSnapshot implements brokers.Snapshots.
func (b *Broker) StoreSnapshot(ctx context.Context, ch string, s brokers.Snapshot) (bool, brokers.Snapshot, error) {
	if err := b.check(ctx); err != nil {
		return false, brokers.Snapshot{}, fmt.Errorf("redis: snapshot %s: %w", ch, err)
	}
	sh := b.shardFor(ch)
	res, err := runScript(ctx, sh, snapScript, []string{b.snapKey(ch)}, strconv.FormatUint(s.Seq, 10), s.Epoch, s.Data)
	if err != nil {
		return false, brokers.Snapshot{}, fmt.Errorf("redis: snapshot %s: %w", ch, wrapErr(err))
	}
	arr, ok := res.([]any)
	if !ok || len(arr) == 0 {
		return false, brokers.Snapshot{}, fmt.Errorf("redis: snapshot %s: unexpected reply %T", ch, res)
	}
	if n, _ := arr[0].(int64); n == 1 {
		s.Data = slices.Clone(s.Data)
		return true, s, nil
	}
	if len(arr) != 4 {
		return false, brokers.Snapshot{}, fmt.Errorf("redis: snapshot %s: %w", ch, brokers.ErrBadSnapshot)
	}
	kept, err := snapFrom(arr[1], arr[2], arr[3])
	if err != nil {
		return false, brokers.Snapshot{}, fmt.Errorf("redis: snapshot %s: %w", ch, err)
	}
	return false, kept, nil
}

// LoadSnapshot implements brokers.Snapshots.
func (b *Broker) LoadSnapshot(ctx context.Context, ch string) (brokers.Snapshot, bool, error) {
	if err := b.check(ctx); err != nil {
		return brokers.Snapshot{}, false, fmt.Errorf("redis: snapshot %s: %w", ch, err)
	}
	sh := b.shardFor(ch)
	vals, err := sh.cmd().HMGet(ctx, b.snapKey(ch), "q", "e", "d").Result()
	sh.noteMoved(err)
	if err != nil {
		return brokers.Snapshot{}, false, fmt.Errorf("redis: snapshot %s: %w", ch, wrapErr(err))
	}
	if len(vals) != 3 || (vals[0] == nil && vals[1] == nil && vals[2] == nil) {
		return brokers.Snapshot{}, false, nil
	}
	s, err := snapFrom(vals[0], vals[1], vals[2])
	if err != nil {
		return brokers.Snapshot{}, false, fmt.Errorf("redis: snapshot %s: %w", ch, err)
	}
	return s, true, nil
}

// snapFrom builds a snapshot from the fields Redis returned; any of them
// missing or of the wrong type is ErrBadSnapshot (the key may have been
// written by something else).
func snapFrom(q, e, d any) (brokers.Snapshot, error) {
	qs, ok1 := q.(string)
	es, ok2 := e.(string)
	ds, ok3 := d.(string)
	if !ok1 || !ok2 || !ok3 {
		return brokers.Snapshot{}, brokers.ErrBadSnapshot
	}
	seq, err := strconv.ParseUint(qs, 10, 64)
	if err != nil {
		return brokers.Snapshot{}, errors.Join(brokers.ErrBadSnapshot, err)
	}
	return brokers.Snapshot{Seq: seq, Epoch: es, Data: []byte(ds)}, nil
}
