package multinode_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/brokers/nats"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/wstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestJetStreamOneServer: two gateways on one NATS server.
func TestJetStreamOneServer(t *testing.T) {
	srv := natstest.RunServer(t)
	newBroker := func() *jetstream.Broker { return jetstream.New(jetstream.Config{URL: srv.URL()}) }
	n1, n2 := startNode(t, newBroker(), nil), startNode(t, newBroker(), nil)
	crossNode(t, n1, n2, true)
	nodeCrash(t, n1, n2, startNode(t, newBroker(), nil))
}

// TestJetStreamCluster: two gateways on different servers of a 3-server
// cluster, streams replicated on all three.
func TestJetStreamCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	cl := natstest.RunCluster(t, 3)
	newBroker := func(i int) *jetstream.Broker {
		return jetstream.New(jetstream.Config{URL: cl.Servers[i].URL(), Replicas: 3})
	}
	n1, n2 := startNode(t, newBroker(0), nil), startNode(t, newBroker(1), nil)
	crossNode(t, n1, n2, true)
	nodeCrash(t, n1, n2, startNode(t, newBroker(2), nil))
}

// TestCoreNATS: two gateways on core NATS: delivery and presence cross
// nodes; there is no seq, no epoch, no recovery.
func TestCoreNATS(t *testing.T) {
	srv := natstest.RunServer(t)
	newBroker := func() *nats.Broker { return nats.New(nats.Config{URL: srv.URL()}) }
	n1, n2 := startNode(t, newBroker(), edit("nats")), startNode(t, newBroker(), edit("nats"))
	crossNode(t, n1, n2, false)
	nodeCrash(t, n1, n2, startNode(t, newBroker(), edit("nats")))
}

func edit(broker string) func(*config.Config) {
	return func(c *config.Config) { c.Broker.Type = broker }
}

// crossNode: clients on two nodes share a channel: delivery both ways,
// join events across nodes, concurrent publishers on both nodes (with
// history: one gap-free seq sequence that every subscriber sees in order),
// catch-up on the other node, and presence lists.
func crossNode(t *testing.T, n1, n2 *node, history bool) {
	crossNodeEpochs(t, n1, n2, history, true)
}

// crossNodeEpochs is crossNode for a backend whose nodes may hand out
// different epochs for a channel nothing was ever stored on (Redis: an
// empty channel costs the server nothing, so there is nothing to agree
// on; the first publication's epoch is the channel's, and a client that
// resumes from the other one gets recovered:false).
func crossNodeEpochs(t *testing.T, n1, n2 *node, history, sameEmptyEpoch bool) {
	a, b := dial(t, n1, "a"), dial(t, n2, "b")
	a.Connect("ua")
	b.Connect("ub")
	const ch = "doc.x"
	sa := a.Sub(ch)
	sb := b.Sub(ch)
	if history {
		if sa.Str("epoch") == "" || sb.Str("epoch") == "" || (sameEmptyEpoch && sa.Str("epoch") != sb.Str("epoch")) || sa.Num("seq") != 0 || sb.Num("seq") != 0 {
			t.Fatalf("subscribed on node 1 %v, on node 2 %v: want seq 0 and one non-empty epoch", sa, sb)
		}
	} else if _, ok := sa["epoch"]; ok {
		t.Fatalf("core NATS subscribed %v: want no epoch", sa)
	}
	a.PresenceEvent("join", ch, "user", "ub", wait)

	ack := b.Pub(ch, map[string]any{"n": 1})
	for _, c := range []*wstest.Client{a, b} {
		m := c.Msgs(ch, 1, wait)
		if len(m) != 1 {
			t.FailNow()
		}
		if m[0].Str("from") != "ub" || (history && (m[0].Num("seq") != 1 || m[0].Str("epoch") != ack.Str("epoch") || (sameEmptyEpoch && m[0].Str("epoch") != sa.Str("epoch")))) {
			t.Fatalf("%s got %v after ack %v", c.Name(), m[0], ack)
		}
	}

	// Concurrent publishers, three per node.
	const conc, each = "doc.conc", 40
	s1, s2 := dial(t, n1, "s1"), dial(t, n2, "s2")
	s1.Connect("s1")
	s2.Connect("s2")
	sub1 := s1.Sub(conc)
	s2.Sub(conc)
	var pubs []*wstest.Client
	for i := range 6 {
		c := dial(t, []*node{n1, n2}[i%2], fmt.Sprintf("p%d", i))
		c.Connect(fmt.Sprintf("p%d", i))
		pubs = append(pubs, c)
	}
	acks := make([][]uint64, len(pubs))
	var wg sync.WaitGroup
	for i, c := range pubs {
		wg.Go(func() {
			for k := range each {
				if r := c.Pub(conc, fmt.Sprintf("%d:%d", i, k)); r != nil {
					acks[i] = append(acks[i], r.Num("seq"))
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	total := len(pubs) * each
	var got [2][]wstest.Msg
	concEpoch := sub1.Str("epoch")
	for i, s := range []*wstest.Client{s1, s2} {
		got[i] = s.Msgs(conc, total, wait)
		if len(got[i]) != total {
			t.Fatalf("%s got %d msgs, want %d", s.Name(), len(got[i]), total)
		}
		if !sameEmptyEpoch && i == 0 {
			concEpoch = got[0][0].Str("epoch") // the first publication's
		}
		next := make([]int, len(pubs))
		for k, m := range got[i] {
			var p, n int
			if _, err := fmt.Sscanf(m.Str("data"), "%d:%d", &p, &n); err != nil || n != next[p] {
				t.Fatalf("%s: msg %d is %v, want publisher %d's message %d", s.Name(), k, m, p, next[p])
			}
			next[p]++
			if history && (m.Num("seq") != uint64(k+1) || m.Str("epoch") != concEpoch) {
				t.Fatalf("%s: msg %d has seq %d epoch %q, want seq %d epoch %q", s.Name(), k, m.Num("seq"), m.Str("epoch"), k+1, concEpoch)
			}
		}
		if extra := s.Drain(100*time.Millisecond, func(o wstest.Msg) bool { return o.Op() == "msg" }); len(extra) > 0 {
			t.Fatalf("%s got %d more msgs: %v", s.Name(), len(extra), extra[0])
		}
	}
	if history {
		var all []uint64
		for _, s := range acks {
			all = append(all, s...)
		}
		slices.Sort(all)
		for i, s := range all {
			if s != uint64(i+1) {
				t.Fatalf("acked seqs %v...: want 1..%d, each once", all[:min(len(all), i+3)], total)
			}
		}
		for i := range got[0] {
			if got[0][i].Str("data") != got[1][i].Str("data") {
				t.Fatalf("msg %d: node 1 got %q, node 2 %q", i, got[0][i].Str("data"), got[1][i].Str("data"))
			}
		}
		// Catch-up on the other node.
		c := dial(t, n2, "late")
		c.Connect("late")
		r := c.SubSince(conc, uint64(total-15), concEpoch)
		ps, _ := r["pubs"].([]any)
		if r["recovered"] != true || len(ps) != 15 {
			t.Fatalf("catch-up from seq %d: recovered %v with %d pubs, want true with 15", total-15, r["recovered"], len(ps))
		}
		for i, p := range ps {
			m := wstest.Msg(p.(map[string]any))
			if m.Num("seq") != uint64(total-15+i+1) || m.Str("data") != got[0][total-15+i].Str("data") {
				t.Fatalf("catch-up pub %d: %v, want seq %d data %q", i, m, total-15+i+1, got[0][total-15+i].Str("data"))
			}
		}
	} else {
		c := dial(t, n2, "late")
		c.Connect("late")
		if r := c.SubSince(conc, 3, "whatever"); r["recovered"] != false {
			t.Fatalf("core NATS sub with since: %v, want recovered false", r)
		}
	}

	// Presence, listed from either node.
	for _, c := range []*wstest.Client{a, b} {
		r := c.MustCall("presence", map[string]any{"ch": ch}, "presence")
		us, _ := r["users"].([]any)
		var users []string
		for _, u := range us {
			users = append(users, wstest.Msg(u.(map[string]any)).Str("user"))
		}
		slices.Sort(users)
		if !slices.Equal(users, []string{"ua", "ub"}) {
			t.Fatalf("%s: presence %v, want ua and ub", c.Name(), r)
		}
	}
}

// nodeCrash: a client of a third node that dies without a word (its broker
// connection gone first, so it cannot say leave) leaves, for the other
// nodes' clients, within the presence TTL, once.
func nodeCrash(t *testing.T, n1, n2, n3 *node) {
	const ch = "doc.crash"
	a, b, z := dial(t, n1, "a2"), dial(t, n2, "b2"), dial(t, n3, "z")
	a.Connect("ua2")
	b.Connect("ub2")
	z.Connect("uz")
	a.Sub(ch)
	b.Sub(ch)
	z.Sub(ch)
	a.PresenceEvent("join", ch, "user", "uz", wait)
	b.PresenceEvent("join", ch, "user", "uz", wait)

	ttl := 2 * time.Second
	time.Sleep(ttl / 2) // some refreshes happen
	crashed := time.Now()
	if err := n3.broker.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wstest.Client{a, b} {
		if c.PresenceEvent("leave", ch, "user", "uz", ttl+5*time.Second) == nil {
			t.FailNow()
		}
	}
	after := time.Since(crashed)
	// The entry expires ttl after its last refresh (at most ttl/3 before
	// the crash); the server's expiry pass adds up to a second.
	if after > ttl+1500*time.Millisecond {
		t.Errorf("leave of a crashed node's client after %v, presence TTL %v", after, ttl)
	}
	t.Logf("leave of the crashed node's client arrived %v after the crash (presence TTL %v)", after.Round(10*time.Millisecond), ttl)
	n3.shutdown(t)
	for _, c := range []*wstest.Client{a, b} {
		if more := c.Drain(1500*time.Millisecond, func(o wstest.Msg) bool { return o.Op() == "leave" && o.Str("user") == "uz" }); len(more) > 0 {
			t.Errorf("%s got a second leave of uz: %v", c.Name(), more)
		}
	}
}
