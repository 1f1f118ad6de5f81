package redis_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
)

// The topology tests change a Redis Cluster while two nodes publish on
// one channel and subscribe to it, then account for every publication
// (faultRun.analyze): each acked one delivered once, in order, at both
// nodes, or covered by an announced epoch change.

// hotChannel returns a channel whose slot the cluster's master i serves.
func hotChannel(t *testing.T, c *redistest.Cluster, i int) (string, int) {
	t.Helper()
	for k := 0; ; k++ {
		ch := fmt.Sprintf("topo:doc%d", k)
		slot := c.SlotOf("{" + ch + "}")
		if c.Owner(slot) == c.Masters[i] {
			return ch, slot
		}
	}
}

// clusterLoad starts two nodes on c and load on ch, and waits for 200
// publications.
func clusterLoad(t *testing.T, c *redistest.Cluster, ch string) ([]*redis.Broker, *faultRun) {
	t.Helper()
	cfg := faultConfig(c.Addrs()...)
	cfg.Cluster = true
	nodes, recs := startNodes(t, cfg, 2)
	run := startLoad(t, nodes, recs, ch, 2, 3*time.Millisecond, 3000)
	brokertest.Eventually(t, 10*time.Second, "200 publications", func() bool { return run.count() >= 200 })
	return nodes, run
}

// finishTopology waits for both nodes up, lets the load run on, fences,
// and checks: no bug, and (when lossless) every acked publication
// delivered exactly once at both nodes in one epoch.
func finishTopology(t *testing.T, nodes []*redis.Broker, run *faultRun, changed time.Time, lossless bool) faultStats {
	t.Helper()
	for i, n := range nodes {
		brokertest.Eventually(t, 20*time.Second, fmt.Sprintf("node %d up", i), func() bool { return n.Ping(t.Context()) == nil })
	}
	t.Logf("both nodes up %v after the change", time.Since(changed).Round(time.Millisecond))
	before := run.count()
	brokertest.Eventually(t, 10*time.Second, "publishing after the change", func() bool { return run.count() >= before+100 })
	run.finish(t, 20*time.Second)
	for _, rec := range run.recs {
		if err := rec.Err(); err != nil {
			t.Error(err)
		}
	}
	st := run.analyze(t)
	t.Logf("%s; shard reconnects (most of a node) %d", st, st.Reconnects)
	checkNoBugs(t, st)
	if lossless {
		if st.Epochs != 1 {
			t.Errorf("%d epochs, want 1: the channel's keys moved with its slot", st.Epochs)
		}
		want := st.Published - st.Failed
		for i, n := range st.PerNode {
			if n.ExactlyOnce != want {
				t.Errorf("node %d: %d of %d acked publications delivered exactly once", i, n.ExactlyOnce, want)
			}
		}
	}
	return st
}

// TestClusterSlotMigration: the hot channel's slot moves to another master
// while both nodes publish: importing/migrating for 300 ms (publications
// get TRYAGAIN and wait in the outbox), its keys MIGRATEd, then the slot
// assigned to the target. The nodes follow it (the old owner drops their
// shard subscriptions, MOVED), and lose nothing: the channel's meta hash
// and history moved with it, one epoch.
func TestClusterSlotMigration(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	ch, slot := hotChannel(t, c, 0)
	nodes, run := clusterLoad(t, c, ch)
	changed := time.Now()
	c.MigrateSlot(slot, c.Masters[1], 300*time.Millisecond)
	t.Logf("slot %d migrated in %v", slot, time.Since(changed).Round(time.Millisecond))
	st := finishTopology(t, nodes, run, changed, true)
	if st.AckedLocal == 0 {
		t.Errorf("no publication went through the outbox: the migrating slot was not exercised")
	}
	for i, n := range nodes {
		if got, want := n.ShardOf(ch), n.ShardOf(otherChannel(t, c, 1)); got != want {
			t.Errorf("node %d: the channel is on shard %d, not %d with the channels of its new master", i, got, want)
		}
	}
}

// otherChannel is a channel of master i that did not move.
func otherChannel(t *testing.T, c *redistest.Cluster, i int) string {
	ch, _ := hotChannel(t, c, i)
	return ch
}

// TestClusterNewMaster: a master is added to the running cluster and the
// hot channel's slot is moved to it while both nodes publish. The nodes
// open connections to the new master and lose nothing.
func TestClusterNewMaster(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	ch, slot := hotChannel(t, c, 2)
	nodes, run := clusterLoad(t, c, ch)
	m := c.AddMaster()
	changed := time.Now()
	c.MigrateSlot(slot, m, 100*time.Millisecond)
	finishTopology(t, nodes, run, changed, true)
	for i, n := range nodes {
		if got := n.ShardOf(ch); got < 3 {
			t.Errorf("node %d: the channel is on shard %d, one of the first three masters'", i, got)
		}
	}
}

// TestClusterManualFailover: CLUSTER FAILOVER on the replica of the hot
// channel's master while both nodes publish. A manual failover waits for
// the replica to catch up before it takes over, so nothing acked is lost
// and the epoch stays; the nodes follow the new master (the demoted one
// drops their shard subscriptions).
func TestClusterManualFailover(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	ch, _ := hotChannel(t, c, 0)
	nodes, run := clusterLoad(t, c, ch)
	changed := time.Now()
	c.Failover(c.ReplicaOf(c.Masters[0]))
	finishTopology(t, nodes, run, changed, true)
}

// skipShort skips a topology test (a cluster and a change under load:
// seconds) in -short; make test runs them.
func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster topology change under load; skipped in -short")
	}
}

// TestClusterSlotBackAndForth: the hot channel's slot goes to a new
// master, back to its first master (the new master's shard then serves no
// slot: it retires), and to the new master again (the retired shard comes
// back), while both nodes publish. Nothing is lost, one epoch.
func TestClusterSlotBackAndForth(t *testing.T) {
	skipShort(t)
	// A master that loses its last slot stays a master (by default
	// Redis 7 makes it a replica of the slot's new owner).
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, Args: []string{"--cluster-allow-replica-migration", "no"}})
	ch, slot := hotChannel(t, c, 0)
	nodes, run := clusterLoad(t, c, ch)
	m := c.AddMaster()
	changed := time.Now()
	shards := make([]int, 0, 3)
	for _, to := range []*redistest.Server{m, c.Masters[0], m} {
		c.MigrateSlot(slot, to, 50*time.Millisecond)
		for i, n := range nodes {
			brokertest.Eventually(t, 20*time.Second, fmt.Sprintf("node %d up after the move to %s", i, to.Addr()), func() bool {
				return n.Ping(t.Context()) == nil
			})
		}
		before := run.count()
		brokertest.Eventually(t, 10*time.Second, "publishing after the move", func() bool { return run.count() >= before+50 })
		shards = append(shards, nodes[0].ShardOf(ch))
	}
	if shards[0] < 3 || shards[1] != 0 || shards[2] != shards[0] {
		t.Errorf("the channel's shards on node 0: %v; want a new one, 0, then the new one again", shards)
	}
	finishTopology(t, nodes, run, changed, true)
}
