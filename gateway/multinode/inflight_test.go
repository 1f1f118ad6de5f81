package multinode_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestInFlightOrderNodes: two gateways on one JetStream server; node A
// reaches it through a proxy that, for a while, forwards A's writes but
// holds the server's answers back, so the publish in flight is stored but
// its outcome unknown when its broker call times out (and A's outage
// starts with it). A client on A publishes one message at a time, as the
// fault campaign's publishers do. Every subscriber, on A and on B,
// applying the client rule of docs/protocol.md, must apply every acked
// message once, in publish order. Before, A's subscribers applied the
// in-flight message after the ones published after it (their provisional
// copies): the campaign's reorders at the publishing node.
func TestInFlightOrderNodes(t *testing.T) {
	srv := natstest.RunServer(t)
	proxy := redistest.StartProxy(t, srv.Server().Addr().String())
	// A publish's broker call times out after 1 s (default 5 s).
	short := func(c *gateway.Config) { c.Server.BrokerTimeout = time.Second }
	na := startNodeGateway(t, jetstream.New(jetstream.Config{URL: "nats://" + proxy.Addr()}), nil, nil, short)
	nb := startNodeGateway(t, jetstream.New(jetstream.Config{URL: srv.URL()}), nil, nil, short)
	const ch = "doc.inflight"
	stop := make(chan struct{})
	var followers sync.WaitGroup
	var all []*applier
	for _, s := range []struct {
		name string
		n    *node
	}{{"a1", na}, {"a2", na}, {"b1", nb}} {
		c := dial(t, s.n, s.name)
		c.Connect(s.name)
		c.Sub(ch)
		a := newApplier(s.name)
		all = append(all, a)
		followers.Go(func() { a.follow(c, ch, stop) })
	}
	p := dial(t, na, "p")
	p.Connect("p")
	var acked []string
	stopPub := make(chan struct{})
	var pub sync.WaitGroup
	pub.Go(func() {
		for k := 0; ; k++ {
			select {
			case <-stopPub:
				return
			default:
			}
			data := fmt.Sprint(k)
			if r := p.Call("pub", map[string]any{"ch": ch, "data": data}); r != nil && r.Op() == "ack" {
				acked = append(acked, data)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	time.Sleep(300 * time.Millisecond)
	proxy.HoldReplies()
	time.Sleep(2500 * time.Millisecond)
	proxy.Heal()
	time.Sleep(500 * time.Millisecond)
	close(stopPub)
	pub.Wait()

	done := func() bool {
		for _, a := range all {
			a.mu.Lock()
			n := len(a.order)
			a.mu.Unlock()
			if n < len(acked) {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(20 * time.Second); !done() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // would-be duplicates arrive
	close(stop)
	followers.Wait()
	provisional := 0
	for _, a := range all {
		if !slices.Equal(a.order, acked) {
			t.Errorf("%s applied %v, want the acked messages in publish order %v", a.name, a.order, acked)
		}
		provisional += a.skipped
	}
	if provisional == 0 {
		t.Errorf("no message was applied provisionally and then skipped by its was: the outage did not happen")
	}
	t.Logf("%d acked; every subscriber applied them once in order; skipped by was on A: %d", len(acked), provisional)
}
