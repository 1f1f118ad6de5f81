package redistest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/testcert"
)

// Cluster is a Redis Cluster of masters (and optional replicas) started
// from plain redis-server processes: slots are spread evenly over the
// masters with CLUSTER ADDSLOTSRANGE and the nodes meet with CLUSTER MEET.
type Cluster struct {
	Masters  []*Server
	Replicas []*Server // Replicas[i] replicates Masters[i % len(Masters)]
	// Added are the masters AddMaster started, without slots at first.
	Added []*Server
	tls   bool
	node  Options // every node's options (AddMaster starts more)
	t     testing.TB
}

// ClusterOptions configures StartCluster.
type ClusterOptions struct {
	Masters int // default 3
	// ReplicasPerMaster is how many replicas each master gets; default 0.
	ReplicasPerMaster int
	// NodeTimeout is cluster-node-timeout; default 1s (fast failover).
	NodeTimeout time.Duration
	// User and Password: every node requires this ACL user (see
	// Options); replicas log in to their masters with it.
	User, Password string
	// TLS gives every node a TLS port with one shared test CA; the
	// cluster bus and replication use TLS, and CLUSTER SLOTS asked over
	// TLS names the TLS ports (see TLSAddrs, TLSFiles).
	TLS bool
	// AOF turns on appendonly persistence (fsync always) on every node, so
	// a node restarted in place keeps its data.
	AOF bool
	// Args are extra redis-server arguments for every node.
	Args []string
}

// StartCluster starts a cluster and waits until every node reports
// cluster_state:ok and knows all the others.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.Masters <= 0 {
		opts.Masters = 3
	}
	if opts.NodeTimeout <= 0 {
		opts.NodeTimeout = time.Second
	}
	args := []string{
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.FormatInt(opts.NodeTimeout.Milliseconds(), 10),
		"--cluster-require-full-coverage", "no",
	}
	if opts.User != "" {
		args = append(args, "--masteruser", opts.User, "--masterauth", opts.Password)
	}
	args = append(args, opts.Args...)
	node := Options{Args: args, User: opts.User, Password: opts.Password, AOF: opts.AOF}
	if opts.TLS {
		f := testcert.Write(t)
		node.TLS, node.TLSFiles = true, &f
		node.Args = append(node.Args, "--tls-cluster", "yes", "--tls-replication", "yes")
	}
	c := &Cluster{tls: opts.TLS, node: node, t: t}
	for range opts.Masters {
		c.Masters = append(c.Masters, Start(t, node))
	}
	for range opts.Masters * opts.ReplicasPerMaster {
		c.Replicas = append(c.Replicas, Start(t, node))
	}
	const slots = 16384
	for i, m := range c.Masters {
		lo, hi := i*slots/opts.Masters, (i+1)*slots/opts.Masters-1
		m.MustDo("CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1))
		m.MustDo("CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi))
	}
	first := c.Masters[0]
	for _, s := range c.All()[1:] {
		first.MustDo("CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(c.busBase(s)))
	}
	c.waitKnown(t)
	for i, r := range c.Replicas {
		master := c.Masters[i%len(c.Masters)]
		id := master.MustDo("CLUSTER", "MYID")
		waitFor(t, 10*time.Second, "replica to learn its master", func() error {
			_, err := r.Do("CLUSTER", "REPLICATE", id)
			return err
		})
	}
	for _, r := range c.Replicas {
		waitFor(t, 20*time.Second, "replica in sync", func() error {
			out, err := r.Do("INFO", "replication")
			if err != nil {
				return err
			}
			if !strings.Contains(out, "master_link_status:up") {
				return fmt.Errorf("replica %s not linked yet", r.Addr())
			}
			return nil
		})
	}
	c.WaitOK(t)
	for _, s := range c.All() {
		c.waitAllSlots(s)
	}
	return c
}

// waitAllSlots waits until s sees all 16384 slots served. With
// cluster-require-full-coverage off a node says ok before it has learnt
// who serves every slot (CLUSTERDOWN Hash slot not served): a new node is
// ready when it sees all slots served.
func (c *Cluster) waitAllSlots(s *Server) {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, "every slot served", func() error {
		out, err := s.Do("CLUSTER", "INFO")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "cluster_state:ok") || !strings.Contains(out, "cluster_slots_ok:16384") {
			return fmt.Errorf("%s: not every slot served yet", s.Addr())
		}
		return nil
	})
}

// All returns every server: masters, replicas, then added masters.
func (c *Cluster) All() []*Server {
	return append(append(append([]*Server{}, c.Masters...), c.Replicas...), c.Added...)
}

// busBase is the port a node is known by in the cluster (its cluster bus
// port is this + 10000): the TLS port with tls-cluster.
func (c *Cluster) busBase(s *Server) int {
	if c.tls {
		return s.tlsPort
	}
	return s.Port()
}

// TLSAddrs returns the masters' TLS addresses (nil without TLS).
func (c *Cluster) TLSAddrs() []string {
	if !c.tls {
		return nil
	}
	addrs := make([]string, len(c.Masters))
	for i, m := range c.Masters {
		addrs[i] = m.TLSAddr()
	}
	return addrs
}

// TLSFiles are the CA, certificate and key every node uses.
func (c *Cluster) TLSFiles() testcert.Files { return c.Masters[0].TLSFiles() }

// Addrs returns the masters' addresses (seed nodes for a client).
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Masters))
	for i, m := range c.Masters {
		addrs[i] = m.Addr()
	}
	return addrs
}

// waitKnown waits until every node knows every other. A MEET can be lost
// (a handshake that times out on a loaded machine is forgotten: seen as a
// TLS node knowing 1 of 3 after 10 s), so the first master meets the
// others again every 2 s while one is missing.
func (c *Cluster) waitKnown(t testing.TB) {
	t.Helper()
	all := c.All()
	n := len(all)
	lastMeet := time.Now()
	for _, s := range all {
		waitFor(t, 30*time.Second, "nodes to meet", func() error {
			out, err := s.Do("CLUSTER", "NODES")
			if err != nil {
				return err
			}
			if got := len(strings.Split(strings.TrimSpace(out), "\n")); got != n {
				if time.Since(lastMeet) > 2*time.Second {
					lastMeet = time.Now()
					for _, o := range all[1:] {
						all[0].Do("CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(c.busBase(o)))
					}
				}
				return fmt.Errorf("%s knows %d nodes, want %d", s.Addr(), got, n)
			}
			if strings.Contains(out, "handshake") || strings.Contains(out, "noaddr") {
				return fmt.Errorf("%s: handshake still running", s.Addr())
			}
			return nil
		})
	}
}

// WaitOK waits until every running node reports cluster_state:ok.
func (c *Cluster) WaitOK(t testing.TB) {
	t.Helper()
	for _, s := range c.All() {
		if s.PID() == 0 {
			continue
		}
		waitFor(t, 20*time.Second, "cluster_state:ok", func() error {
			out, err := s.Do("CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if !strings.Contains(out, "cluster_state:ok") {
				return fmt.Errorf("%s: cluster not ok", s.Addr())
			}
			return nil
		})
	}
}

// waitFor polls f until it returns nil, failing t after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(wait)
	}
}
