package redis_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/brokertest"
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
	finishFailover(t, run, recs)
}

// TestClusterFailover: a cluster of three masters with a replica each; two
// nodes publish on a channel of the first master, which is killed with
// SIGKILL. The cluster promotes its replica; the nodes find the slot's new
// owner, and every publication is accounted for as in the Sentinel test.
func TestClusterFailover(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, ReplicasPerMaster: 1, NodeTimeout: time.Second})
	cfg := faultConfig(c.Addrs()...)
	cfg.Cluster = true
	nodes, recs := startNodes(t, cfg, 2)
	ch := ""
	for i := 0; ch == ""; i++ {
		if name := fmt.Sprintf("cluster:doc%d", i); nodes[0].ShardOf(name) == 0 {
			ch = name
		}
	}
	run := startLoad(t, nodes, recs, ch, 2, 4*time.Millisecond, 1000)
	brokertest.Eventually(t, 10*time.Second, "200 publications", func() bool { return run.count() >= 200 })
	killed := time.Now()
	c.Masters[0].Kill()
	for i, n := range nodes {
		brokertest.Eventually(t, 30*time.Second, fmt.Sprintf("node %d up on the promoted replica", i), func() bool {
			return n.Ping(t.Context()) == nil
		})
	}
	t.Logf("master of slot range 0 killed; both nodes up on the promoted replica (outbox replayed) after %v", time.Since(killed).Round(time.Millisecond))
	finishFailover(t, run, recs)
}

// finishFailover ends the load of a failover test and accounts for every
// publication (checkFailover); the failover must have gone through the
// outbox.
func finishFailover(t *testing.T, run *faultRun, recs []*brokertest.Recorder) {
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
	checkFailover(t, st)
	if st.AckedLocal == 0 {
		t.Errorf("no publication went through the outbox: the failover was not exercised")
	}
}
