//go:build linux

// faults_redis.go: the campaign's Redis Cluster, 3 masters and 3 replicas
// with AOF, every client and cluster-bus port behind a proxy of the
// campaign's Net (each node announces its proxies, so the gateways, the
// other nodes and the replication links all go through them), and the
// nemesis's faults on it.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/syncgate/syncgate/bench/internal/faults"
	"github.com/syncgate/syncgate/bench/internal/proc"
	"github.com/syncgate/syncgate/internal/natsserver"
	"github.com/syncgate/syncgate/internal/redistest"
)

// redisCluster is the running cluster. servers[0..2] start as masters,
// servers[3+i] as the replica of servers[i]; roles change with failovers.
type redisCluster struct {
	servers  []*serverProc
	proxies  []string // client proxy address by server
	ids      []string // cluster node id by server
	net      *faults.Net
	password string
	hot      string // the channel whose slot the migrate fault moves
	fsync    string
	wait     int // the gateways' redis.wait_replicas
	next     int // rotation over the masters
	owners   serverSet
}

const redisMasters, redisReplicas = 3, 3

// redisNodeTimeout is cluster-node-timeout: a master unreachable this long
// is failed over to its replica.
const redisNodeTimeout = 2 * time.Second

// startRedisCluster starts the six nodes in dir with appendfsync fsync
// (always or everysec), forms the cluster and waits until it is ok with
// every replica in sync.
func startRedisCluster(ctx context.Context, dir, hot, fsync string, wait int, p *progress) (_ *redisCluster, err error) {
	bin := redistest.Binary()
	if bin == "" {
		return nil, errors.New("redis cluster: no redis-server binary found")
	}
	c := &redisCluster{net: faults.NewNet(), password: natsserver.RandomToken(), hot: hot, fsync: fsync, wait: wait}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	c.net.Owner = c.owners.owner
	for i := range redisMasters + redisReplicas {
		port, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		busPort, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		client, err := c.net.Listen(i, addr)
		if err != nil {
			return nil, err
		}
		bus, err := c.net.Listen(i, net.JoinHostPort("127.0.0.1", strconv.Itoa(busPort)))
		if err != nil {
			return nil, err
		}
		d := filepath.Join(dir, fmt.Sprintf("redis%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		_, cport, _ := net.SplitHostPort(client)
		_, bport, _ := net.SplitHostPort(bus)
		args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", d,
			"--daemonize", "no", "--protected-mode", "yes", "--logfile", "",
			"--requirepass", c.password, "--masterauth", c.password,
			"--appendonly", "yes", "--appendfsync", fsync, "--save", "",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(busPort),
			"--cluster-node-timeout", strconv.FormatInt(redisNodeTimeout.Milliseconds(), 10),
			"--cluster-require-full-coverage", "no",
			// A replica takes over however long it was cut off from its
			// master: the campaign wants the failover, not the wait.
			"--cluster-replica-validity-factor", "0",
			"--cluster-announce-ip", "127.0.0.1", "--cluster-announce-port", cport, "--cluster-announce-bus-port", bport,
			"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
		}
		s := &serverProc{name: fmt.Sprintf("redis %d", i), bin: bin, args: args, dir: d, addr: addr, ready: c.pingable}
		c.servers, c.proxies = append(c.servers, s), append(c.proxies, client)
	}
	c.owners.set(c.servers)
	for _, s := range c.servers {
		if err := s.start(ctx); err != nil {
			return nil, err
		}
		id, err := c.do(s, "CLUSTER", "MYID")
		if err != nil {
			return nil, err
		}
		c.ids = append(c.ids, id)
	}
	const slots = 16384
	for i, s := range c.servers[:redisMasters] {
		lo, hi := i*slots/redisMasters, (i+1)*slots/redisMasters-1
		if _, err := c.do(s, "CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1)); err != nil {
			return nil, err
		}
		if _, err := c.do(s, "CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi)); err != nil {
			return nil, err
		}
	}
	for i := 1; i < len(c.servers); i++ {
		host, port, _ := net.SplitHostPort(c.proxies[i])
		_, bport, _ := net.SplitHostPort(c.busProxy(i))
		if _, err := c.do(c.servers[0], "CLUSTER", "MEET", host, port, bport); err != nil {
			return nil, fmt.Errorf("redis cluster: meet %s: %w", c.servers[i].name, err)
		}
	}
	if err := c.waitFor(ctx, 30*time.Second, "every node knows the others", func() error {
		for _, s := range c.servers {
			nodes, err := c.do(s, "CLUSTER", "NODES")
			if err != nil {
				return err
			}
			if n := strings.Count(nodes, " connected"); n < len(c.servers) {
				return fmt.Errorf("%s sees %d connected nodes", s.name, n)
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for i := range redisReplicas {
		if _, err := c.do(c.servers[redisMasters+i], "CLUSTER", "REPLICATE", c.ids[i%redisMasters]); err != nil {
			return nil, fmt.Errorf("redis cluster: replicate: %w", err)
		}
	}
	if err := c.waitHealthy(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	p.printf("redis-cluster: %d masters, %d replicas, AOF appendfsync %s, ok", redisMasters, redisReplicas, fsync)
	return c, nil
}

// busProxy is the cluster-bus proxy of server i, from its arguments.
func (c *redisCluster) busProxy(i int) string {
	a := c.servers[i].args
	j := slices.Index(a, "--cluster-announce-bus-port")
	return net.JoinHostPort("127.0.0.1", a[j+1])
}

func (c *redisCluster) do(s *serverProc, args ...string) (string, error) {
	out, err := redistest.DoAuth(s.addr, "", c.password, args...)
	if err != nil {
		return "", fmt.Errorf("%s: %s: %w", s.name, strings.Join(args[:min(2, len(args))], " "), err)
	}
	return out, nil
}

func (c *redisCluster) pingable(addr string) bool {
	out, err := redistest.DoAuth(addr, "", c.password, "PING")
	return err == nil && out == "PONG"
}

func (c *redisCluster) waitFor(ctx context.Context, timeout time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis cluster: %s: not after %s: %w", what, timeout, err)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitHealthy waits until every node reports cluster_state:ok, three
// masters serve the slots and every replica's link to its master is up.
func (c *redisCluster) waitHealthy(ctx context.Context, timeout time.Duration) error {
	return c.waitFor(ctx, timeout, "cluster ok, replicas in sync", func() error {
		for _, s := range c.servers {
			info, err := c.do(s, "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("%s: cluster_state not ok", s.name)
			}
		}
		t, err := c.roles()
		if err != nil {
			return err
		}
		if len(t.masters) != redisMasters {
			return fmt.Errorf("%d masters", len(t.masters))
		}
		for r := range t.replicaOf {
			info, err := c.do(c.servers[r], "INFO", "replication")
			if err != nil {
				return err
			}
			if !strings.Contains(info, "master_link_status:up") {
				return fmt.Errorf("%s: replication link down", c.servers[r].name)
			}
		}
		return nil
	})
}

// redisRoles is the cluster's view of who serves what.
type redisRoles struct {
	masters   []int       // servers that are masters with slots, not failed
	replicaOf map[int]int // replica -> its master
	slots     map[int][][2]int
}

// roles reads CLUSTER NODES from the first node that answers.
func (c *redisCluster) roles() (redisRoles, error) {
	var nodes string
	var err error
	for _, s := range c.servers {
		if nodes, err = c.do(s, "CLUSTER", "NODES"); err == nil {
			break
		}
	}
	if err != nil {
		return redisRoles{}, err
	}
	r := redisRoles{replicaOf: map[int]int{}, slots: map[int][][2]int{}}
	byID := map[string]int{}
	for i, id := range c.ids {
		byID[id] = i
	}
	for line := range strings.SplitSeq(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		i, ok := byID[f[0]]
		if !ok {
			continue
		}
		failed := strings.Contains(f[2], "fail")
		switch {
		case strings.Contains(f[2], "master") && !failed && len(f) > 8:
			r.masters = append(r.masters, i)
			for _, rg := range f[8:] {
				if strings.HasPrefix(rg, "[") {
					continue // a slot being migrated
				}
				lo, hi, found := strings.Cut(rg, "-")
				if !found {
					hi = lo
				}
				a, err1 := strconv.Atoi(lo)
				b, err2 := strconv.Atoi(hi)
				if err1 == nil && err2 == nil {
					r.slots[i] = append(r.slots[i], [2]int{a, b})
				}
			}
		case strings.Contains(f[2], "slave") && !failed:
			if m, ok := byID[f[3]]; ok {
				r.replicaOf[i] = m
			}
		}
	}
	slices.Sort(r.masters)
	return r, nil
}

// ownerOf is the master serving slot.
func (r redisRoles) ownerOf(slot int) (int, bool) {
	for m, rgs := range r.slots {
		for _, rg := range rgs {
			if slot >= rg[0] && slot <= rg[1] {
				return m, true
			}
		}
	}
	return 0, false
}

func (c *redisCluster) name() string { return "redis-cluster" }

func (c *redisCluster) env() []string {
	env := []string{"SYNCGATE_BROKER_TYPE=redis", "SYNCGATE_REDIS_CLUSTER=true",
		"SYNCGATE_REDIS_ADDRS=" + strings.Join(c.proxies, ","), "SYNCGATE_REDIS_PASSWORD=" + c.password}
	if c.wait > 0 {
		env = append(env, "SYNCGATE_REDIS_WAIT_REPLICAS="+strconv.Itoa(c.wait))
	}
	return env
}

func (c *redisCluster) kinds() []string {
	return []string{"kill", "restart", "failover", "migrate", "pause", "partition"}
}

func (c *redisCluster) procs() []*serverProc { return c.servers }

func (c *redisCluster) describe() string {
	return fmt.Sprintf("Redis Cluster, %d masters + %d replicas, AOF appendfsync %s, cluster-node-timeout %s, redis.wait_replicas %d",
		redisMasters, redisReplicas, c.fsync, redisNodeTimeout, c.wait)
}

// inject runs one fault of kind for d on the next master in turn and
// heals it; the Fault spans from its start to the moment it was healed.
func (c *redisCluster) inject(ctx context.Context, kind string, d time.Duration) (faults.Fault, error) {
	r, err := c.roles()
	if err != nil {
		return faults.Fault{}, err
	}
	if len(r.masters) == 0 {
		return faults.Fault{}, errors.New("redis cluster: no master")
	}
	m := r.masters[c.next%len(r.masters)]
	c.next++
	s := c.servers[m]
	f := faults.Fault{Kind: kind, Target: "master " + s.name, Start: time.Now()}
	handled, err := serverFault(ctx, kind, s, c.net, m, d)
	switch {
	case handled:
	case kind == "failover":
		f.Target, err = c.failover(ctx, r, m)
	case kind == "migrate":
		f.Target, err = c.migrate(ctx, r, d)
	default:
		err = fmt.Errorf("redis cluster: no fault %q", kind)
	}
	f.End = time.Now()
	return f, err
}

// failover asks a replica of master m to take over (CLUSTER FAILOVER) and
// waits until it is master.
func (c *redisCluster) failover(ctx context.Context, r redisRoles, m int) (string, error) {
	rep := -1
	for i, of := range r.replicaOf {
		if of == m && c.servers[i].pid() != 0 {
			rep = i
		}
	}
	if rep < 0 {
		return "", fmt.Errorf("redis cluster: %s has no replica", c.servers[m].name)
	}
	s := c.servers[rep]
	target := fmt.Sprintf("%s takes over from %s", s.name, c.servers[m].name)
	if _, err := c.do(s, "CLUSTER", "FAILOVER"); err != nil {
		return target, err
	}
	return target, c.waitFor(context.WithoutCancel(ctx), 15*time.Second, s.name+" becomes master", func() error {
		role, err := c.do(s, "ROLE")
		if err == nil && !strings.HasPrefix(role, "master") {
			err = errors.New("still a replica")
		}
		return err
	})
}

// migrate moves the hot channel's slot to the next master: importing and
// migrating for d/2, the keys moved with MIGRATE, d/2 more, then the slot
// assigned to its new owner on every master.
func (c *redisCluster) migrate(ctx context.Context, r redisRoles, d time.Duration) (string, error) {
	out, err := c.do(c.servers[r.masters[0]], "CLUSTER", "KEYSLOT", "{"+c.hot+"}")
	if err != nil {
		return "", err
	}
	slot, err := strconv.Atoi(out)
	if err != nil {
		return "", fmt.Errorf("redis cluster: KEYSLOT: %q", out)
	}
	src, ok := r.ownerOf(slot)
	if !ok {
		return "", fmt.Errorf("redis cluster: nobody serves slot %d", slot)
	}
	dst := r.masters[(slices.Index(r.masters, src)+1)%len(r.masters)]
	from, to := c.servers[src], c.servers[dst]
	target := fmt.Sprintf("slot %d of %s from %s to %s", slot, c.hot, from.name, to.name)
	sl := strconv.Itoa(slot)
	if _, err := c.do(to, "CLUSTER", "SETSLOT", sl, "IMPORTING", c.ids[src]); err != nil {
		return target, err
	}
	if _, err := c.do(from, "CLUSTER", "SETSLOT", sl, "MIGRATING", c.ids[dst]); err != nil {
		return target, err
	}
	_ = sleepCtx(ctx, d/2)
	host, port, _ := net.SplitHostPort(to.addr)
	for {
		keys, err := c.do(from, "CLUSTER", "GETKEYSINSLOT", sl, "100")
		if err != nil {
			return target, err
		}
		if keys == "" {
			break
		}
		args := append([]string{"MIGRATE", host, port, "", "0", "5000", "AUTH", c.password, "REPLACE", "KEYS"}, strings.Split(keys, "\n")...)
		if _, err := c.do(from, args...); err != nil {
			return target, err
		}
	}
	_ = sleepCtx(ctx, d/2)
	// The new owner first, then the old one, then the others (the order
	// redis-cli --cluster reshard uses).
	order := []int{dst, src}
	for _, m := range r.masters {
		if m != src && m != dst {
			order = append(order, m)
		}
	}
	for _, m := range order {
		if _, err := c.do(c.servers[m], "CLUSTER", "SETSLOT", sl, "NODE", c.ids[dst]); err != nil {
			return target, err
		}
	}
	return target, nil
}

// close stops every node and the proxies.
func (c *redisCluster) close() {
	for _, s := range c.servers {
		s.stop()
	}
	c.net.Close()
}
