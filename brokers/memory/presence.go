package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/syncgate/syncgate/brokers"
)

// member is a presence entry; expires is a clock offset (see Broker.clock).
type member struct {
	brokers.Member
	expires time.Duration
}

// Join implements brokers.Presence. Members are keyed by Member.Client.
// Join announces brokers.Join only for a client not yet on the list; for a
// listed one (even if its TTL ran out and the sweeper has not removed it yet)
// it only updates the user and the expiry. Like publications, presence events
// reach the Handler only when this node subscribed ch.
func (b *Broker) Join(ctx context.Context, ch string, m brokers.Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("memory: join %s: ttl %v: must be positive", ch, ttl)
	}
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("memory: join %s: %w", ch, err)
	}
	c, err := b.lockChannel(ch, true)
	if err != nil {
		return fmt.Errorf("memory: join %s: %w", ch, err)
	}
	defer c.mu.Unlock()
	expires := b.clock() + ttl
	if old, ok := c.members[m.Client]; ok {
		if old.User != m.User {
			old.User = m.User
		}
		old.expires = expires
		c.members[m.Client] = old
	} else {
		if c.members == nil {
			c.members = make(map[string]member)
		}
		// Strings are immutable: keeping the caller's costs nothing, while
		// a copy per member would double presence memory for idle clients.
		c.members[m.Client] = member{Member: m, expires: expires}
		if c.subscribed {
			b.handler.HandlePresence(c.name, brokers.Join, m)
		}
	}
	b.notePresenceTTL(ttl)
	return nil
}

// Leave implements brokers.Presence. It announces brokers.Leave only when m
// was on the list; leaving an absent member is a no-op.
func (b *Broker) Leave(ctx context.Context, ch string, m brokers.Member) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("memory: leave %s: %w", ch, err)
	}
	c, err := b.lockChannel(ch, false)
	if err != nil {
		return fmt.Errorf("memory: leave %s: %w", ch, err)
	}
	if c == nil {
		return nil
	}
	defer c.mu.Unlock()
	old, ok := c.members[m.Client]
	if !ok {
		return nil
	}
	delete(c.members, m.Client)
	if c.subscribed {
		b.handler.HandlePresence(c.name, brokers.Leave, old.Member)
	}
	return nil
}

// Refresh implements brokers.Presence: members of ms still on the list expire
// ttl from now. Members no longer listed (they expired and were announced as
// left) are not re-added; the caller Joins them again.
func (b *Broker) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("memory: refresh %s: ttl %v: must be positive", ch, ttl)
	}
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("memory: refresh %s: %w", ch, err)
	}
	c, err := b.lockChannel(ch, false)
	if err != nil {
		return fmt.Errorf("memory: refresh %s: %w", ch, err)
	}
	if c == nil {
		return nil
	}
	defer c.mu.Unlock()
	expires := b.clock() + ttl
	for _, m := range ms {
		if old, ok := c.members[m.Client]; ok {
			old.expires = expires
			c.members[m.Client] = old
		}
	}
	b.notePresenceTTL(ttl)
	return nil
}

// Members implements brokers.Presence. It lists the unexpired members of ch
// sorted by Client.
func (b *Broker) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("memory: members %s: %w", ch, err)
	}
	c, err := b.lockChannel(ch, false)
	if err != nil {
		return nil, fmt.Errorf("memory: members %s: %w", ch, err)
	}
	if c == nil {
		return nil, nil
	}
	now := b.clock()
	ms := make([]brokers.Member, 0, len(c.members))
	for _, m := range c.members {
		if m.expires > now {
			ms = append(ms, m.Member)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(ms, func(x, y brokers.Member) int {
		return cmp.Or(strings.Compare(x.Client, y.Client), strings.Compare(x.User, y.User))
	})
	return ms, nil
}

// expireMembers removes the members of c whose TTL ran out and announces
// their Leave. c.mu is held.
func (b *Broker) expireMembers(c *channel, now time.Duration) {
	for client, m := range c.members {
		if m.expires > now {
			continue
		}
		delete(c.members, client)
		if c.subscribed {
			b.handler.HandlePresence(c.name, brokers.Leave, m.Member)
		}
	}
	if len(c.members) == 0 {
		c.members = nil
	}
}

// notePresenceTTL records ttl if it is the shortest presence TTL so far and
// then wakes the sweeper so that it sweeps often enough for it.
func (b *Broker) notePresenceTTL(ttl time.Duration) {
	for {
		cur := b.minPresenceTTL.Load()
		if cur != 0 && cur <= int64(ttl) {
			return
		}
		if b.minPresenceTTL.CompareAndSwap(cur, int64(ttl)) {
			break
		}
	}
	select {
	case b.wake <- struct{}{}:
	default:
	}
}
