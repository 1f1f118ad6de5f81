package redis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Redis Cluster: one shard per master, in slot order. A channel's keys and
// pub/sub channel share the hash tag {channel}, so the channel lives on the
// master that owns slotOf(channel). Failovers keep the slot-to-shard map
// (the promoted replica takes over its master's slots); the shard's
// pub/sub reconnects to whoever owns its slots now. Resharding (moving
// slots between masters) needs the nodes restarted.

const numSlots = 16384

// slotOf is the cluster hash slot of a channel's keys.
func slotOf(ch string) uint16 { return crc16(ch) % numSlots }

// keySlot is the cluster hash slot of a key or shard channel name.
func keySlot(key string) uint16 {
	for i := 0; i < len(key); i++ {
		if key[i] == '{' {
			for j := i + 1; j < len(key); j++ {
				if key[j] == '}' {
					if j > i+1 {
						key = key[i+1 : j]
					}
					return crc16(key) % numSlots
				}
			}
			break
		}
	}
	return crc16(key) % numSlots
}

// crc16 is CRC-16/XMODEM, the cluster's key hash.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// buildCluster makes one shard per master of the cluster Config.Addrs seed.
func (b *Broker) buildCluster(ctx context.Context) error {
	cc := goredis.NewClusterClient(&goredis.ClusterOptions{
		Addrs:           b.cfg.Addrs,
		Username:        b.cfg.Username,
		Password:        b.cfg.Password,
		TLSConfig:       b.cfg.TLS,
		Protocol:        2,
		DisableIdentity: true,
		MaxRetries:      -1,
		// No retries or redirects inside go-redis: a resent pipeline could
		// publish twice. A MOVED reply takes the shard down; it reconnects
		// to the slot's owner and replays its outbox, deduplicated.
		MaxRedirects:             -1,
		DialTimeout:              b.cfg.DialTimeout,
		ReadTimeout:              b.cfg.ReadTimeout,
		WriteTimeout:             b.cfg.ReadTimeout,
		ContextTimeoutEnabled:    true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	b.closers = append(b.closers, cc)
	ranges, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		return fmt.Errorf("cluster slots: %w", err)
	}
	byMaster := make(map[string][]goredis.ClusterSlot)
	for _, r := range ranges {
		if len(r.Nodes) == 0 {
			continue
		}
		byMaster[r.Nodes[0].Addr] = append(byMaster[r.Nodes[0].Addr], r)
	}
	type master struct {
		addr  string
		first int
		rs    []goredis.ClusterSlot
	}
	var masters []master
	for addr, rs := range byMaster {
		slices.SortFunc(rs, func(x, y goredis.ClusterSlot) int { return x.Start - y.Start })
		masters = append(masters, master{addr, rs[0].Start, rs})
	}
	slices.SortFunc(masters, func(x, y master) int { return x.first - y.first })
	b.slots = make([]uint16, numSlots)
	covered := 0
	for i, m := range masters {
		for _, r := range m.rs {
			for s := r.Start; s <= r.End && s < numSlots; s++ {
				b.slots[s] = uint16(i)
				covered++
			}
		}
	}
	if covered != numSlots || len(masters) == 0 {
		return fmt.Errorf("cluster slots: %d of %d slots served", covered, numSlots)
	}
	nodes := &nodeClients{b: b, clients: make(map[string]*goredis.Client)}
	nodes.learn(b.cfg.Addrs)
	for _, r := range ranges {
		for _, n := range r.Nodes {
			nodes.learn([]string{n.Addr})
		}
	}
	b.closers = append(b.closers, nodes)
	for i, m := range masters {
		sh := newShard(b, i, m.addr, cc)
		sh.probe = b.probeName(probeTag(b.slots, i))
		slot := m.first
		sh.newPubSub = func(ctx context.Context) (*goredis.PubSub, error) {
			// A reconnect may follow a failover: refresh the command
			// client's slot map too (in the background).
			cc.ReloadState(ctx)
			c, err := nodes.master(ctx, cc, slot)
			if err != nil {
				return nil, err
			}
			return c.SSubscribe(ctx), nil
		}
		sh.scripter = func(ctx context.Context) (goredis.Scripter, error) {
			return nodes.master(ctx, cc, slot)
		}
		b.shards = append(b.shards, sh)
	}
	return nil
}

// probeTag returns a hash tag whose slot belongs to shard i.
func probeTag(slots []uint16, i int) string {
	for k := 0; ; k++ {
		tag := "probe" + strconv.Itoa(k)
		if int(slots[crc16(tag)%numSlots]) == i {
			return tag
		}
	}
}

// nodeClients are clients of single cluster nodes, for the sharded
// pub/sub connections, script loading and finding slot owners.
type nodeClients struct {
	b       *Broker
	mu      sync.Mutex
	clients map[string]*goredis.Client
	known   []string // every node address seen, to ask for the slot map
}

// learn records node addresses.
func (n *nodeClients) learn(addrs []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range addrs {
		if a != "" && !slices.Contains(n.known, a) {
			n.known = append(n.known, a)
		}
	}
}

// client returns the client of the node at addr.
func (n *nodeClients) client(addr string) *goredis.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.clients[addr]
	if c == nil {
		opts := n.b.options(addr)
		opts.DB = 0
		c = goredis.NewClient(opts)
		n.clients[addr] = c
	}
	return c
}

// master returns a client of the master that owns slot now, asking the
// known nodes in turn (after a failover the old master is gone, and a
// keyless command through the cluster client may still be routed to it).
func (n *nodeClients) master(ctx context.Context, cc *goredis.ClusterClient, slot int) (*goredis.Client, error) {
	n.mu.Lock()
	addrs := slices.Clone(n.known)
	n.mu.Unlock()
	var firstErr error
	for _, i := range rand.Perm(len(addrs)) {
		ranges, err := n.client(addrs[i]).ClusterSlots(ctx).Result()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		for _, r := range ranges {
			for _, node := range r.Nodes {
				n.learn([]string{node.Addr})
			}
			if r.Start <= slot && slot <= r.End && len(r.Nodes) > 0 {
				return n.client(r.Nodes[0].Addr), nil
			}
		}
		if firstErr == nil {
			firstErr = fmt.Errorf("no master serves slot %d", slot)
		}
	}
	if firstErr == nil {
		firstErr = fmt.Errorf("no cluster node known")
	}
	return nil, firstErr
}

// Close closes every node client.
func (n *nodeClients) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.clients {
		_ = c.Close()
	}
	clear(n.clients)
	return nil
}
