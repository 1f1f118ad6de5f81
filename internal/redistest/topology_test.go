package redistest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/redistest"
)

// TestClusterTopology drives the topology helpers on a real cluster: a
// slot with a key moves to a new master (and the key with it; a
// multi-key script on the slot gets TRYAGAIN while it migrates), then a
// replica takes over by CLUSTER FAILOVER.
func TestClusterTopology(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	slot := c.SlotOf("{doc}")
	from := c.Owner(slot)
	if from == nil {
		t.Fatal("no owner")
	}
	from.MustDo("SET", "{doc}:a", "1")
	from.MustDo("SET", "{doc}:b", "2")
	m := c.AddMaster()
	mig := c.BeginMigration(slot, m)
	_, err := from.Do("EVAL", "return redis.call('get', KEYS[1])", "2", "{doc}:a", "{doc}:c")
	if err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN") {
		t.Errorf("a two-key script on a migrating slot, one key missing: %v, want TRYAGAIN", err)
	}
	if n := mig.Keys(); n != 2 {
		t.Errorf("moved %d keys, want 2", n)
	}
	mig.Finish()
	if got := c.Owner(slot); got != m {
		t.Fatalf("slot %d owned by %v after the migration, want the new master", slot, got)
	}
	if v := m.MustDo("GET", "{doc}:b"); v != "2" {
		t.Errorf("moved key = %q", v)
	}
	other := c.Masters[0]
	if other == from {
		other = c.Masters[1]
	}
	r := c.ReplicaOf(other)
	if r == nil {
		t.Fatal("no replica")
	}
	start := time.Now()
	c.Failover(r)
	if redistest.Role(r) != "master" || redistest.Role(other) != "slave" {
		t.Errorf("after CLUSTER FAILOVER: replica is %s, old master %s", redistest.Role(r), redistest.Role(other))
	}
	t.Logf("manual failover took %v", time.Since(start).Round(time.Millisecond))
}
