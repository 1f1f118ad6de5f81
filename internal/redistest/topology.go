package redistest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Topology changes of a running Cluster, done the way an operator (or
// redis-cli --cluster) does them: slot migration, a master added, a manual
// failover, a killed master replaced by its replica.

// ID returns s's cluster node id.
func (c *Cluster) ID(s *Server) string {
	c.t.Helper()
	return s.MustDo("CLUSTER", "MYID")
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr, master string
	flags            []string
	slots            [][2]int // served ranges (migration markers skipped)
}

func (n clusterNode) is(flag string) bool {
	for _, f := range n.flags {
		if f == flag {
			return true
		}
	}
	return false
}

// nodesOf returns the CLUSTER NODES view of s.
func nodesOf(s *Server) ([]clusterNode, error) {
	out, err := s.Do("CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	var nodes []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		n := clusterNode{id: f[0], flags: strings.Split(f[2], ","), master: f[3]}
		n.addr, _, _ = strings.Cut(f[1], "@")
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue
			}
			lo, hi, found := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b := a
			var err2 error
			if found {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 == nil && err2 == nil {
				n.slots = append(n.slots, [2]int{a, b})
			}
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// server returns the cluster's server at addr, nil if none.
func (c *Cluster) server(addr string) *Server {
	for _, s := range c.All() {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// running returns a server that answers, failing t when none does.
func (c *Cluster) running() *Server {
	c.t.Helper()
	for _, s := range c.All() {
		if s.PID() != 0 {
			if _, err := s.Do("PING"); err == nil {
				return s
			}
		}
	}
	c.t.Fatalf("redistest: no cluster node answers")
	return nil
}

// Owner returns the master that serves slot, as the master itself says
// (its own CLUSTER NODES line holds the slot), or nil when no running
// master claims it.
func (c *Cluster) Owner(slot int) *Server {
	for _, s := range c.All() {
		if s.PID() == 0 {
			continue
		}
		nodes, err := nodesOf(s)
		if err != nil {
			continue
		}
		for _, n := range nodes {
			if !n.is("myself") || !n.is("master") {
				continue
			}
			for _, r := range n.slots {
				if r[0] <= slot && slot <= r[1] {
					return s
				}
			}
		}
	}
	return nil
}

// Role returns "master" or "slave" as s reports it (INFO replication).
func Role(s *Server) string {
	out, err := s.Do("INFO", "replication")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(out, "\n") {
		if r, ok := strings.CutPrefix(strings.TrimSpace(line), "role:"); ok {
			return r
		}
	}
	return ""
}

// Migration is a slot being moved from one master to another, step by
// step: Begin marks it importing on the target and migrating on the
// source, Keys moves its keys with MIGRATE, Finish assigns the slot to the
// target on every master. Between the steps the slot is in the state a
// client sees during a live resharding (ASK, TRYAGAIN).
type Migration struct {
	c        *Cluster
	slot     int
	from, to *Server
	fromID   string
	toID     string
}

// BeginMigration starts moving slot to the master to (it must be a master
// that does not serve slot).
func (c *Cluster) BeginMigration(slot int, to *Server) *Migration {
	c.t.Helper()
	from := c.Owner(slot)
	if from == nil {
		c.t.Fatalf("redistest: no master serves slot %d", slot)
	}
	if from == to {
		c.t.Fatalf("redistest: %s serves slot %d already", to.Addr(), slot)
	}
	m := &Migration{c: c, slot: slot, from: from, to: to, fromID: c.ID(from), toID: c.ID(to)}
	s := strconv.Itoa(slot)
	to.MustDo("CLUSTER", "SETSLOT", s, "IMPORTING", m.fromID)
	from.MustDo("CLUSTER", "SETSLOT", s, "MIGRATING", m.toID)
	return m
}

// From is the master the slot moves away from.
func (m *Migration) From() *Server { return m.from }

// Keys moves every key of the slot to the target (MIGRATE, batches of
// 100) and returns how many it moved.
func (m *Migration) Keys() int {
	c := m.c
	c.t.Helper()
	moved := 0
	for {
		out := m.from.MustDo("CLUSTER", "GETKEYSINSLOT", strconv.Itoa(m.slot), "100")
		keys := strings.Fields(out)
		if len(keys) == 0 {
			return moved
		}
		host, port, _ := strings.Cut(m.to.Addr(), ":")
		args := []string{"MIGRATE", host, port, "", "0", "5000"}
		if c.node.User != "" {
			args = append(args, "AUTH2", c.node.User, c.node.Password)
		} else if c.node.Password != "" {
			args = append(args, "AUTH", c.node.Password)
		}
		args = append(args, "KEYS")
		m.from.MustDo(append(args, keys...)...)
		moved += len(keys)
	}
}

// Finish assigns the slot to the target: on the target first, then the
// source, then every other master (as redis-cli does), and waits until
// every running node agrees.
func (m *Migration) Finish() {
	c := m.c
	c.t.Helper()
	s := strconv.Itoa(m.slot)
	m.to.MustDo("CLUSTER", "SETSLOT", s, "NODE", m.toID)
	if _, err := m.from.Do("CLUSTER", "SETSLOT", s, "NODE", m.toID); err != nil && Role(m.from) != "slave" {
		// (A source that gave up its last slot may have turned replica
		// of the target already: Redis 7's cluster-allow-replica-migration.)
		c.t.Fatalf("redistest: CLUSTER SETSLOT %s NODE on %s: %v", s, m.from.Addr(), err)
	}
	for _, o := range append(append([]*Server{}, c.Masters...), c.Added...) {
		if o != m.to && o != m.from && o.PID() != 0 && Role(o) == "master" {
			_, _ = o.Do("CLUSTER", "SETSLOT", s, "NODE", m.toID)
		}
	}
	c.waitOwner(m.slot, m.to.Addr())
}

// MigrateSlot moves slot to the master to: Begin, Keys, Finish, holding
// the slot in the migrating state for hold before its keys move.
func (c *Cluster) MigrateSlot(slot int, to *Server, hold time.Duration) {
	c.t.Helper()
	m := c.BeginMigration(slot, to)
	time.Sleep(hold)
	m.Keys()
	m.Finish()
}

// waitOwner waits until every running node says addr serves slot.
func (c *Cluster) waitOwner(slot int, addr string) {
	c.t.Helper()
	for _, s := range c.All() {
		if s.PID() == 0 {
			continue
		}
		waitFor(c.t, 20*time.Second, fmt.Sprintf("slot %d served by %s", slot, addr), func() error {
			nodes, err := nodesOf(s)
			if err != nil {
				return err
			}
			for _, n := range nodes {
				for _, r := range n.slots {
					if r[0] <= slot && slot <= r[1] {
						if n.addr != addr {
							return fmt.Errorf("%s says %s serves it", s.Addr(), n.addr)
						}
						return nil
					}
				}
			}
			return fmt.Errorf("%s says nobody serves it", s.Addr())
		})
	}
}

// AddMaster starts a new node, lets it meet the cluster, and returns it:
// a master without slots (give it some with MigrateSlot).
func (c *Cluster) AddMaster() *Server {
	c.t.Helper()
	s := Start(c.t, c.node)
	c.running().MustDo("CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(c.busBase(s)))
	c.Added = append(c.Added, s)
	c.waitKnown(c.t)
	c.waitAllSlots(s)
	return s
}

// Failover runs CLUSTER FAILOVER on replica (a graceful, manual failover:
// its master stops writes, the replica catches up, then takes over) and
// waits until it is a master, its old master a replica, and the cluster
// is ok again.
func (c *Cluster) Failover(replica *Server) {
	c.t.Helper()
	var old *Server
	if nodes, err := nodesOf(replica); err == nil {
		for _, n := range nodes {
			if n.is("myself") {
				for _, m := range nodes {
					if m.id == n.master {
						old = c.server(m.addr)
					}
				}
			}
		}
	}
	replica.MustDo("CLUSTER", "FAILOVER")
	c.WaitMaster(replica)
	if old != nil {
		waitFor(c.t, 20*time.Second, old.Addr()+" demoted", func() error {
			if r := Role(old); r != "slave" {
				return fmt.Errorf("%s is %s", old.Addr(), r)
			}
			return nil
		})
	}
}

// WaitMaster waits until s is a master serving slots and every running
// node says the cluster is ok (after a failover, forced or not).
func (c *Cluster) WaitMaster(s *Server) {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, s.Addr()+" promoted", func() error {
		nodes, err := nodesOf(s)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.is("myself") && n.is("master") && len(n.slots) > 0 {
				return nil
			}
		}
		return fmt.Errorf("%s is not a master serving slots yet", s.Addr())
	})
	c.WaitOK(c.t)
}

// ReplicaOf returns a replica of master (from the master's CLUSTER NODES
// view), nil if it has none.
func (c *Cluster) ReplicaOf(master *Server) *Server {
	c.t.Helper()
	id := c.ID(master)
	nodes, err := nodesOf(master)
	if err != nil {
		c.t.Fatalf("redistest: cluster nodes: %v", err)
	}
	for _, n := range nodes {
		if n.master == id {
			if s := c.server(n.addr); s != nil {
				return s
			}
		}
	}
	return nil
}

// SlotOf is the cluster hash slot of key (CLUSTER KEYSLOT, asked of a
// running node).
func (c *Cluster) SlotOf(key string) int {
	c.t.Helper()
	n, err := strconv.Atoi(c.running().MustDo("CLUSTER", "KEYSLOT", key))
	if err != nil {
		c.t.Fatalf("redistest: keyslot: %v", err)
	}
	return n
}
