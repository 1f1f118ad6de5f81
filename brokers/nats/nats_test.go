package nats_test

import (
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/nats"
	"github.com/syncgate/syncgate/internal/natstest"
)

func TestConformance(t *testing.T) {
	srv := natstest.RunServer(t)
	newBroker := func(t *testing.T) brokers.Broker { return nats.New(nats.Config{URL: srv.URL()}) }
	warmUp(t, srv.URL())
	brokertest.Suite{
		Features: brokertest.Features{Presence: true, Pinger: true},
		New:      newBroker,
		// No NewPair: see crossnode_test.go.
		// The server's per-message TTLs are whole seconds, rounded up: 2s
		// here. The margin keeps the suite's refresh check, which times the
		// TTL from when Refresh returned (the server, from when it stored the
		// entry), from failing on a loaded machine.
		PresenceTTL: 1500 * time.Millisecond,
		// Channels are delivered by several goroutines, not in one order.
		Settle: 20 * time.Millisecond,
	}.Run(t)
}

// warmUp starts and closes one broker so the presence stream (and the
// server goroutines that serve it) exist before the suite's leak checks
// take their snapshots.
func warmUp(t *testing.T, url string) {
	t.Helper()
	b := nats.New(nats.Config{URL: url})
	if err := b.Start(t.Context(), brokertest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}
