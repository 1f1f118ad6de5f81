package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts. Each runs atomically on the Redis that owns the channel,
// so a channel's seq, history, epoch and fan-out, or its presence list and
// the events announcing its changes, never disagree. They are loaded with
// SCRIPT LOAD when a shard connects and called with EVALSHA; a NOSCRIPT
// reply (a restarted or promoted server) loads them again and retries.
//
// Pub/sub payloads (one Redis message each):
//
//	p<epoch>:<seq>:<data>                  a publication
//	w<epoch>:<seq>:<was><data>             a publication this node first delivered
//	                                       provisionally (see encodeWas)
//	j<ttl ms>:<len(client)>:<client><user> a join (receivers schedule expiry)
//	l<len(client)>:<client><user>          a leave
//	x<token>                               a node's probe to itself
//
// Times are the Redis server's clock (TIME), so node clocks do not matter.

// publishScript assigns the next seq, appends to history, and publishes.
//
// KEYS: history, meta, pubsub channel.
// ARGV: 1 data, 2 history size (<= 0: none), 3 history TTL ms, 4 meta TTL
// s, 5 this node's id (a channel without an epoch gets the node id and the
// counter as its epoch: unique), 6 this node's meta field, 7 this node's
// publish counter, 8 publish command (publish or spublish), 9 the
// provisional position the publication had (encodeWas; "" for none).
//
// Returns "<seq>:<epoch>" (one string: cheap to parse); seq 0 means this
// node's message with this counter
// was applied before (an outbox retry after an unanswered attempt), and
// nothing was done. The counters of one node arrive in increasing order
// (one ordered pipeline per shard), so "counter <= the last applied" is
// exact.
var publishScript = goredis.NewScript(`
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[5] .. ARGV[7]
  redis.call('del', KEYS[1])
  redis.call('hset', KEYS[2], 'e', epoch)
else
  local done = redis.call('hget', KEYS[2], ARGV[6])
  if done and tonumber(done) >= tonumber(ARGV[7]) then
    return '0:' .. epoch
  end
end
local seq = redis.call('hincrby', KEYS[2], 's', 1)
redis.call('hset', KEYS[2], ARGV[6], ARGV[7])
redis.call('expire', KEYS[2], ARGV[4])
local s = string.format('%d', seq)
if tonumber(ARGV[2]) > 0 then
  if ARGV[9] == '' then
    redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], s .. '-0', 'd', ARGV[1])
  else
    redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], s .. '-0', 'd', ARGV[1], 'w', ARGV[9])
  end
  redis.call('pexpire', KEYS[1], ARGV[3])
end
if ARGV[9] == '' then
  redis.call(ARGV[8], KEYS[3], 'p' .. epoch .. ':' .. s .. ':' .. ARGV[1])
else
  redis.call(ARGV[8], KEYS[3], 'w' .. epoch .. ':' .. s .. ':' .. ARGV[9] .. ARGV[1])
end
return s .. ':' .. epoch
`)

// sinceScript reads history after a seq and the current position in one
// step. A channel with no epoch gets one (so the first publication keeps
// the epoch a reader saw).
//
// KEYS: history, meta. ARGV: 1 since, 2 limit, 3 epoch to use if none, 4
// meta TTL s.
//
// Returns {epoch, seq} or {epoch, seq, entries} (XRANGE format).
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
if limit > 0 and since < seq then
  local from = string.format('%d', since + 1) .. '-0'
  return {epoch, seq, redis.call('xrange', KEYS[1], from, '+', 'COUNT', limit)}
end
return {epoch, seq}
`)

// resetScript starts a new epoch when a channel's history went backwards:
// a node delivered seq ARGV[2] of epoch ARGV[1] but Redis now holds less
// (writes lost in a failover or a crash without fsync). Without it the
// next publications would reuse seqs that clients already hold with other
// data.
//
// KEYS: history, meta. ARGV: 1 epoch, 2 seq seen, 3 new epoch, 4 meta TTL s.
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

// presenceLib is shared by the presence scripts. KEYS: members hash,
// expiry zset, pubsub channel; ARGV[1] is the publish command.
//
// prune removes members whose expiry passed and announces each leave (at
// most 1000 per call: a huge room is pruned over several calls). Because
// a script is atomic, a member is pruned, and its leave published, once,
// however many nodes prune the channel at the same time.
//
// nextExpiry returns ms until the earliest expiry, -1 for an empty list, 0
// when prune left work for the next call.
const presenceLib = `
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local more = false
local function prune()
  local gone = redis.call('zrangebyscore', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
  for _, c in ipairs(gone) do
    local u = redis.call('hget', KEYS[1], c) or ''
    redis.call('zrem', KEYS[2], c)
    redis.call('hdel', KEYS[1], c)
    redis.call(ARGV[1], KEYS[3], 'l' .. #c .. ':' .. c .. u)
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

// joinScript: ARGV 2 client, 3 user, 4 ttl ms, 5 key lifetime ms (ttl plus
// a grace period so keys outlive their members' expiry until pruned).
// Announces a join only for a client not listed. Returns nextExpiry.
var joinScript = goredis.NewScript(presenceLib + `
prune()
local ttl = tonumber(ARGV[4])
local added = redis.call('zadd', KEYS[2], now + ttl, ARGV[2])
redis.call('hset', KEYS[1], ARGV[2], ARGV[3])
keep(KEYS[1], tonumber(ARGV[5]))
keep(KEYS[2], tonumber(ARGV[5]))
if added == 1 then
  redis.call(ARGV[1], KEYS[3], 'j' .. ARGV[4] .. ':' .. #ARGV[2] .. ':' .. ARGV[2] .. ARGV[3])
end
return nextExpiry()
`)

// leaveScript: ARGV 2 client. Announces a leave only for a listed client.
var leaveScript = goredis.NewScript(presenceLib + `
prune()
if redis.call('zrem', KEYS[2], ARGV[2]) == 1 then
  local u = redis.call('hget', KEYS[1], ARGV[2]) or ''
  redis.call('hdel', KEYS[1], ARGV[2])
  redis.call(ARGV[1], KEYS[3], 'l' .. #ARGV[2] .. ':' .. ARGV[2] .. u)
end
return nextExpiry()
`)

// refreshScript: ARGV 2 ttl ms, 3 key lifetime ms, 4... clients. Extends
// listed clients only (XX): one that expired and was announced as left is
// not brought back.
var refreshScript = goredis.NewScript(presenceLib + `
prune()
local exp = now + tonumber(ARGV[2])
for i = 4, #ARGV do
  redis.call('zadd', KEYS[2], 'XX', exp, ARGV[i])
end
keep(KEYS[1], tonumber(ARGV[3]))
keep(KEYS[2], tonumber(ARGV[3]))
return nextExpiry()
`)

// pruneScript only prunes. Returns nextExpiry.
var pruneScript = goredis.NewScript(presenceLib + `
prune()
return nextExpiry()
`)

// membersScript lists unexpired members as {client, user, ...}. It does not
// prune (it is read-only), it hides the expired.
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

// allScripts are loaded on every shard when it connects.
var allScripts = []*goredis.Script{publishScript, sinceScript, resetScript, joinScript, leaveScript, refreshScript, pruneScript, membersScript}
