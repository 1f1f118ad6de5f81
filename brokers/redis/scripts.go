package redis

import (
	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers/internal/redisbase"
)

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
// provisional position the publication had (encodeWas; "" for none), 10
// the epoch this node handed out for the channel while it was empty ("":
// none; only used when the channel has no epoch), 11 the counter of this
// node's previous publication on the channel in the same pipeline (0:
// none): unless that one was applied, this one is refused with an SGORDER
// error (not applied; the writer replays it in order), 12 the deadline
// (ms, this server's clock): a script that runs later is refused with an
// SGLATE error (not applied): the node has stopped waiting for it and
// will replay it, perhaps on another master.
//
// Returns "<seq>:<epoch>" (one string: cheap to parse); seq 0 means this
// node's message with this counter was applied before (an outbox retry
// after an unanswered attempt), and nothing was done but rewriting the
// node's counter as it was: a write, so that a WAIT after it
// (Config.WaitReplicas) covers the first attempt, made on a connection
// that may be gone. The counters of one node arrive in increasing order
// (one ordered pipeline per shard), so "counter <= the last applied" is
// exact.
var publishScript = goredis.NewScript(`
local now = redis.call('time')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[12]) then
  return redis.error_reply('SGLATE the node stopped waiting for this publication')
end
local epoch = redis.call('hget', KEYS[2], 'e')
if ARGV[11] ~= '0' then
  local prev = epoch and redis.call('hget', KEYS[2], ARGV[6])
  if not prev or tonumber(prev) < tonumber(ARGV[11]) then
    return redis.error_reply('SGORDER the previous publication of this node on the channel was not applied')
  end
end
if not epoch then
  if ARGV[10] ~= '' then
    epoch = ARGV[10]
  else
    epoch = ARGV[5] .. ARGV[7]
  end
  redis.call('del', KEYS[1])
  redis.call('hset', KEYS[2], 'e', epoch)
else
  local done = redis.call('hget', KEYS[2], ARGV[6])
  if done and tonumber(done) >= tonumber(ARGV[7]) then
    redis.call('hset', KEYS[2], ARGV[6], done)
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
// step, writing nothing. A channel with no epoch has seq 0 and the epoch
// ARGV[3], which is not stored (a subscriber must cost Redis nothing): the
// node keeps it and gives it to its first publication (chanState.empty).
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
else
  seq = tonumber(redis.call('hget', KEYS[2], 's') or '0')
  redis.call('expire', KEYS[2], ARGV[4])
end
local since = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if limit > 0 and since < seq then
  local from = string.format('%d', since + 1) .. '-0'
  return {epoch, seq, redis.call('xrange', KEYS[1], from, '+', 'COUNT', limit)}
end
return {epoch, seq}
`)

// resetScript starts a new epoch when a channel's seq went backwards
// (brokers/internal/redisbase). KEYS: history, meta.
var resetScript = redisbase.ResetScript

// presenceAnnounce is the announce function of the presence scripts
// (brokers/internal/redisbase): it announces on the channel's pub/sub
// channel (KEYS[3]) with the publish command in ARGV[1]: the j and l
// payloads above.
const presenceAnnounce = `
local function announce(kind, c, u, ttl)
  if kind == 'j' then
    redis.call(ARGV[1], KEYS[3], 'j' .. ttl .. ':' .. #c .. ':' .. c .. u)
  else
    redis.call(ARGV[1], KEYS[3], 'l' .. #c .. ':' .. c .. u)
  end
end
`

// scripts are loaded on every shard when it connects, with the presence
// scripts.
var scripts = []*goredis.Script{publishScript, sinceScript, resetScript, snapScript}
