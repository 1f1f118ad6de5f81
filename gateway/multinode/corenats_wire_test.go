package multinode_test

import (
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/nats"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestCoreNATSWireNoSeqNoEpoch checks on the wire what docs/brokers.md's
// core NATS table says of seq and epoch: two gateways on core NATS, real
// WebSocket clients on each; every `subscribed` has seq 0 and no epoch,
// every `ack` seq 0 and no epoch, and every `msg` (delivered on the
// publisher's node and across to the other) has no seq, no epoch and no
// was.
func TestCoreNATSWireNoSeqNoEpoch(t *testing.T) {
	srv := natstest.RunServer(t)
	newBroker := func() *nats.Broker { return nats.New(nats.Config{URL: srv.URL()}) }
	n1, n2 := startNode(t, newBroker(), edit("nats")), startNode(t, newBroker(), edit("nats"))
	a, b := dial(t, n1, "a"), dial(t, n2, "b")
	a.Connect("ua")
	b.Connect("ub")
	const ch = "doc.wire"
	for _, c := range []*wstest.Client{a, b} {
		s := c.Sub(ch)
		if s == nil {
			t.FailNow()
		}
		if !hasZero(s, "seq") || has(s, "epoch") {
			t.Fatalf("%s: subscribed %v: want seq 0 and no epoch", c.Name(), s)
		}
	}
	// b's subscription must have reached node 1 before a publishes there.
	a.PresenceEvent("join", ch, "user", "ub", wait)
	for i, pub := range []*wstest.Client{a, b, a} {
		ack := pub.Pub(ch, map[string]any{"n": i})
		if ack == nil {
			t.FailNow()
		}
		if !hasZero(ack, "seq") || has(ack, "epoch") {
			t.Fatalf("%s: ack %v: want seq 0 and no epoch", pub.Name(), ack)
		}
		for _, c := range []*wstest.Client{a, b} {
			m := c.Msgs(ch, 1, wait)
			if len(m) != 1 {
				t.FailNow()
			}
			if m[0].Str("from") != "u"+pub.Name() || has(m[0], "seq") || has(m[0], "epoch") || has(m[0], "was") {
				t.Fatalf("%s got %v for %s's publish %d: want no seq, no epoch, no was", c.Name(), m[0], pub.Name(), i)
			}
		}
	}
	for _, c := range []*wstest.Client{a, b} {
		if extra := c.Drain(100*time.Millisecond, func(o wstest.Msg) bool { return o.Op() == "msg" }); len(extra) > 0 {
			t.Fatalf("%s got %d more msgs: %v", c.Name(), len(extra), extra[0])
		}
	}
}

// has reports whether m has the field k at all.
func has(m wstest.Msg, k string) bool { _, ok := m[k]; return ok }

// hasZero reports whether m has the number field k, equal to 0.
func hasZero(m wstest.Msg, k string) bool { f, ok := m[k].(float64); return ok && f == 0 }
