package redis_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
)

// clusterACL is what docs/operations.md adds to minimalACL for a Redis
// Cluster: sharded pub/sub and the slot map.
var clusterACL = []string{"+spublish", "+ssubscribe", "+sunsubscribe", "+cluster|slots"}

// TestConformanceClusterMinimalACL runs the whole conformance suite on a
// Redis Cluster of three masters as an ACL user holding exactly the
// documented permissions (minimalACL plus clusterACL), on every node:
// a command the cluster code needs and the lists lack fails the suite.
// Then a slot moves to another master under two nodes logged in as that
// user: they follow it (the slot map read again, shard subscriptions
// moved) and deliver seqs 1..10 in one epoch. Both lists in the test are
// the ones in the doc. (The cluster is set up by the default user; the
// nodes log in as the narrowed one.)
func TestConformanceClusterMinimalACL(t *testing.T) {
	redistest.ACLInDoc(t, "../../docs/operations.md", "redis", minimalACL)
	redistest.ACLInDoc(t, "../../docs/operations.md", "redis Cluster", clusterACL)
	const user, pass = "syncgate", "acl-secret-0123456789"
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	rules := slices.Concat(minimalACL, clusterACL)
	for _, s := range c.All() {
		s.MustDo(slices.Concat([]string{"ACL", "SETUSER", user, "on", ">" + pass}, rules)...)
	}
	cfg := testConfig(c.Addrs()...)
	cfg.Cluster = true
	cfg.Username, cfg.Password = user, pass
	s := brokertest.Nodes(suiteFeatures, func() brokers.Broker { return redis.New(cfg) })
	s.LeakOptions = clusterLeaks
	s.Run(t)
	// The topology-following code too: a slot moves to another master
	// (the old owner drops the shard subscriptions, MOVED, the slot map
	// read again) and both nodes follow it as the narrowed user.
	nodes, recs := startNodes(t, cfg, 2)
	ch, slot := hotChannel(t, c, 0)
	for _, n := range nodes {
		if err := n.Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(k int) {
		for range k {
			if _, err := nodes[0].Publish(t.Context(), ch, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(5)
	c.MigrateSlot(slot, c.Masters[1], 100*time.Millisecond)
	publish(5)
	for k, rec := range recs {
		var real []brokers.Publication
		rec.WaitFor(t, waitTimeout, fmt.Sprintf("node %d: seqs 1..10 in the real epoch", k), func([]brokertest.Event) bool {
			real = slices.DeleteFunc(rec.Publications(ch), func(p brokers.Publication) bool { return redis.IsLocalEpoch(p.Epoch) })
			return len(real) >= 10
		})
		for i, p := range real {
			if p.Seq != uint64(i+1) || p.Epoch != real[0].Epoch {
				t.Fatalf("node %d: after the migration delivered %+v, want seqs 1..10 in one epoch", k, real)
			}
		}
	}
	// The user really is that narrow.
	for _, cmd := range [][]string{{"SET", "sg{x}:other", "1"}, {"CLUSTER", "NODES"}} {
		if _, err := redistest.DoAuth(c.Masters[0].Addr(), user, pass, cmd...); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("%s as the narrowed user: %v, want NOPERM", cmd, err)
		}
	}
}
