package redisstream

import goredis "github.com/redis/go-redis/v9"

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
// step. A channel with no epoch gets one (so the first publication keeps
// the epoch a reader saw). With KEYS[3] (the presence events stream) it
// also returns the id of its last entry: Subscribe tails from there.
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
  redis.call('del', KEYS[1])
  redis.call('hset', KEYS[2], 'e', epoch, 's', 0)
else
  seq = tonumber(redis.call('hget', KEYS[2], 's') or '0')
end
redis.call('expire', KEYS[2], ARGV[4])
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

// resetScript starts a new epoch when a channel's seq went backwards: a
// node delivered seq ARGV[2] of epoch ARGV[1] but Redis now holds less
// (an AOF that was not fsynced). Without it later publications would reuse
// seqs that clients already hold with other data.
//
// KEYS: stream, meta. ARGV: 1 epoch, 2 seq seen, 3 new epoch, 4 meta TTL s.
// Returns 1 when it reset the channel.
var resetScript = goredis.NewScript(`
if redis.call('hget', KEYS[2], 'e') == ARGV[1]
  and tonumber(redis.call('hget', KEYS[2], 's') or '0') < tonumber(ARGV[2]) then
  redis.call('del', KEYS[1], KEYS[2])
  redis.call('hset', KEYS[2], 'e', ARGV[3], 's', 0)
  redis.call('expire', KEYS[2], ARGV[4])
  return 1
end
return 0
`)

// presenceLib is shared by the presence scripts (the redis backend's
// design, announcing on a stream instead of pub/sub). KEYS: members hash,
// expiry zset, events stream.
//
// prune removes members whose expiry passed and announces each leave (at
// most 1000 per call). Being atomic, a member is pruned, and its leave
// announced, once, however many nodes prune the channel at the same time.
//
// nextExpiry returns ms until the earliest expiry, -1 for an empty list, 0
// when prune left work for the next call.
const presenceLib = `
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local more = false
local function announce(kind, c, u, ttl)
  if ttl then
    redis.call('xadd', KEYS[3], 'MAXLEN', '~', '1000', '*', 't', kind, 'c', c, 'u', u, 'x', ttl)
  else
    redis.call('xadd', KEYS[3], 'MAXLEN', '~', '1000', '*', 't', kind, 'c', c, 'u', u)
  end
  redis.call('pexpire', KEYS[3], 600000)
end
local function prune()
  local gone = redis.call('zrangebyscore', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
  for _, c in ipairs(gone) do
    local u = redis.call('hget', KEYS[1], c) or ''
    redis.call('zrem', KEYS[2], c)
    redis.call('hdel', KEYS[1], c)
    announce('l', c, u)
  end
  more = #gone == 1000
end
local function nextExpiry()
  if more then return 0 end
  local first = redis.call('zrange', KEYS[2], 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return math.max(0, tonumber(first[2]) - now)
end
local function keep(key, ms)
  if redis.call('pttl', key) < ms then redis.call('pexpire', key, ms) end
end
`

// joinScript: ARGV 1 client, 2 user, 3 ttl ms, 4 key lifetime ms.
// Announces a join only for a client not listed. Returns nextExpiry.
var joinScript = goredis.NewScript(presenceLib + `
prune()
local ttl = tonumber(ARGV[3])
local added = redis.call('zadd', KEYS[2], now + ttl, ARGV[1])
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
keep(KEYS[1], tonumber(ARGV[4]))
keep(KEYS[2], tonumber(ARGV[4]))
if added == 1 then
  announce('j', ARGV[1], ARGV[2], ARGV[3])
end
return nextExpiry()
`)

// leaveScript: ARGV 1 client. Announces a leave only for a listed client.
var leaveScript = goredis.NewScript(presenceLib + `
prune()
if redis.call('zrem', KEYS[2], ARGV[1]) == 1 then
  local u = redis.call('hget', KEYS[1], ARGV[1]) or ''
  redis.call('hdel', KEYS[1], ARGV[1])
  announce('l', ARGV[1], u)
end
return nextExpiry()
`)

// refreshScript: ARGV 1 ttl ms, 2 key lifetime ms, 3... clients. Extends
// listed clients only (XX): one that expired and was announced as left is
// not brought back.
var refreshScript = goredis.NewScript(presenceLib + `
prune()
local exp = now + tonumber(ARGV[1])
for i = 3, #ARGV do
  redis.call('zadd', KEYS[2], 'XX', exp, ARGV[i])
end
keep(KEYS[1], tonumber(ARGV[2]))
keep(KEYS[2], tonumber(ARGV[2]))
return nextExpiry()
`)

// pruneScript only prunes. Returns nextExpiry.
var pruneScript = goredis.NewScript(presenceLib + `
prune()
return nextExpiry()
`)

// membersScript lists unexpired members as {client, user, ...}. Read-only:
// it hides the expired rather than pruning them.
var membersScript = goredis.NewScript(`
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cs = redis.call('zrangebyscore', KEYS[2], '(' .. now, '+inf')
local out = {}
for _, c in ipairs(cs) do
  out[#out + 1] = c
  out[#out + 1] = redis.call('hget', KEYS[1], c) or ''
end
return out
`)
