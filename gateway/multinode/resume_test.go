package multinode_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestOutageResume: the broker goes away under two nodes whose clients
// publish on both; each node delivers its own publishes at once under a
// provisional epoch. Some subscribers stay, others close their connection
// during the outage and subscribe again after it with the provisional
// position they hold as `since`, one on the same node and one on the other
// node. Every subscriber, following the client rule of docs/protocol.md
// (a msg whose `was` it applied already is not applied again), must apply
// every acked publication exactly once, and the resubscribes must answer
// recovered: true.
func TestOutageResume(t *testing.T) {
	t.Run("jetstream", func(t *testing.T) {
		srv := natstest.RunServer(t)
		nb := func() brokers.Broker { return jetstream.New(jetstream.Config{URL: srv.URL()}) }
		outageResume(t, startNode(t, nb(), nil), startNode(t, nb(), nil), "doc.resume", srv.Shutdown, func() { srv.Restart(t) })
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{AOF: true})
		nb := func() brokers.Broker { return redis.New(redis.Config{Addrs: []string{srv.Addr()}}) }
		outageResume(t, startNode(t, nb(), nil), startNode(t, nb(), nil), "doc.resume", srv.Kill, srv.Restart)
	})
	t.Run("redis-cluster", func(t *testing.T) {
		c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, AOF: true})
		nb := func() brokers.Broker { return redis.New(redis.Config{Addrs: c.Addrs(), Cluster: true}) }
		n1, n2 := startNode(t, nb(), nil), startNode(t, nb(), nil)
		ch := ""
		for i := 0; ch == ""; i++ {
			if name := fmt.Sprintf("doc.resume%d", i); n1.broker.(*redis.Broker).ShardOf(name) == 0 {
				ch = name
			}
		}
		outageResume(t, n1, n2, ch, c.Masters[0].Kill, c.Masters[0].Restart)
	})
}

// applier is a client's view of one channel, kept the way docs/protocol.md
// tells a client to: real and provisional positions apart, and a real msg
// whose `was` names a provisional position applied already not applied
// again.
type applier struct {
	mu      sync.Mutex
	name    string
	epoch   string // where it resumes from (the latest of real and provisional)
	seq     uint64
	real    brokers.Position
	prov    map[string]uint64 // provisional epoch -> last seq applied
	applied map[string]int
	order   []string // data applied, in order
	skipped int      // msgs not applied again thanks to `was`
}

func newApplier(name string) *applier {
	return &applier{name: name, applied: map[string]int{}, prov: map[string]uint64{}}
}

func (a *applier) apply(m wstest.Msg) {
	a.mu.Lock()
	defer a.mu.Unlock()
	seq, epoch := m.Num("seq"), m.Str("epoch")
	if brokers.IsProvisional(epoch) {
		if last, ok := a.prov[epoch]; ok && seq <= last {
			return // a redelivery
		}
		a.prov[epoch] = seq
	} else {
		if epoch == a.real.Epoch && seq <= a.real.Seq {
			return // a redelivery
		}
		a.real = brokers.Position{Seq: seq, Epoch: epoch}
		if w, ok := m["was"].(map[string]any); ok {
			we, _ := w["epoch"].(string)
			ws, _ := w["seq"].(float64)
			if last, ok := a.prov[we]; ok && uint64(ws) <= last {
				a.epoch, a.seq = epoch, seq
				a.skipped++
				return
			}
		}
	}
	a.epoch, a.seq = epoch, seq
	a.applied[m.Str("data")]++
	a.order = append(a.order, m.Str("data"))
}

// follow applies c's msgs on ch until stop is closed.
func (a *applier) follow(c *wstest.Client, ch string, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if m := c.TryNext(20*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" && m.Str("ch") == ch }); m != nil {
			a.apply(m)
		}
	}
}

func outageResume(t *testing.T, n1, n2 *node, ch string, down, up func()) {
	sub := func(n *node, name string) *wstest.Client {
		c := dial(t, n, name)
		c.Connect(name)
		c.Sub(ch)
		return c
	}
	stay1, stay2 := newApplier("stay1"), newApplier("stay2")
	back1, back2 := newApplier("back1"), newApplier("back2") // resubscribe on node 1, on node 2
	s1, s2 := sub(n1, "stay1"), sub(n2, "stay2")
	r1, r2 := sub(n1, "back1"), sub(n1, "back2")
	p1, p2 := dial(t, n1, "p1"), dial(t, n2, "p2")
	p1.Connect("p1")
	p2.Connect("p2")

	stopAll, stopBack := make(chan struct{}), make(chan struct{})
	var followers, backFollowers sync.WaitGroup
	followers.Go(func() { stay1.follow(s1, ch, stopAll) })
	followers.Go(func() { stay2.follow(s2, ch, stopAll) })
	backFollowers.Go(func() { back1.follow(r1, ch, stopBack) })
	backFollowers.Go(func() { back2.follow(r2, ch, stopBack) })

	// Publishers on both nodes, until stopPub; each stops at its first
	// failed call. Node 1's publisher has no publish in flight when the
	// broker goes down (held1): with redis, one whose outcome is unknown
	// keeps the channel's later publishes from node 1's subscribers until
	// the broker is back (so that they do not overtake it; docs/brokers.md),
	// and back1 and back2 need provisional positions here.
	var acked [2][]string
	var pubs sync.WaitGroup
	var held1 sync.Mutex
	stopPub := make(chan struct{})
	for i, p := range []*wstest.Client{p1, p2} {
		pubs.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-stopPub:
					return
				default:
				}
				data := fmt.Sprintf("%d:%d", i, k)
				if i == 0 {
					held1.Lock()
				}
				r := p.Call("pub", map[string]any{"ch": ch, "data": data})
				if i == 0 {
					held1.Unlock()
				}
				if r == nil {
					return
				}
				if r.Op() == "ack" {
					acked[i] = append(acked[i], data)
				}
				time.Sleep(4 * time.Millisecond)
			}
		})
	}
	time.Sleep(150 * time.Millisecond)
	held1.Lock()
	down()
	time.Sleep(300 * time.Millisecond)
	held1.Unlock()
	// Two subscribers of node 1 drop during the outage, once they hold a
	// provisional position (node 1 has noticed the outage and delivered
	// one of its publishes).
	provisional := func(a *applier) bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return brokers.IsProvisional(a.epoch)
	}
	for deadline := time.Now().Add(15 * time.Second); !provisional(back1) || !provisional(back2); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			close(stopPub)
			pubs.Wait()
			t.Fatalf("no provisional position within 15 s of the outage: back1 %d/%q, back2 %d/%q", back1.seq, back1.epoch, back2.seq, back2.epoch)
		}
	}
	time.Sleep(100 * time.Millisecond)
	close(stopBack)
	backFollowers.Wait()
	r1.Close()
	r2.Close()
	time.Sleep(200 * time.Millisecond)
	up()
	time.Sleep(300 * time.Millisecond)
	close(stopPub)
	pubs.Wait()

	resume := func(n *node, a *applier) *wstest.Client {
		c := dial(t, n, a.name+"-again")
		c.Connect(a.name)
		// Like a client, retry while the node is still catching up with
		// its broker (`unavailable`).
		var r wstest.Msg
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			r = c.Call("sub", map[string]any{"ch": ch, "since": map[string]any{"seq": a.seq, "epoch": a.epoch}})
			if r == nil || r.Op() != "error" || r.Str("code") != "unavailable" || time.Now().After(deadline) {
				break
			}
		}
		if r == nil || r.Op() != "subscribed" {
			t.Fatalf("%s: resubscribe answered %v", a.name, r)
		}
		if r["recovered"] != true {
			t.Fatalf("%s: resubscribe with provisional since %d/%q: recovered %v", a.name, a.seq, a.epoch, r["recovered"])
		}
		ps, _ := r["pubs"].([]any)
		for _, p := range ps {
			pm, _ := p.(map[string]any)
			a.apply(wstest.Msg(pm))
		}
		a.mu.Lock()
		if a.real.Epoch != r.Str("epoch") || a.real.Seq != r.Num("seq") {
			t.Errorf("%s: after the recovered pubs the client is at %v, subscribed says %d/%q", a.name, a.real, r.Num("seq"), r.Str("epoch"))
		}
		a.epoch, a.seq = r.Str("epoch"), r.Num("seq")
		a.mu.Unlock()
		return c
	}
	c1, c2 := resume(n1, back1), resume(n2, back2)
	stopLate := make(chan struct{})
	followers.Go(func() { back1.follow(c1, ch, stopLate) })
	followers.Go(func() { back2.follow(c2, ch, stopLate) })

	total := len(acked[0]) + len(acked[1])
	all := []*applier{stay1, stay2, back1, back2}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		done := true
		for _, a := range all {
			if n := countAcked(a, acked); n < total {
				done = false
			}
		}
		if done {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // would-be duplicates arrive
	close(stopAll)
	close(stopLate)
	followers.Wait()

	for _, a := range all {
		for i := range acked {
			for _, d := range acked[i] {
				if a.applied[d] != 1 {
					t.Errorf("%s: acked %q applied %d times", a.name, d, a.applied[d])
				}
			}
		}
		if len(a.applied) != total {
			t.Errorf("%s: applied %d distinct messages, %d were acked", a.name, len(a.applied), total)
		}
	}
	t.Logf("%d publishes acked; every subscriber applied each once; not applied twice thanks to `was`: stay1 %d, stay2 %d, back1 %d, back2 %d",
		total, stay1.skipped, stay2.skipped, back1.skipped, back2.skipped)
}

// countAcked counts the acked messages a has applied.
func countAcked(a *applier, acked [2][]string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for i := range acked {
		for _, d := range acked[i] {
			if a.applied[d] > 0 {
				n++
			}
		}
	}
	return n
}
