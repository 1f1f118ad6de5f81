package redisbase

import goredis "github.com/redis/go-redis/v9"

// ResetScript starts a new epoch when a channel's seq went backwards: a
// node delivered seq ARGV[2] of epoch ARGV[1] but Redis now holds less
// (writes lost in a failover, or a crash without fsync). Without it later
// publications would reuse seqs that clients already hold with other data.
//
// KEYS: the channel's stream (history), its meta hash (e = epoch, s = last
// seq). ARGV: 1 epoch, 2 seq seen, 3 new epoch, 4 meta TTL s. Returns 1
// when it reset the channel.
var ResetScript = goredis.NewScript(`
if redis.call('hget', KEYS[2], 'e') == ARGV[1]
  and tonumber(redis.call('hget', KEYS[2], 's') or '0') < tonumber(ARGV[2]) then
  redis.call('del', KEYS[1], KEYS[2])
  redis.call('hset', KEYS[2], 'e', ARGV[3], 's', 0)
  redis.call('expire', KEYS[2], ARGV[4])
  return 1
end
return 0
`)
