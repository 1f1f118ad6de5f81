package multinode_test

import (
	"testing"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestSnapshotAcrossNodes: a snapshot stored through node A, on a
// channel whose history window (10) has rolled past the start, is served
// by node B to a late joiner as the snapshot and then exactly the
// messages after it, then live messages published on A.
func TestSnapshotAcrossNodes(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{})
		snapshotAcrossNodes(t, func() brokers.Broker {
			return redis.New(redis.Config{Addrs: []string{srv.Addr()}, HistorySize: 10})
		})
	})
	t.Run("jetstream", func(t *testing.T) {
		srv := natstest.RunServer(t)
		snapshotAcrossNodes(t, func() brokers.Broker {
			return jetstream.New(jetstream.Config{URL: srv.URL(), HistorySize: 10})
		})
	})
}

func snapshotAcrossNodes(t *testing.T, nb func() brokers.Broker) {
	a, b := startNode(t, nb(), nil), startNode(t, nb(), nil)
	const ch = "doc.snap"
	w := wstest.Dial(t, "ws://"+a.addr+"/ws")
	epoch := w.Sub(ch).Str("epoch")
	for i := 1; i <= 30; i++ {
		w.Pub(ch, i)
	}
	r := w.MustCall("snap", map[string]any{"ch": ch, "at": map[string]any{"seq": 25, "epoch": epoch}, "data": "state@25"}, "snapped")
	if r["stored"] != true {
		t.Fatalf("snap = %v", r)
	}
	// A late, lower one from another writer does not replace it.
	if r := w.MustCall("snap", map[string]any{"ch": ch, "at": map[string]any{"seq": 24, "epoch": epoch}, "data": "old"}, "snapped"); r["stored"] != false || r.Num("seq") != 25 {
		t.Fatalf("older snap = %v, want stored false, kept 25", r)
	}
	for i := 31; i <= 33; i++ {
		w.Pub(ch, i)
	}
	c := wstest.Dial(t, "ws://"+b.addr+"/ws")
	c.Send(map[string]any{"op": "sub", "id": 1, "ch": ch, "snapshot": true})
	all := func(wstest.Msg) bool { return true }
	snap := c.Next(all)
	if snap.Op() != "snapshot" || snap.Num("seq") != 25 || snap.Str("data") != "state@25" || snap.Str("epoch") != epoch {
		t.Fatalf("first frame on node B = %v, want the snapshot at 25", snap)
	}
	sub := c.Next(all)
	pubs, _ := sub["pubs"].([]any)
	if sub.Op() != "subscribed" || sub["recovered"] != true || len(pubs) != 8 {
		t.Fatalf("then = %v, want recovered with 26..33", sub)
	}
	for i, p := range pubs {
		if m := wstest.Msg(p.(map[string]any)); m.Num("seq") != uint64(26+i) {
			t.Fatalf("pubs[%d] = %v, want seq %d", i, m, 26+i)
		}
	}
	w.Pub(ch, 34)
	if m := c.NextOp("msg"); m.Num("seq") != 34 {
		t.Fatalf("live on node B = %v", m)
	}
}
