package redis

import (
	"context"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
)

// Presence is brokers/internal/redisbase's: per channel, a hash client -> user
// and a sorted set client -> expiry, kept by scripts that prune the
// expired first and announce joins and leaves on the channel's pub/sub
// channel. Each node also prunes the channels it subscribed when a member
// is due to expire (it learns expiries from the join events and from its
// own calls), so a crashed node's members leave within the TTL (plus one
// filler tick) even when nobody calls Join or Refresh.
//
// presenceBackend is the broker as redisbase.Presence needs it.
type presenceBackend struct{ b *Broker }

func (p presenceBackend) Check(ctx context.Context) error { return p.b.check(ctx) }

func (p presenceBackend) PresenceKeys(ch string) ([]string, any) {
	k := p.b.keys(ch)
	return []string{k.members, k.expiry, k.pubsub}, p.b.publishCmd
}

func (p presenceBackend) Run(ctx context.Context, ch string, sc *goredis.Script, keys []string, args ...any) (any, error) {
	res, err := runScript(ctx, p.b.shardFor(ch), sc, keys, args...)
	if err != nil {
		return nil, wrapErr(err)
	}
	return res, nil
}

func (p presenceBackend) NotePrune(ch string, at time.Time) {
	if cs := p.b.shardFor(ch).lookup(ch); cs != nil {
		cs.notePrune(at)
	}
}

func (p presenceBackend) NoteTTL(ttl time.Duration) { p.b.notePresenceTTL(ttl) }

// notePresenceTTL records ttl if it is the shortest so far (the filler
// checks expiry a few times per TTL).
func (b *Broker) notePresenceTTL(ttl time.Duration) {
	for {
		cur := b.minPresenceTTL.Load()
		if cur != 0 && cur <= int64(ttl) {
			return
		}
		if b.minPresenceTTL.CompareAndSwap(cur, int64(ttl)) {
			for _, sh := range b.allShards() {
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
