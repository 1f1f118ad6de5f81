package jetstream_test

import (
	"testing"
	"time"

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
	start := func() (*jetstream.Broker, *brokertest.Recorder) { return brokertest.Started(t, jetstream.New(cfg)) }
	a, _ := start()
	sub, rec := start()
	const ch = "idle"
	if err := sub.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	old := brokertest.PublishN(t, a, ch, 3, `"x"`)
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
	// The subscribed node delivers it in the new epoch; resuming from the
	// old epoch finds another epoch: the client resyncs.
	brokertest.WaitNewEpoch(t, rec, ch, pos, "", time.Now(), 5*time.Second)
	brokertest.CheckNewEpoch(t, sub, ch, old, pos)
}
