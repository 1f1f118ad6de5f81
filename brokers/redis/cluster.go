package redis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// Redis Cluster: one shard per master. A channel's keys and pub/sub
// channel share the hash tag {channel}, so the channel lives on the master
// that owns slotOf(channel); the route table maps each slot to the shard
// of its master. The table follows the cluster (topology.go): when a
// shard learns that something moved (its pub/sub connection is dropped
// by the old owner, a MOVED reply, a connection failure) it reads the
// slot map again before it reconnects, and slots that changed master move,
// with their channels and queued publications, to the shard of their new
// master (a new shard for a new master).

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
	nodes := &nodeClients{b: b, clients: make(map[string]*goredis.Client)}
	nodes.learn(b.cfg.Addrs)
	b.closers = append(b.closers, nodes)
	b.topo = &topology{nodes: nodes}
	owners, err := nodes.owners(ctx)
	if err != nil {
		return fmt.Errorf("cluster slots: %w", err)
	}
	byMaster := make(map[string]int) // master -> its first slot
	var masters []string
	for s, o := range owners {
		if o == "" {
			return fmt.Errorf("cluster slots: slot %d not served", s)
		}
		if _, ok := byMaster[o]; !ok {
			byMaster[o] = s
			masters = append(masters, o) // in slot order
		}
	}
	rt := new(routeTable)
	for i, addr := range masters {
		b.shards = append(b.shards, b.newClusterShard(i, addr))
	}
	for s, o := range owners {
		rt[s] = b.shards[slices.Index(masters, o)]
	}
	b.route.Store(rt)
	for _, sh := range b.shards {
		sh.retarget(rt)
	}
	return nil
}

// newClusterShard makes the shard of the cluster master at addr.
func (b *Broker) newClusterShard(idx int, addr string) *shard {
	nodes := b.topo.nodes
	sh := newShard(b, idx, addr, nodes.client(addr))
	sh.master = addr
	sh.newPubSub = func(ctx context.Context) (*goredis.PubSub, error) {
		return nodes.client(sh.masterAddr()).SSubscribe(ctx), nil
	}
	sh.scripter = func(context.Context) (goredis.Scripter, error) {
		return nodes.client(sh.masterAddr()), nil
	}
	return sh
}

// masterAddr is the address of the master that serves the shard's slots.
func (sh *shard) masterAddr() string {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.master
}

// retarget counts the slots rt routes to sh and moves its probe channel
// to one of them when its slot left. It reports whether the probe
// changed. Cluster only; called while the route cannot change.
func (sh *shard) retarget(rt *routeTable) bool {
	n := 0
	for _, o := range rt {
		if o == sh {
			n++
		}
	}
	sh.slotCount.Store(int32(n))
	if n == 0 {
		return false
	}
	if p := sh.probe.Load(); p != nil && rt[keySlot(*p)] == sh {
		return false
	}
	name := sh.b.probeName(probeTag(rt, sh))
	sh.probe.Store(&name)
	return true
}

// probeTag returns a hash tag whose slot rt routes to sh (which has
// slots).
func probeTag(rt *routeTable, sh *shard) string {
	for k := 0; ; k++ {
		tag := "probe" + strconv.Itoa(k)
		if rt[crc16(tag)%numSlots] == sh {
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

// maxAsked bounds the nodes asked for the slot map at a time.
const maxAsked = 16

// owners returns, for every slot, the address of the master that serves
// it, "" when unknown. It asks the known nodes (at most maxAsked, at
// once) for CLUSTER SLOTS. A master's own word on its slots wins: after a
// migration or a failover the other nodes learn the new owner by gossip,
// a moment later. Without one (its master is unreachable) the majority of
// the answers decides, and a tie leaves the slot unknown.
func (n *nodeClients) owners(ctx context.Context) (*[numSlots]string, error) {
	n.mu.Lock()
	addrs := slices.Clone(n.known)
	n.mu.Unlock()
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	addrs = addrs[:min(len(addrs), maxAsked)]
	replies := make([][]goredis.ClusterSlot, len(addrs))
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() { replies[i], errs[i] = n.client(a).ClusterSlots(ctx).Result() })
	}
	wg.Wait()
	for i, rs := range replies {
		if errs[i] == nil {
			for _, r := range rs {
				for _, node := range r.Nodes {
					n.learn([]string{node.Addr})
				}
			}
		}
	}
	return decideOwners(addrs, replies, errs)
}

// decideOwners decides each slot's master from the CLUSTER SLOTS replies
// of the nodes at addrs (errs[i] set: no reply): the master's own claim
// when exactly one master claims it, else the owner named by more than
// half of the replies, else "" (unknown).
func decideOwners(addrs []string, replies [][]goredis.ClusterSlot, errs []error) (*[numSlots]string, error) {
	out := new([numSlots]string)
	claim := make([]string, numSlots)
	conflict := make([]bool, numSlots)
	votes := make([]map[string]int, numSlots)
	answered := 0
	var firstErr error
	for i, rs := range replies {
		if errs[i] != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", addrs[i], errs[i])
			}
			continue
		}
		answered++
		for _, r := range rs {
			if len(r.Nodes) == 0 || r.Start < 0 || r.End >= numSlots || r.Start > r.End {
				continue // hostile or garbled: ignored
			}
			owner := r.Nodes[0].Addr
			for s := r.Start; s <= r.End; s++ {
				if owner == addrs[i] {
					if claim[s] != "" && claim[s] != owner {
						conflict[s] = true
					}
					claim[s] = owner
				}
				if votes[s] == nil {
					votes[s] = make(map[string]int, 1)
				}
				votes[s][owner]++
			}
		}
	}
	if answered == 0 {
		if firstErr == nil {
			firstErr = fmt.Errorf("no cluster node known")
		}
		return nil, firstErr
	}
	for s := range numSlots {
		if claim[s] != "" && !conflict[s] {
			out[s] = claim[s]
			continue
		}
		for o, v := range votes[s] {
			if 2*v > answered {
				out[s] = o
			}
		}
	}
	return out, nil
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
