package redis_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestClusterMasterRestart: a cluster master without replica (and without
// persistence) is killed under load and restarted on its port: its
// channels lose their history (a new epoch) and go through the outage
// meanwhile; every publication is accounted for.
func TestClusterMasterRestart(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
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
	c.Masters[0].Kill()
	time.Sleep(time.Second)
	c.Masters[0].Restart()
	for i, n := range nodes {
		brokertest.Eventually(t, 30*time.Second, fmt.Sprintf("node %d up", i), func() bool {
			return n.Ping(t.Context()) == nil
		})
	}
	time.Sleep(200 * time.Millisecond)
	run.finish(t, 30*time.Second)
	st := run.analyze(t)
	t.Logf("%s", st)
	checkNoBugs(t, st)
}
