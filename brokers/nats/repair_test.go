package nats_test

import (
	"context"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/natstest"
)

// TestPresenceStreamDeleted: the presence stream is deleted under a
// running node by another client of the server. Publish and Subscribe do
// not need it, but every Join would fail until a restart: the node must
// notice and re-create it by itself.
func TestPresenceStreamDeleted(t *testing.T) {
	leakCheckLast(t)
	srv := natstest.RunServer(t)
	n := startNodesLeak(t, srv.URL(), 1, false)[0]
	ctx := t.Context()
	m := brokers.Member{User: "u", Client: "c"}
	if err := n.b.Join(ctx, "doc.p", m, time.Minute); err != nil {
		t.Fatal(err)
	}
	js := natstest.JetStream(t, srv.URL())
	if err := js.DeleteStream(ctx, "SG_PRESENCE"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		jctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := n.b.Join(jctx, "doc.p", m, time.Minute)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Join after the presence stream was deleted: still failing after 15s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ms, err := n.b.Members(ctx, "doc.p")
	if err != nil || len(ms) != 1 || ms[0] != m {
		t.Fatalf("Members after the repair: %v, %v; want [%v]", ms, err, m)
	}
}
