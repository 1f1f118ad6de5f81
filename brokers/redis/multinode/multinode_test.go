package multinode_test

import (
	"fmt"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/redistest"
)

// TestCrossNodeDelivery: a publication on node B reaches a subscriber on
// node A with the seq B's client got in its ack; catch-up on B serves
// what was published on A.
func TestCrossNodeDelivery(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := startNode(t, srv.Addr()), startNode(t, srv.Addr())
	x, y := dial(t, a.url), dial(t, b.url)
	x.connect("alice")
	y.connect("bob")
	const ch = "doc:cross"
	x.mustCall("sub", map[string]any{"ch": ch}, "subscribed")
	sub := y.mustCall("sub", map[string]any{"ch": ch}, "subscribed")
	epoch := sub.str("epoch")

	for i := 1; i <= 3; i++ {
		ack := y.mustCall("pub", map[string]any{"ch": ch, "data": map[string]any{"n": i}}, "ack")
		m := x.msgs(ch, 1, 5*time.Second)[0]
		if m.num("seq") != ack.num("seq") || m.num("seq") != uint64(i) || m.str("epoch") != epoch || m.str("from") != "bob" {
			t.Fatalf("node A got %v for ack %v (epoch %q)", m, ack, epoch)
		}
	}
	// Published on A, caught up on B.
	for i := 4; i <= 6; i++ {
		x.mustCall("pub", map[string]any{"ch": ch, "data": i}, "ack")
	}
	z := dial(t, b.url)
	z.connect("carol")
	r := z.mustCall("sub", map[string]any{"ch": ch, "since": map[string]any{"seq": 3, "epoch": epoch}}, "subscribed")
	pubs, _ := r["pubs"].([]any)
	if r["recovered"] != true || len(pubs) != 3 || r.num("seq") != 6 {
		t.Fatalf("catch-up on B: %v, want recovered with seqs 4..6", r)
	}
	for i, p := range pubs {
		m := obj(p.(map[string]any))
		if m.num("seq") != uint64(4+i) || m.str("from") != "alice" {
			t.Errorf("caught-up message %d: %v", i, m)
		}
	}
}

// TestConcurrentPublishersOneOrder: clients on both nodes publish at the
// same time; subscribers on both nodes see one contiguous seq order, the
// same on both, with the seq each publisher's ack gave.
func TestConcurrentPublishersOneOrder(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	nodes := []*node{startNode(t, srv.Addr()), startNode(t, srv.Addr())}
	const ch = "doc:order"
	const publishers, each = 4, 50
	var subs []*client
	for i, n := range nodes {
		c := dial(t, n.url)
		c.connect(fmt.Sprintf("reader%d", i))
		c.mustCall("sub", map[string]any{"ch": ch}, "subscribed")
		subs = append(subs, c)
	}
	var pubs []*client
	for p := range publishers {
		c := dial(t, nodes[p%2].url)
		c.connect(fmt.Sprintf("writer%d", p))
		pubs = append(pubs, c)
	}
	acked := make(map[uint64]string)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for p, c := range pubs {
		wg.Go(func() {
			for i := range each {
				data := fmt.Sprintf("%d:%d", p, i)
				ack := c.call("pub", map[string]any{"ch": ch, "data": data})
				if ack.op() != "ack" {
					t.Errorf("pub: %v", ack)
					return
				}
				mu.Lock()
				if prev, dup := acked[ack.num("seq")]; dup {
					t.Errorf("seq %d acked for %s and %s", ack.num("seq"), prev, data)
				}
				acked[ack.num("seq")] = data
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	const total = publishers * each
	var orders [][]string
	for i, c := range subs {
		ms := c.msgs(ch, total, 10*time.Second)
		var order []string
		for k, m := range ms {
			if m.num("seq") != uint64(k+1) {
				t.Fatalf("node %d: message %d has seq %d, want %d", i, k, m.num("seq"), k+1)
			}
			data, _ := m["data"].(string)
			if acked[m.num("seq")] != data {
				t.Fatalf("node %d: seq %d carries %q, its ack was for %q", i, m.num("seq"), data, acked[m.num("seq")])
			}
			order = append(order, data)
		}
		orders = append(orders, order)
	}
	for k := range orders[0] {
		if orders[0][k] != orders[1][k] {
			t.Fatalf("seq %d: node 0 got %q, node 1 got %q", k+1, orders[0][k], orders[1][k])
		}
	}
}

// TestPresenceAcrossNodes: presence on one node lists clients on the
// other; join and leave cross nodes.
func TestPresenceAcrossNodes(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := startNode(t, srv.Addr()), startNode(t, srv.Addr())
	const ch = "doc:presence"
	x := dial(t, a.url)
	xid := x.connect("alice")
	x.mustCall("sub", map[string]any{"ch": ch}, "subscribed")

	y := dial(t, b.url)
	yid := y.connect("bob")
	y.mustCall("sub", map[string]any{"ch": ch}, "subscribed")
	if j := x.presenceEvent("join", ch, yid, 5*time.Second); j.str("user") != "bob" {
		t.Errorf("join on A: %v", j)
	}
	for name, c := range map[string]*client{"A": x, "B": y} {
		got := c.members(ch)
		if got[xid] != "alice" || got[yid] != "bob" || len(got) != 2 {
			t.Errorf("presence on node %s: %v, want alice (%s) and bob (%s)", name, got, xid, yid)
		}
	}
	y.mustCall("unsub", map[string]any{"ch": ch}, "unsubscribed")
	if l := x.presenceEvent("leave", ch, yid, 5*time.Second); l.str("user") != "bob" {
		t.Errorf("leave on A: %v", l)
	}
	y.mustCall("sub", map[string]any{"ch": ch}, "subscribed")
	x.presenceEvent("join", ch, yid, 5*time.Second)
	y.close() // disconnect: the node leaves for it
	x.presenceEvent("leave", ch, yid, 5*time.Second)
	if got := x.members(ch); len(got) != 1 || got[xid] != "alice" {
		t.Errorf("presence after bob left: %v", got)
	}
}

// TestNodeCrash: a node in a child process is killed with SIGKILL (no
// leave, no refresh). Its client's presence expires within the TTL, and
// the other node's subscribers get a leave for it.
func TestNodeCrash(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	survivor := startNode(t, srv.Addr())
	childURL, child := startChild(t, srv.Addr())
	const ch = "doc:crash"

	x := dial(t, survivor.url)
	xid := x.connect("alice")
	x.mustCall("sub", map[string]any{"ch": ch}, "subscribed")
	var victims []string
	for i := range 3 {
		c := dial(t, childURL)
		id := c.connect(fmt.Sprintf("victim%d", i))
		c.mustCall("sub", map[string]any{"ch": ch}, "subscribed")
		x.presenceEvent("join", ch, id, 5*time.Second)
		victims = append(victims, id)
	}
	if got := x.members(ch); len(got) != 4 {
		t.Fatalf("presence before the crash: %v, want alice and 3 victims", got)
	}
	// Let the child refresh its members at least once, so expiry is
	// measured from a refresh, then kill it.
	time.Sleep(400 * time.Millisecond)
	killed := time.Now()
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var waits []time.Duration
	for _, id := range victims {
		x.presenceEvent("leave", ch, id, 5*time.Second)
		waits = append(waits, time.Since(killed))
	}
	sort.Slice(waits, func(i, j int) bool { return waits[i] < waits[j] })
	t.Logf("leaves of the crashed node's 3 clients arrived %v after the kill (presence TTL 1s)", waits)
	if waits[2] > 2*time.Second {
		t.Errorf("last leave %v after the kill; want within the TTL (1s) plus a refresh period", waits[2])
	}
	if got := x.members(ch); len(got) != 1 || got[xid] != "alice" {
		t.Errorf("presence after the crash: %v, want only alice", got)
	}
}
