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
		outageResume(t, startNode(t, nb(), nil), startNode(t, nb(), nil), srv.Shutdown, func() { srv.Restart(t) })
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{AOF: true})
		nb := func() brokers.Broker { return redis.New(redis.Config{Addrs: []string{srv.Addr()}}) }
		outageResume(t, startNode(t, nb(), nil), startNode(t, nb(), nil), srv.Kill, srv.Restart)
	})
}

// applier is a client's view of one channel, kept the way docs/protocol.md
// tells a client to.
type applier struct {
	mu      sync.Mutex
	name    string
	epoch   string
	seq     uint64
	prov    brokers.Position // the last provisional position applied
	applied map[string]int
	skipped int // msgs not applied again thanks to `was`
}

func newApplier(name string) *applier { return &applier{name: name, applied: map[string]int{}} }

func (a *applier) apply(m wstest.Msg) {
	a.mu.Lock()
	defer a.mu.Unlock()
	seq, epoch := m.Num("seq"), m.Str("epoch")
	if w, ok := m["was"].(map[string]any); ok {
		we, _ := w["epoch"].(string)
		ws, _ := w["seq"].(float64)
		if we == a.prov.Epoch && uint64(ws) <= a.prov.Seq {
			a.epoch, a.seq = epoch, seq
			a.skipped++
			return
		}
	}
	if epoch == a.epoch && seq <= a.seq {
		return // a redelivery
	}
	a.epoch, a.seq = epoch, seq
	if brokers.IsProvisional(epoch) {
		a.prov = brokers.Position{Seq: seq, Epoch: epoch}
	}
	a.applied[m.Str("data")]++
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

func outageResume(t *testing.T, n1, n2 *node, down, up func()) {
	const ch = "doc.resume"
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

	const each = 150
	var acked [2][]string
	var pubs sync.WaitGroup
	for i, p := range []*wstest.Client{p1, p2} {
		pubs.Go(func() {
			for k := range each {
				data := fmt.Sprintf("%d:%d", i, k)
				if r := p.Call("pub", map[string]any{"ch": ch, "data": data}); r != nil && r.Op() == "ack" {
					acked[i] = append(acked[i], data)
				}
				time.Sleep(4 * time.Millisecond)
			}
		})
	}
	time.Sleep(150 * time.Millisecond)
	down()
	time.Sleep(250 * time.Millisecond)
	// Two subscribers of node 1 drop during the outage, holding
	// provisional positions.
	close(stopBack)
	backFollowers.Wait()
	r1.Close()
	r2.Close()
	for _, a := range []*applier{back1, back2} {
		if !brokers.IsProvisional(a.epoch) {
			t.Fatalf("%s: last position %d/%q is not provisional: the outage was not seen", a.name, a.seq, a.epoch)
		}
	}
	time.Sleep(200 * time.Millisecond)
	up()
	pubs.Wait()
	time.Sleep(300 * time.Millisecond) // the outbox replays

	resume := func(n *node, a *applier) *wstest.Client {
		c := dial(t, n, a.name+"-again")
		c.Connect(a.name)
		r := c.Call("sub", map[string]any{"ch": ch, "since": map[string]any{"seq": a.seq, "epoch": a.epoch}})
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
		if a.epoch != r.Str("epoch") || a.seq != r.Num("seq") {
			t.Errorf("%s: after the recovered pubs the client is at %d/%q, subscribed says %d/%q", a.name, a.seq, a.epoch, r.Num("seq"), r.Str("epoch"))
		}
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
	t.Logf("%d of %d publishes acked; every subscriber applied each once; not applied twice thanks to `was`: stay1 %d, stay2 %d, back1 %d, back2 %d",
		total, 2*each, stay1.skipped, stay2.skipped, back1.skipped, back2.skipped)
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
