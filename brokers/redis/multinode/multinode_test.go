package multinode_test

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestCrossNodeDelivery: a publication on node B reaches a subscriber on
// node A with the seq B's client got in its ack; catch-up on B serves
// what was published on A.
func TestCrossNodeDelivery(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := startNode(t, srv.Addr()), startNode(t, srv.Addr())
	x, y := wstest.Dial(t, a.url), wstest.Dial(t, b.url)
	x.Connect("alice")
	y.Connect("bob")
	const ch = "doc:cross"
	x.MustCall("sub", map[string]any{"ch": ch}, "subscribed")
	sub := y.MustCall("sub", map[string]any{"ch": ch}, "subscribed")
	epoch := sub.Str("epoch")

	for i := 1; i <= 3; i++ {
		ack := y.MustCall("pub", map[string]any{"ch": ch, "data": map[string]any{"n": i}}, "ack")
		m := x.Msgs(ch, 1, 5*time.Second)[0]
		if m.Num("seq") != ack.Num("seq") || m.Num("seq") != uint64(i) || m.Str("epoch") != epoch || m.Str("from") != "bob" {
			t.Fatalf("node A got %v for ack %v (epoch %q)", m, ack, epoch)
		}
	}
	// Published on A, caught up on B.
	for i := 4; i <= 6; i++ {
		x.MustCall("pub", map[string]any{"ch": ch, "data": i}, "ack")
	}
	z := wstest.Dial(t, b.url)
	z.Connect("carol")
	r := z.MustCall("sub", map[string]any{"ch": ch, "since": map[string]any{"seq": 3, "epoch": epoch}}, "subscribed")
	pubs, _ := r["pubs"].([]any)
	if r["recovered"] != true || len(pubs) != 3 || r.Num("seq") != 6 {
		t.Fatalf("catch-up on B: %v, want recovered with seqs 4..6", r)
	}
	for i, p := range pubs {
		m := wstest.Msg(p.(map[string]any))
		if m.Num("seq") != uint64(4+i) || m.Str("from") != "alice" {
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
	var subs []*wstest.Client
	for i, n := range nodes {
		c := wstest.Dial(t, n.url)
		c.Connect(fmt.Sprintf("reader%d", i))
		c.MustCall("sub", map[string]any{"ch": ch}, "subscribed")
		subs = append(subs, c)
	}
	var pubs []*wstest.Client
	for p := range publishers {
		c := wstest.Dial(t, nodes[p%2].url)
		c.Connect(fmt.Sprintf("writer%d", p))
		pubs = append(pubs, c)
	}
	acked := make(map[uint64]string)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for p, c := range pubs {
		wg.Go(func() {
			for i := range each {
				data := fmt.Sprintf("%d:%d", p, i)
				ack := c.Call("pub", map[string]any{"ch": ch, "data": data})
				if ack.Op() != "ack" {
					t.Errorf("pub: %v", ack)
					return
				}
				mu.Lock()
				if prev, dup := acked[ack.Num("seq")]; dup {
					t.Errorf("seq %d acked for %s and %s", ack.Num("seq"), prev, data)
				}
				acked[ack.Num("seq")] = data
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	const total = publishers * each
	var orders [][]string
	for i, c := range subs {
		ms := c.Msgs(ch, total, 10*time.Second)
		var order []string
		for k, m := range ms {
			if m.Num("seq") != uint64(k+1) {
				t.Fatalf("node %d: message %d has seq %d, want %d", i, k, m.Num("seq"), k+1)
			}
			data, _ := m["data"].(string)
			if acked[m.Num("seq")] != data {
				t.Fatalf("node %d: seq %d carries %q, its ack was for %q", i, m.Num("seq"), data, acked[m.Num("seq")])
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
	x := wstest.Dial(t, a.url)
	xid := x.Connect("alice").Str("client")
	x.MustCall("sub", map[string]any{"ch": ch}, "subscribed")

	y := wstest.Dial(t, b.url)
	yid := y.Connect("bob").Str("client")
	y.MustCall("sub", map[string]any{"ch": ch}, "subscribed")
	if j := x.PresenceEvent("join", ch, "client", yid, 5*time.Second); j.Str("user") != "bob" {
		t.Errorf("join on A: %v", j)
	}
	for name, c := range map[string]*wstest.Client{"A": x, "B": y} {
		got := c.Members(ch)
		if got[xid] != "alice" || got[yid] != "bob" || len(got) != 2 {
			t.Errorf("presence on node %s: %v, want alice (%s) and bob (%s)", name, got, xid, yid)
		}
	}
	y.MustCall("unsub", map[string]any{"ch": ch}, "unsubscribed")
	if l := x.PresenceEvent("leave", ch, "client", yid, 5*time.Second); l.Str("user") != "bob" {
		t.Errorf("leave on A: %v", l)
	}
	y.MustCall("sub", map[string]any{"ch": ch}, "subscribed")
	x.PresenceEvent("join", ch, "client", yid, 5*time.Second)
	y.Close() // disconnect: the node leaves for it
	x.PresenceEvent("leave", ch, "client", yid, 5*time.Second)
	if got := x.Members(ch); len(got) != 1 || got[xid] != "alice" {
		t.Errorf("presence after bob left: %v", got)
	}
}

// ttlClockSlack covers the milliseconds between the kill and the TIME
// call, and the TTL's rounding to ms.
const ttlClockSlack = 20 * time.Millisecond

// leaveSlack is what TestNodeCrash allows for a leave's way from Redis
// through the surviving node to its WebSocket client, under a loaded CI
// machine (measured unloaded: the leaves come 0.9-0.96 s after the kill).
const leaveSlack = 150 * time.Millisecond

// TestNodeCrash: a node in a child process is killed with SIGKILL (no
// leave, no refresh). Its clients' presence entries expire at most the
// TTL after the kill (read from Redis, on its clock), and the other node's
// subscribers get a leave for each within the TTL plus 250 ms
// (docs/brokers.md), plus leaveSlack for the event's way to the client.
func TestNodeCrash(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	survivor := startNode(t, srv.Addr())
	childURL, child := startChild(t, srv.Addr())
	const ch = "doc:crash"
	ttl := nodeConfig(srv.Addr()).Presence.TTL

	x := wstest.Dial(t, survivor.url)
	xid := x.Connect("alice").Str("client")
	x.MustCall("sub", map[string]any{"ch": ch}, "subscribed")
	var victims []string
	for i := range 3 {
		c := wstest.Dial(t, childURL)
		id := c.Connect(fmt.Sprintf("victim%d", i)).Str("client")
		c.MustCall("sub", map[string]any{"ch": ch}, "subscribed")
		x.PresenceEvent("join", ch, "client", id, 5*time.Second)
		victims = append(victims, id)
	}
	if got := x.Members(ch); len(got) != 4 {
		t.Fatalf("presence before the crash: %v, want alice and 3 victims", got)
	}
	// Let the child refresh its members at least once, so expiry is
	// measured from a refresh, then kill it.
	time.Sleep(400 * time.Millisecond)
	killed := time.Now()
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// What the crashed node last wrote: each member's expiry, against the
	// Redis clock after the kill.
	rc := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer rc.Close()
	now, err := rc.Time(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	exp, err := rc.ZRangeWithScores(t.Context(), redis.DefaultPrefix+"{"+ch+"}:x", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, z := range exp {
		if !slices.Contains(victims, z.Member.(string)) {
			continue
		}
		found++
		if left := time.Duration(z.Score-float64(now.UnixMilli())) * time.Millisecond; left > ttl+ttlClockSlack {
			t.Errorf("victim %v expires %v after the kill; want at most the presence TTL %v", z.Member, left, ttl)
		}
	}
	if found != len(victims) {
		t.Fatalf("%d of the %d victims in the expiry set %v", found, len(victims), exp)
	}
	var waits []time.Duration
	for _, id := range victims {
		x.PresenceEvent("leave", ch, "client", id, 5*time.Second)
		waits = append(waits, time.Since(killed))
	}
	sort.Slice(waits, func(i, j int) bool { return waits[i] < waits[j] })
	t.Logf("leaves of the crashed node's 3 clients arrived %v after the kill (presence TTL %v)", waits, ttl)
	if waits[2] > ttl+250*time.Millisecond+leaveSlack {
		t.Errorf("last leave %v after the kill; want within the TTL (%v) plus 250ms (plus %v for the event's delivery)", waits[2], ttl, leaveSlack)
	}
	if got := x.Members(ch); len(got) != 1 || got[xid] != "alice" {
		t.Errorf("presence after the crash: %v, want only alice", got)
	}
}
