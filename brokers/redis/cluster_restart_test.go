package redis_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestClusterMasterRestart: a cluster master without replica is killed
// under load and restarted on its port, without persistence (its channels
// lose their history: a new epoch) and with AOF (appendfsync always:
// nothing lost, one epoch); its channels go through the outage meanwhile,
// and every publication is accounted for.
func TestClusterMasterRestart(t *testing.T) {
	for _, aof := range []bool{false, true} {
		t.Run(map[bool]string{false: "no-persistence", true: "aof"}[aof], func(t *testing.T) {
			c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, AOF: aof})
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
			if st.AckedLocal == 0 {
				t.Errorf("no publication went through the outbox: the outage was not exercised")
			}
			if !aof {
				return
			}
			if st.Epochs != 1 {
				t.Errorf("%d epochs, want 1: the AOF kept the history", st.Epochs)
			}
			want := st.Published - st.Failed
			for i, n := range st.PerNode {
				if n.ExactlyOnce != want {
					t.Errorf("node %d: %d of %d acked publications delivered exactly once", i, n.ExactlyOnce, want)
				}
			}
		})
	}
}
