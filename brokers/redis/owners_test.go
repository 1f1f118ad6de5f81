package redis

import (
	"errors"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// TestDecideOwners: how a node decides which master serves a slot from
// the slot maps of the nodes it asked, while views disagree (gossip has
// not spread a migration or a failover yet).
func TestDecideOwners(t *testing.T) {
	rng := func(lo, hi int, owner string) goredis.ClusterSlot {
		return goredis.ClusterSlot{Start: lo, End: hi, Nodes: []goredis.ClusterNode{{Addr: owner}}}
	}
	const a, b, c = "a:1", "b:1", "c:1"
	// a and c still say a serves slot 7; b, which took it, says b.
	stale := []goredis.ClusterSlot{rng(0, 99, a), rng(100, numSlots-1, c)}
	moved := []goredis.ClusterSlot{rng(0, 6, a), rng(7, 7, b), rng(8, 99, a), rng(100, numSlots-1, c)}
	got, err := decideOwners([]string{a, b, c}, [][]goredis.ClusterSlot{stale, moved, stale}, make([]error, 3))
	if err != nil {
		t.Fatal(err)
	}
	// a claims 0-99 for itself, b claims 7: two claims on 7, so the
	// majority (a, c) decides: a.
	if got[7] != a || got[8] != a || got[100] != c {
		t.Errorf("two claims: slot 7 %q, 8 %q, 100 %q; want a, a, c", got[7], got[8], got[100])
	}
	// Once a gave slot 7 up (SETSLOT NODE), b's own word wins over c's
	// stale view.
	gaveUp := []goredis.ClusterSlot{rng(0, 6, a), rng(7, 7, b), rng(8, 99, a), rng(100, numSlots-1, c)}
	got, _ = decideOwners([]string{a, b, c}, [][]goredis.ClusterSlot{gaveUp, moved, stale}, make([]error, 3))
	if got[7] != b {
		t.Errorf("slot 7 = %q after a gave it up, want b (its own claim)", got[7])
	}
	// A dead master (no reply) cannot claim; the others' majority names
	// it until they see the failover; a tie leaves a slot unknown.
	dead := errors.New("connection refused")
	got, _ = decideOwners([]string{a, b, c}, [][]goredis.ClusterSlot{nil, stale, moved}, []error{dead, nil, nil})
	if got[0] != a || got[7] != "" {
		t.Errorf("master a dead: slot 0 %q (want a), slot 7 %q (a tie: want unknown)", got[0], got[7])
	}
	// Garbled ranges are ignored; no reply at all is an error.
	bad := []goredis.ClusterSlot{{Start: -1, End: 3, Nodes: []goredis.ClusterNode{{Addr: c}}}, {Start: 5, End: numSlots, Nodes: []goredis.ClusterNode{{Addr: c}}}, {Start: 9, End: 9}}
	got, _ = decideOwners([]string{c}, [][]goredis.ClusterSlot{bad}, make([]error, 1))
	for s, o := range got {
		if o != "" {
			t.Fatalf("slot %d = %q from garbled ranges", s, o)
		}
	}
	if _, err := decideOwners([]string{a}, [][]goredis.ClusterSlot{nil}, []error{dead}); err == nil {
		t.Errorf("no node answered: no error")
	}
}
