package jetstream_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
)

// deleteStreams deletes the node's streams from a second connection, as
// anyone with access to the JetStream API can.
func deleteStreams(t *testing.T, url string) {
	t.Helper()
	natstest.DeleteStreams(t, url, "SG_HISTORY", "SG_PRESENCE")
}

// waitOK polls f until it succeeds or the deadline passes.
func waitOK(t *testing.T, what string, timeout time.Duration, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err = f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
		}
		time.Sleep(wait)
	}
}

// TestStreamsDeletedUnderNode: the streams are deleted under a running node
// by another client of the server. The node must report itself unready
// (Ping, which /readyz and syncgate_broker_up use) instead of acking into
// its outbox while claiming health, and must re-create the streams by
// itself (no reconnect happens): then Subscribe, Publish and Since work
// again, publishes get real positions, and a channel subscribed before the
// deletion is delivered again.
func TestStreamsDeletedUnderNode(t *testing.T) {
	leakCheckLast(t)
	srv := natstest.RunServer(t)
	n := startNode(t, jetstream.Config{URL: srv.URL(), CheckEvery: time.Hour})
	ctx := t.Context()
	const old = "doc.before"
	if err := n.b.Subscribe(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := n.b.Publish(ctx, old, []byte("m1")); err != nil {
		t.Fatal(err)
	}
	n.rec.WaitPublications(t, old, 1, 10*time.Second)
	if err := n.b.Ping(ctx); err != nil {
		t.Fatalf("Ping before the deletion: %v", err)
	}

	deleteStreams(t, srv.URL())
	// Readiness tells the truth at once: the periodic check is an hour
	// away, so only Ping itself can have noticed.
	if err := n.b.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded with the node's streams deleted")
	}

	// The node repairs itself: a new channel can be subscribed, a publish
	// is stored (a real epoch, not a provisional one) and read back.
	waitOK(t, "Subscribe after the deletion", 15*time.Second, func(ctx context.Context) error {
		return n.b.Subscribe(ctx, "doc.after")
	})
	var pos brokers.Position
	waitOK(t, "a stored Publish after the deletion", 15*time.Second, func(ctx context.Context) error {
		var err error
		pos, err = n.b.Publish(ctx, "doc.after", []byte("a1"))
		if err == nil && brokers.IsProvisional(pos.Epoch) {
			return errProvisional
		}
		return err
	})
	pubs, latest, err := n.b.Since(ctx, "doc.after", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if latest != pos || len(pubs) == 0 || pubs[len(pubs)-1].Seq != pos.Seq {
		t.Fatalf("Since after the repair: %d publications, latest %+v; want up to %+v", len(pubs), latest, pos)
	}
	waitOK(t, "Ping after the repair", 15*time.Second, n.b.Ping)

	// The channel subscribed before the deletion gets what is published on
	// it in the new stream (a new epoch).
	if _, err := n.b.Publish(ctx, old, []byte("m2")); err != nil {
		t.Fatal(err)
	}
	got := n.rec.WaitPublications(t, old, 2, 10*time.Second)
	if string(got[1].Data) != "m2" || got[1].Epoch == got[0].Epoch {
		t.Fatalf("after the repair: %q in epoch %q (before: %q); want m2 in a new epoch", got[1].Data, got[1].Epoch, got[0].Epoch)
	}
}

// TestStreamsDeletedRepairedByCheck: with nobody asking the node anything,
// its periodic check finds the deleted streams and re-creates them.
func TestStreamsDeletedRepairedByCheck(t *testing.T) {
	leakCheckLast(t)
	srv := natstest.RunServer(t)
	n := startNode(t, jetstream.Config{URL: srv.URL(), CheckEvery: 100 * time.Millisecond})
	deleteStreams(t, srv.URL())
	js := natstest.JetStream(t, srv.URL())
	waitOK(t, "the streams back", 15*time.Second, func(ctx context.Context) error {
		for _, name := range []string{"SG_HISTORY", "SG_PRESENCE"} {
			if _, err := js.Stream(ctx, name); err != nil {
				return err
			}
		}
		return nil
	})
	waitOK(t, "Ping after the repair", 15*time.Second, n.b.Ping)
}

type provisionalErr struct{}

func (provisionalErr) Error() string { return "acked provisionally (into the outbox)" }

var errProvisional error = provisionalErr{}

// TestSubscribeStoresNothing: subscribing to channels nobody publishes on,
// and reading their position as the gateway does, must not store anything
// in the stream (before, each stored an epoch marker that stayed for the
// history TTL: one subject per channel, from anonymous subscribers). The
// epoch handed out stays the same while the node is subscribed, and the
// node's first publication keeps it; a client resuming from it on the same
// node is recovered.
func TestSubscribeStoresNothing(t *testing.T) {
	srv := natstest.RunServer(t)
	n := startNode(t, jetstream.Config{URL: srv.URL()})
	ctx := t.Context()
	const count = 200
	epochs := make([]string, count)
	for i := range count {
		ch := "empty." + strconv.Itoa(i)
		if err := n.b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		_, pos, err := n.b.Since(ctx, ch, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if pos.Seq != 0 || pos.Epoch == "" {
			t.Fatalf("empty channel %s: position %+v, want seq 0 and an epoch", ch, pos)
		}
		epochs[i] = pos.Epoch
	}
	js := natstest.JetStream(t, srv.URL())
	s, err := js.Stream(ctx, "SG_HISTORY")
	if err != nil {
		t.Fatal(err)
	}
	if st := s.CachedInfo().State; st.Msgs != 0 || st.NumSubjects != 0 {
		t.Fatalf("after %d subscribes to empty channels the history stream holds %d messages on %d subjects, want none", count, st.Msgs, st.NumSubjects)
	}

	// The epoch holds while subscribed, and the first publication keeps it.
	const ch = "empty.0"
	_, again, err := n.b.Since(ctx, ch, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if again.Epoch != epochs[0] {
		t.Fatalf("second Since: epoch %q, want %q", again.Epoch, epochs[0])
	}
	pos, err := n.b.Publish(ctx, ch, []byte("first"))
	if err != nil {
		t.Fatal(err)
	}
	if pos.Seq != 1 || pos.Epoch != epochs[0] {
		t.Fatalf("first Publish: %+v, want seq 1 in epoch %q", pos, epochs[0])
	}
	pubs, latest, err := n.b.Since(ctx, ch, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if latest != pos || len(pubs) != 1 || string(pubs[0].Data) != "first" {
		t.Fatalf("Since after the first Publish: %d publications, latest %+v", len(pubs), latest)
	}
}

// TestEmptyEpochAcrossNodes: nodes agree on an empty channel's epoch
// without storing it: a node asks those serving the channel, and a first
// publication from any node keeps it. Once something was stored the epoch
// is not handed out again for the channel's next empty period.
func TestEmptyEpochAcrossNodes(t *testing.T) {
	srv := natstest.RunServer(t)
	a := startNode(t, jetstream.Config{URL: srv.URL()})
	b := startNode(t, jetstream.Config{URL: srv.URL()})
	ctx := t.Context()
	const ch = "shared.empty"
	if err := a.b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	_, pa, err := a.b.Since(ctx, ch, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// b does not serve the channel yet, then does.
	_, pb, err := b.b.Since(ctx, ch, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	_, pb2, err := b.b.Since(ctx, ch, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if pa.Epoch == "" || pb.Epoch != pa.Epoch || pb2.Epoch != pa.Epoch || pa.Seq+pb.Seq+pb2.Seq != 0 {
		t.Fatalf("empty channel: node a %+v, node b %+v then %+v; want seq 0 in one epoch", pa, pb, pb2)
	}
	pos, err := b.b.Publish(ctx, ch, []byte("first"))
	if err != nil {
		t.Fatal(err)
	}
	if pos.Seq != 1 || pos.Epoch != pa.Epoch {
		t.Fatalf("first Publish from node b: %+v, want seq 1 in %q", pos, pa.Epoch)
	}
	for _, n := range []node{a, b} {
		if got := n.rec.WaitPublications(t, ch, 1, 10*time.Second); got[0].Epoch != pa.Epoch {
			t.Fatalf("delivered in %q, want %q", got[0].Epoch, pa.Epoch)
		}
	}

	// The channel's history goes away (as when it ages out): its next
	// empty period has a new epoch, on both nodes.
	js := natstest.JetStream(t, srv.URL())
	s, err := js.Stream(ctx, "SG_HISTORY")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []node{a, b} {
		_, p, err := n.b.Since(ctx, ch, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if p.Seq != 0 || p.Epoch == pa.Epoch {
			t.Fatalf("after the history was purged: %+v, want seq 0 in a new epoch (not %q)", p, pa.Epoch)
		}
	}
}
