package redis_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestSentinelFailover: a master, a replica and three sentinels; two nodes
// publish and subscribe through Sentinel. The master is killed with
// SIGKILL; Sentinel promotes the replica and the nodes follow it. The test
// measures how long delivery stopped and accounts for every publication.
// Replication is asynchronous, so writes the master acknowledged but did
// not replicate are lost; the nodes then see the channel's history go
// backwards and start a new epoch, so no client gets wrong data.
func TestSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 1, Sentinels: 3, DownAfter: 500 * time.Millisecond})
	cfg := faultConfig()
	cfg.Addrs = nil
	cfg.SentinelMaster = s.Name
	cfg.SentinelAddrs = s.Addrs()
	nodes, recs := startNodes(t, cfg, 2)
	run := startLoad(t, nodes, recs, "failover:doc", 2, 4*time.Millisecond, 1000)
	brokertest.Eventually(t, 10*time.Second, "200 publications", func() bool { return run.count() >= 200 })

	oldMaster := s.Master.Addr()
	killed := time.Now()
	s.Master.Kill()
	brokertest.Eventually(t, 30*time.Second, "a new master", func() bool {
		addr, err := s.MasterAddr()
		return err == nil && addr != oldMaster
	})
	promoted := time.Since(killed)
	for i, n := range nodes {
		brokertest.Eventually(t, 30*time.Second, fmt.Sprintf("node %d up on the new master", i), func() bool {
			return n.Ping(t.Context()) == nil
		})
	}
	recovered := time.Since(killed)
	t.Logf("master killed; Sentinel promoted the replica after %v; both nodes up (outbox replayed) after %v",
		promoted.Round(time.Millisecond), recovered.Round(time.Millisecond))
	finishFailover(t, run, recs, false)
}

// TestClusterFailover: a cluster of three masters with a replica each; two
// nodes publish on a channel of the first master, which is killed with
// SIGKILL. The cluster promotes its replica; the nodes find the slot's new
// owner. With WaitReplicas 1 a publication is acked only once the replica
// has it, so nothing acked is lost: every publication reaches both nodes
// once, in order, or is covered by an epoch change (a write the dead
// master published but never got replicated; its publisher was not given
// that position, it is replayed from the outbox). The promoted replica
// has no replica of its own until the killed master is restarted and
// rejoins as one: until then its publications wait in the outboxes.
func TestClusterFailover(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, ReplicasPerMaster: 1, NodeTimeout: time.Second})
	cfg := clusterFaultConfig(c)
	nodes, recs, run := clusterFaultLoad(t, c, []redis.Config{cfg, cfg}, 2)
	replica := c.ReplicaOf(c.Masters[0])
	killed := time.Now()
	c.Masters[0].Kill()
	awaitPromoted(t, replica)
	promoted := time.Since(killed)
	c.Masters[0].Restart() // rejoins as the replica of its replica
	for i, n := range nodes {
		brokertest.Eventually(t, 30*time.Second, fmt.Sprintf("node %d up on the promoted replica", i), func() bool {
			return n.Ping(t.Context()) == nil
		})
	}
	t.Logf("master of slot range 0 killed; replica promoted after %v; both nodes up on it (outbox replayed) after %v",
		promoted.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	finishFailover(t, run, recs, true)
}

// awaitPromoted waits until replica says it is a master.
func awaitPromoted(t *testing.T, replica *redistest.Server) {
	t.Helper()
	brokertest.Eventually(t, 30*time.Second, "the replica promoted", func() bool {
		out, err := replica.Do("INFO", "replication")
		return err == nil && strings.Contains(out, "role:master")
	})
}

// TestClusterPause: as TestClusterFailover, but the master is stopped
// with SIGSTOP for three node timeouts (its replica is elected meanwhile)
// and then continued: until it learns it was demoted, the old master can
// still take writes the new one will never have. Its replica no longer
// follows it, so WAIT counts none: they are not acked as stored, and the
// outbox replays them on the new master. Nothing acked is lost, and
// nothing needs a new epoch.
//
// In "stale", only node 0 publishes, and node 1 keeps its connection to
// the paused master through the pause (a slow probe with a 10 s read
// timeout, and no publish of its own); node 0 gives up on a publish after
// 1 s. When the
// master continues, it reads the publishes node 0 gave up on from its
// socket. It must refuse them (SGLATE, the script's deadline): run, they
// were fanned out to node 1, then lost with the demotion, while node 0's
// outbox replayed them on the new master (at node 1 a duplicate, or a
// new epoch).
func TestClusterPause(t *testing.T) {
	for _, stale := range []bool{false, true} {
		t.Run(map[bool]string{false: "probed", true: "stale"}[stale], func(t *testing.T) {
			c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, ReplicasPerMaster: 1, NodeTimeout: time.Second})
			cfg := clusterFaultConfig(c)
			cfgs := []redis.Config{cfg, cfg}
			publishing := 2
			if stale {
				publishing = 1
				cfgs[1].ReadTimeout, cfgs[1].ProbeInterval, cfgs[1].ProbeTimeout = 10*time.Second, 5*time.Second, 10*time.Second
			}
			nodes, recs, run := clusterFaultLoad(t, c, cfgs, publishing)
			replica := c.ReplicaOf(c.Masters[0])
			paused := time.Now()
			c.Masters[0].Pause()
			awaitPromoted(t, replica)
			promoted := time.Since(paused)
			time.Sleep(max(0, 3*time.Second-promoted))
			c.Masters[0].Resume()
			resumed := time.Now()
			for i, n := range nodes {
				brokertest.Eventually(t, 30*time.Second, fmt.Sprintf("node %d up on the promoted replica", i), func() bool {
					return n.Ping(t.Context()) == nil
				})
			}
			time.Sleep(time.Second) // publish while the old master learns it was demoted
			t.Logf("master of slot range 0 paused %v (replica promoted after %v); both nodes up %v after it resumed",
				resumed.Sub(paused).Round(time.Millisecond), promoted.Round(time.Millisecond), time.Since(resumed).Round(time.Millisecond))
			st := finishFailover(t, run, recs, true)
			if st.Epochs != 1 {
				t.Errorf("%d epochs, want 1: nothing was lost", st.Epochs)
			}
		})
	}
}

// clusterFaultConfig is faultConfig for cluster c, with WaitReplicas 1.
func clusterFaultConfig(c *redistest.Cluster) redis.Config {
	cfg := faultConfig(c.Addrs()...)
	cfg.Cluster = true
	cfg.WaitReplicas = 1
	return cfg
}

// clusterFaultLoad starts a node per config on cluster c and load on a
// channel of its first master, published on the first publishing nodes.
func clusterFaultLoad(t *testing.T, c *redistest.Cluster, cfgs []redis.Config, publishing int) ([]*redis.Broker, []*brokertest.Recorder, *faultRun) {
	t.Helper()
	var nodes []*redis.Broker
	var recs []*brokertest.Recorder
	for _, cfg := range cfgs {
		n, r := startNodes(t, cfg, 1)
		nodes, recs = append(nodes, n...), append(recs, r...)
	}
	ch := ""
	for i := 0; ch == ""; i++ {
		if name := fmt.Sprintf("cluster:doc%d", i); nodes[0].ShardOf(name) == 0 {
			ch = name
		}
	}
	run := startLoadOn(t, nodes, recs, publishing, ch, 2, 4*time.Millisecond, 1000)
	brokertest.Eventually(t, 10*time.Second, "200 publications", func() bool { return run.count() >= 200 })
	return nodes, recs, run
}

// finishFailover ends the load of a failover test and accounts for every
// publication; the failover must have gone through the outbox. waited:
// the nodes ran with WaitReplicas, so nothing acked may be lost
// (checkNoBugs); else writes the master acked but did not replicate may be
// (checkFailover).
func finishFailover(t *testing.T, run *faultRun, recs []*brokertest.Recorder, waited bool) faultStats {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	run.finish(t, 30*time.Second)
	for _, rec := range recs {
		if err := rec.Err(); err != nil {
			t.Error(err)
		}
	}
	st := run.analyze(t)
	t.Logf("%s", st)
	if waited {
		checkNoBugs(t, st)
		if st.AckedRealLost != 0 {
			t.Errorf("%d publications acked with a Redis position were delivered to no node", st.AckedRealLost)
		}
	} else {
		checkFailover(t, st)
	}
	if st.AckedLocal == 0 {
		t.Errorf("no publication went through the outbox: the failover was not exercised")
	}
	return st
}
