package jetstream_test

import (
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
)

const suiteHistory = 100

func TestConformance(t *testing.T) {
	for _, storage := range []struct {
		name string
		typ  jetstream.StorageType
	}{{"File", jetstream.FileStorage}, {"Memory", jetstream.MemoryStorage}} {
		t.Run(storage.name, func(t *testing.T) {
			srv := natstest.RunServer(t)
			cfg := jetstream.Config{URL: srv.URL(), Storage: storage.typ, HistorySize: suiteHistory}
			newBroker := func(t *testing.T) brokers.Broker { return jetstream.New(cfg) }
			warmUp(t, cfg)
			brokertest.Suite{
				Features: brokertest.Features{
					History: true, HistorySize: suiteHistory, Epoch: true, Presence: true, Pinger: true, Snapshots: true,
				},
				New: newBroker,
				NewPair: func(t *testing.T) (brokers.Broker, brokers.Broker) {
					return newBroker(t), newBroker(t)
				},
				// The server's per-message TTLs are whole seconds, rounded up: 2s
				// here. The margin keeps the suite's refresh check, which times the
				// TTL from when Refresh returned (the server, from when it stored the
				// entry), from failing on a loaded machine.
				PresenceTTL: 1500 * time.Millisecond,
				// Channels are delivered by several goroutines, not in one order.
				Settle: 20 * time.Millisecond,
			}.Run(t)
		})
	}
}

// warmUp starts and closes one broker so the streams (and the server
// goroutines that serve them) exist before the suite's leak checks take
// their snapshots.
func warmUp(t *testing.T, cfg jetstream.Config) {
	t.Helper()
	b := jetstream.New(cfg)
	if err := b.Start(t.Context(), brokertest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	// The snapshot bucket too: the server's goroutines for it are the
	// server's, not the broker's, and must not count as leaks.
	if _, _, err := b.LoadSnapshot(t.Context(), "warmup"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}
