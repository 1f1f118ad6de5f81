// Package redisbase is what the Redis brokers (brokers/redis, on pub/sub,
// and brokers/redisstream, on streams) share: presence, kept in Redis by
// Lua scripts that differ only in how they announce a join or a leave; the
// script that resets a channel whose seq went backwards; the checks of the
// configuration fields they have in common.
package redisbase

import (
	"context"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/fault"
)

// Presence: per channel, a hash client -> user and a sorted set client ->
// expiry (ms, Redis server time). Every presence script first prunes the
// members whose expiry passed, announcing a leave for each, so a member is
// announced as left exactly once, by whichever node prunes first. Each
// node also prunes the channels it serves when a member is due to expire
// (NotePrune, then Presence.Prune), so a crashed node's members leave
// within the TTL even when nobody calls Join or Refresh.
//
// Times are the Redis server's clock (TIME), so node clocks do not matter.

// KeyGrace is how long presence keys outlive the last expiry, so that
// members are pruned (and announced) before the keys vanish.
const KeyGrace = time.Minute

// presenceScripts are the presence scripts of one backend.
//
// KEYS: 1 members hash, 2 expiry zset, 3 where events are announced (the
// announce function's target). ARGV[1] is the announce function's
// argument; the scripts' own arguments follow. join, leave, refresh and
// prune return nextExpiry: ms until the earliest expiry, -1 for an empty
// list, 0 when prune left work for the next call.
type presenceScripts struct {
	// join: ARGV 2 client, 3 user, 4 ttl ms, 5 key lifetime ms (ttl plus
	// KeyGrace, so keys outlive their members' expiry until pruned).
	// Announces a join only for a client not listed.
	join *goredis.Script
	// leave: ARGV 2 client. Announces a leave only for a listed client.
	leave *goredis.Script
	// refresh: ARGV 2 ttl ms, 3 key lifetime ms, 4... clients. Extends
	// listed clients only (XX): one that expired and was announced as left
	// is not brought back.
	refresh *goredis.Script
	// prune only prunes.
	prune *goredis.Script
	// members lists the unexpired members as {client, user, ...}. It does
	// not prune (it is read-only), it hides the expired. KEYS 1 and 2 only.
	members *goredis.Script
}

// presenceLib is shared by the presence scripts, after the backend's
// announce function.
//
// prune removes members whose expiry passed and announces each leave (at
// most 1000 per call: a huge room is pruned over several calls). Because
// a script is atomic, a member is pruned, and its leave announced, once,
// however many nodes prune the channel at the same time.
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

// newPresenceScripts builds the presence scripts around announce (see
// NewPresence).
func newPresenceScripts(announce string) presenceScripts {
	lib := announce + presenceLib
	return presenceScripts{
		join: goredis.NewScript(lib + `
prune()
local ttl = tonumber(ARGV[4])
local added = redis.call('zadd', KEYS[2], now + ttl, ARGV[2])
redis.call('hset', KEYS[1], ARGV[2], ARGV[3])
keep(KEYS[1], tonumber(ARGV[5]))
keep(KEYS[2], tonumber(ARGV[5]))
if added == 1 then
  announce('j', ARGV[2], ARGV[3], ARGV[4])
end
return nextExpiry()
`),
		leave: goredis.NewScript(lib + `
prune()
if redis.call('zrem', KEYS[2], ARGV[2]) == 1 then
  local u = redis.call('hget', KEYS[1], ARGV[2]) or ''
  redis.call('hdel', KEYS[1], ARGV[2])
  announce('l', ARGV[2], u)
end
return nextExpiry()
`),
		refresh: goredis.NewScript(lib + `
prune()
local exp = now + tonumber(ARGV[2])
for i = 4, #ARGV do
  redis.call('zadd', KEYS[2], 'XX', exp, ARGV[i])
end
keep(KEYS[1], tonumber(ARGV[3]))
keep(KEYS[2], tonumber(ARGV[3]))
return nextExpiry()
`),
		prune: goredis.NewScript(lib + `
prune()
return nextExpiry()
`),
		members: goredis.NewScript(`
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cs = redis.call('zrangebyscore', KEYS[2], '(' .. now, '+inf')
local out = {}
for _, c in ipairs(cs) do
  out[#out + 1] = c
  out[#out + 1] = redis.call('hget', KEYS[1], c) or ''
end
return out
`),
	}
}

// PresenceBackend is what Presence needs from a broker.
type PresenceBackend interface {
	// Check fails when the broker cannot take calls (not started,
	// closed) or ctx is done.
	Check(ctx context.Context) error
	// PresenceKeys returns the KEYS of ch's presence scripts and the
	// announce function's argument (ARGV[1]).
	PresenceKeys(ch string) (keys []string, announceArg any)
	// Run runs sc on the Redis that owns ch, its error wrapped with
	// brokers.ErrUnavailable when the connection is the problem.
	Run(ctx context.Context, ch string, sc *goredis.Script, keys []string, args ...any) (any, error)
	// NotePrune says that ch's earliest member expires at, for the node
	// to prune ch then.
	NotePrune(ch string, at time.Time)
	// NoteTTL says that a Join or Refresh used ttl.
	NoteTTL(ttl time.Duration)
}

// Presence is a backend's presence: its scripts, and brokers.Presence
// built on them (a Broker embeds the one NewPresence returns). The backend
// loads the scripts (Scripts) and runs its own prune loop with Prune.
// Safe for concurrent use: it holds no state of its own.
type Presence struct {
	name     string // starts every error ("redis", "redis-streams")
	scripts  presenceScripts
	badReply error // the error of a reply the scripts do not give
	be       PresenceBackend
}

// NewPresence returns the presence of backend be. name starts every error;
// announce is the Lua source of a local function announce(kind, c, u, ttl)
// that announces a join (kind 'j', with ttl, the member's ttl in ms, for
// receivers to schedule its expiry) or a leave (kind 'l', ttl nil) of
// client c, user u, to KEYS[3], with ARGV[1] as its argument; badReply is
// the error of a reply the scripts do not give.
func NewPresence(name, announce string, badReply error, be PresenceBackend) *Presence {
	return &Presence{name: name, scripts: newPresenceScripts(announce), badReply: badReply, be: be}
}

// Scripts are the presence scripts, for the backend to load ahead of
// pipelined calls (Prune in a pipeline runs EVALSHA only).
func (p *Presence) Scripts() []*goredis.Script {
	s := p.scripts
	return []*goredis.Script{s.join, s.leave, s.refresh, s.prune, s.members}
}

// Prune runs the script that only prunes ch (announcing a leave for each
// member whose expiry passed) on c, a connection or a pipeline of the
// Redis that owns ch, with the KEYS and announce argument of
// PresenceKeys. Its reply is nextExpiry (see presenceScripts). In a
// pipeline the script must be loaded (Scripts).
func (p *Presence) Prune(ctx context.Context, c goredis.Scripter, ch string) *goredis.Cmd {
	keys, arg := p.be.PresenceKeys(ch)
	return p.scripts.prune.Run(ctx, c, keys, arg)
}

// Join implements brokers.Presence.Join.
func (p *Presence) Join(ctx context.Context, ch string, m brokers.Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("%s: join %s: ttl %v: must be positive", p.name, ch, ttl)
	}
	if err := p.be.Check(ctx); err != nil {
		return fmt.Errorf("%s: join %s: %w", p.name, ch, err)
	}
	p.be.NoteTTL(ttl)
	ms := max(ttl.Milliseconds(), 1)
	if fault.On(fault.RedisPresenceTTLLong) {
		ms = ms * 18 / 10
	}
	keys, arg := p.be.PresenceKeys(ch)
	if err := p.call(ctx, ch, p.scripts.join, keys, arg, m.Client, m.User, msArg(ms), msArg(ms+KeyGrace.Milliseconds())); err != nil {
		return fmt.Errorf("%s: join %s: %w", p.name, ch, err)
	}
	return nil
}

// Leave implements brokers.Presence.Leave.
func (p *Presence) Leave(ctx context.Context, ch string, m brokers.Member) error {
	if err := p.be.Check(ctx); err != nil {
		return fmt.Errorf("%s: leave %s: %w", p.name, ch, err)
	}
	keys, arg := p.be.PresenceKeys(ch)
	if err := p.call(ctx, ch, p.scripts.leave, keys, arg, m.Client); err != nil {
		return fmt.Errorf("%s: leave %s: %w", p.name, ch, err)
	}
	return nil
}

// Refresh implements brokers.Presence.Refresh.
func (p *Presence) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("%s: refresh %s: ttl %v: must be positive", p.name, ch, ttl)
	}
	if err := p.be.Check(ctx); err != nil {
		return fmt.Errorf("%s: refresh %s: %w", p.name, ch, err)
	}
	p.be.NoteTTL(ttl)
	keys, arg := p.be.PresenceKeys(ch)
	ttlMS := max(ttl.Milliseconds(), 1)
	if fault.On(fault.RedisPresenceTTLLong) {
		ttlMS = ttlMS * 18 / 10
	}
	args := make([]any, 0, 3+len(ms))
	args = append(args, arg, msArg(ttlMS), msArg(ttlMS+KeyGrace.Milliseconds()))
	for _, m := range ms {
		args = append(args, m.Client)
	}
	if err := p.call(ctx, ch, p.scripts.refresh, keys, args...); err != nil {
		return fmt.Errorf("%s: refresh %s: %w", p.name, ch, err)
	}
	return nil
}

// Members implements brokers.Presence.Members: the unexpired members,
// sorted by expiry.
func (p *Presence) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	if err := p.be.Check(ctx); err != nil {
		return nil, fmt.Errorf("%s: members %s: %w", p.name, ch, err)
	}
	keys, _ := p.be.PresenceKeys(ch)
	res, err := p.be.Run(ctx, ch, p.scripts.members, keys[:2])
	if err != nil {
		return nil, fmt.Errorf("%s: members %s: %w", p.name, ch, err)
	}
	vals, ok := res.([]any)
	if !ok || len(vals)%2 != 0 {
		return nil, fmt.Errorf("%s: members %s: %w", p.name, ch, p.badReply)
	}
	out := make([]brokers.Member, 0, len(vals)/2)
	for i := 0; i < len(vals); i += 2 {
		c, _ := vals[i].(string)
		u, _ := vals[i+1].(string)
		out = append(out, brokers.Member{User: u, Client: c})
	}
	return out, nil
}

// call runs a presence script and schedules the channel's next prune from
// its reply (nextExpiry).
func (p *Presence) call(ctx context.Context, ch string, sc *goredis.Script, keys []string, args ...any) error {
	res, err := p.be.Run(ctx, ch, sc, keys, args...)
	if err != nil {
		return err
	}
	next, ok := res.(int64)
	if !ok {
		return p.badReply
	}
	if next >= 0 {
		p.be.NotePrune(ch, time.Now().Add(time.Duration(next)*time.Millisecond))
	}
	return nil
}

func msArg(ms int64) string { return strconv.FormatInt(ms, 10) }
