package jetstream_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
)

// TestClusterConformance runs the suite on a 3-server cluster with
// replicated (R3) streams; the two nodes of a pair talk to different
// servers.
func TestClusterConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	cl := natstest.RunCluster(t, 3)
	cfg := func(i int) jetstream.Config {
		return jetstream.Config{URL: cl.Servers[i].URL(), Replicas: 3, HistorySize: suiteHistory}
	}
	warmUp(t, cfg(0))
	brokertest.Suite{
		Features: brokertest.Features{
			History: true, HistorySize: suiteHistory, Epoch: true, Presence: true, Pinger: true, Snapshots: true,
		},
		New: func(t *testing.T) brokers.Broker { return jetstream.New(cfg(0)) },
		NewPair: func(t *testing.T) (brokers.Broker, brokers.Broker) {
			return jetstream.New(cfg(1)), jetstream.New(cfg(2))
		},
		// Whole-second TTLs, rounded up: see jetstream_test.go.
		PresenceTTL: 1500 * time.Millisecond,
		Settle:      20 * time.Millisecond,
		Wait:        10 * time.Second,
		// The cluster's servers may re-establish a route between them
		// during a check; those goroutines are the servers', which outlive
		// the brokers.
		LeakOptions: []goleak.Option{
			goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).createRoute.func1"),
			goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).createRoute.func2"),
		},
	}.Run(t)
}

// TestClusterMemberRestart publishes from two nodes on different servers
// of a 3-server cluster (R3, file storage) while the server the stream
// leader runs on is shut down and restarted. No acked message may be lost.
func TestClusterMemberRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	leakCheckLast(t)
	cl := natstest.RunCluster(t, 3)
	cfg := jetstream.Config{URL: cl.URL(), Replicas: 3, HistorySize: 5000}
	a := startNode(t, withURL(cfg, cl.Servers[0].URL()+","+cl.URL()))
	b := startNode(t, withURL(cfg, cl.Servers[1].URL()+","+cl.URL()))
	const ch = "doc.cluster"
	for _, n := range []node{a, b} {
		if err := n.b.Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
	}
	victim := cl.StreamLeader(t, "SG_HISTORY")
	const each = 200
	var results [2][]published
	var wg sync.WaitGroup
	for i, n := range []node{a, b} {
		wg.Go(func() {
			results[i] = publishLoop(t.Context(), n, ch, fmt.Sprintf("n%d", i), each, 3*time.Millisecond)
		})
	}
	time.Sleep(200 * time.Millisecond)
	victim.Shutdown()
	time.Sleep(500 * time.Millisecond)
	victim.Restart(t)
	wg.Wait()
	brokertest.Eventually(t, 30*time.Second, "both outboxes flushed", func() bool {
		return a.b.OutboxLen() == 0 && b.b.OutboxLen() == 0
	})
	var hist []brokers.Publication
	var pos brokers.Position
	brokertest.Eventually(t, 10*time.Second, "the history readable", func() bool {
		var err error
		hist, pos, err = a.b.Since(t.Context(), ch, 0, 5000)
		return err == nil && uint64(len(hist)) == pos.Seq
	})
	// Let the last deliveries arrive.
	brokertest.Eventually(t, 10*time.Second, "both nodes at the last seq", func() bool {
		for _, n := range []node{a, b} {
			ps := n.rec.Publications(ch)
			if len(ps) == 0 || ps[len(ps)-1].Seq != pos.Seq || ps[len(ps)-1].Epoch != pos.Epoch {
				return false
			}
		}
		return true
	})
	c := checkRestart(t, true, results[:], hist, pos, map[string]node{"a": a, "b": b}, ch)
	t.Logf("cluster, leader's server restarted: %d acked (%d during the outage), %d refused; stored %d; acked but not stored %d; stored twice %d; delivered in the final epoch: a %d, b %d; delivered in other epochs: a %d, b %d",
		c.acked, c.ackedInOutage, c.refused, c.stored, c.lostBeforeRestart+c.lostOutage+c.lostOther, c.duplicated,
		c.delivered["a"], c.delivered["b"], c.outageDeliveries["a"], c.outageDeliveries["b"])
}

func withURL(cfg jetstream.Config, url string) jetstream.Config {
	cfg.URL = url
	return cfg
}
