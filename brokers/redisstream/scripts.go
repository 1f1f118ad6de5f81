package redisstream

import (
	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers/internal/redisbase"
)

// The Lua scripts. Each runs atomically on the Redis that owns the channel,
// so a channel's seq, epoch and stream, or its presence list and the events
// announcing its changes, never disagree. go-redis runs them with EVALSHA
// and falls back to EVAL on NOSCRIPT (a restarted server).
//
// Stream entries (the channel's stream, <prefix>{ch}:h): id <seq>-0,
// fields d = data, e = epoch. Presence events (<prefix>{ch}:e): automatic
// ids, fields t = j (join) or l (leave), c = client, u = user, and for a
// join x = ttl ms (receivers schedule the member's expiry check).
//
// Times are the Redis server's clock (TIME), so node clocks do not matter.

// publishScript assigns the next seq and appends to the stream, in one
// step: the seq is the entry id, so stream order is seq order.
//
// KEYS: stream, meta. ARGV: 1 data, 2 history size, 3 history TTL ms,
// 4 meta TTL s, 5 the epoch to create when the channel has none.
//
// Returns "<seq>:<epoch>".
var publishScript = goredis.NewScript(`
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('del', KEYS[1])
  redis.call('hset', KEYS[2], 'e', epoch)
end
local seq = redis.call('hincrby', KEYS[2], 's', 1)
redis.call('expire', KEYS[2], ARGV[4])
local s = string.format('%d', seq)
redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], s .. '-0', 'd', ARGV[1], 'e', epoch)
redis.call('pexpire', KEYS[1], ARGV[3])
return s .. ':' .. epoch
`)

// sinceScript reads the stream after a seq and the current position in one
// step, writing nothing. A channel with no epoch has seq 0 and the epoch
// ARGV[3] (kept by the node, not stored: a subscriber must cost Redis
// nothing; see emptyEpochArg). With KEYS[3] (the presence events stream)
// it also returns the id of its last entry: Subscribe tails from there.
//
// KEYS: stream, meta[, events]. ARGV: 1 since, 2 limit, 3 epoch to use if
// none, 4 meta TTL s.
//
// Returns {epoch, seq, entries (XRANGE format)[, last event id]}.
var sinceScript = goredis.NewScript(`
local epoch = redis.call('hget', KEYS[2], 'e')
local seq = 0
if not epoch then
  epoch = ARGV[3]
else
  seq = tonumber(redis.call('hget', KEYS[2], 's') or '0')
  redis.call('expire', KEYS[2], ARGV[4])
end
local since = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local entries = {}
if limit > 0 and since < seq then
  local from = string.format('%d', since + 1) .. '-0'
  entries = redis.call('xrange', KEYS[1], from, '+', 'COUNT', limit)
end
if KEYS[3] then
  local last = '0-0'
  local ev = redis.call('xrevrange', KEYS[3], '+', '-', 'COUNT', 1)
  if #ev > 0 then last = ev[1][1] end
  return {epoch, seq, entries, last}
end
return {epoch, seq, entries}
`)

// resetScript starts a new epoch when a channel's seq went backwards
// (brokers/internal/redisbase). KEYS: stream, meta.
var resetScript = redisbase.ResetScript

// presenceAnnounce is the announce function of the presence scripts
// (brokers/internal/redisbase, shared with the redis backend): it
// announces on the channel's events stream (KEYS[3]), capped near ARGV[1]
// entries (eventsMaxLen).
const presenceAnnounce = `
local function announce(kind, c, u, ttl)
  if ttl then
    redis.call('xadd', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 't', kind, 'c', c, 'u', u, 'x', ttl)
  else
    redis.call('xadd', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 't', kind, 'c', c, 'u', u)
  end
  redis.call('pexpire', KEYS[3], 600000)
end
`

// eventsMaxLen is about how many presence events a channel's events
// stream keeps.
const eventsMaxLen = "1000"
