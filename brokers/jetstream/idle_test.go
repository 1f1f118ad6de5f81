package jetstream_test

import (
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
)

// TestIdleChannelNewEpoch: a channel silent for HistoryTTL loses its
// history (the stream's MaxAge); its next message starts a new epoch at
// seq 1, on the publishing node and at a node subscribed to the channel
// all along, and a resume from the old epoch cannot be served
// (docs/brokers.md, JetStream "Idle channel").
func TestIdleChannelNewEpoch(t *testing.T) {
	srv := natstest.RunServer(t)
	cfg := jetstream.Config{URL: srv.URL(), HistorySize: 100, HistoryTTL: time.Second}
	start := func() (*jetstream.Broker, *brokertest.Recorder) {
		b := jetstream.New(cfg)
		rec := brokertest.NewRecorder()
		if err := b.Start(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b, rec
	}
	a, _ := start()
	sub, rec := start()
	const ch = "idle"
	if err := sub.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	var old brokers.Position
	for range 3 {
		pos, err := a.Publish(t.Context(), ch, []byte(`"x"`))
		if err != nil {
			t.Fatal(err)
		}
		old = pos
	}
	if old.Seq != 3 {
		t.Fatalf("third publication at %+v, want seq 3", old)
	}
	// Wait until the history aged out (MaxAge 1 s; the server expires on
	// its own schedule).
	deadline := time.Now().Add(10 * time.Second)
	for {
		pubs, _, err := a.Since(t.Context(), ch, 0, 10)
		if err == nil && len(pubs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("history of a channel silent for 10 s with a 1 s TTL: %d publications, err %v", len(pubs), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	pos, err := a.Publish(t.Context(), ch, []byte(`"y"`))
	if err != nil {
		t.Fatal(err)
	}
	if pos.Seq != 1 || pos.Epoch == old.Epoch || pos.Epoch == "" {
		t.Fatalf("first message after the TTL at %+v, want seq 1 in an epoch other than %q", pos, old.Epoch)
	}
	// The subscribed node delivers it in the new epoch.
	deadline = time.Now().Add(5 * time.Second)
	for {
		got := rec.Publications(ch)
		if n := len(got); n > 0 && got[n-1].Epoch == pos.Epoch {
			if got[n-1].Seq != 1 {
				t.Fatalf("subscribed node got %+v, want seq 1", got[n-1])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscribed node's publications %+v; want one in epoch %q", got, pos.Epoch)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Resuming from the old epoch finds another epoch: the client resyncs.
	_, latest, err := sub.Since(t.Context(), ch, old.Seq, 10)
	if err != nil {
		t.Fatal(err)
	}
	if latest.Epoch == old.Epoch {
		t.Fatalf("Since after the TTL answers the old epoch %q", old.Epoch)
	}
}
