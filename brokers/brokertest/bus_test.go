package brokertest_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/internal/membus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const historySize = 50

var busFeatures = brokertest.Features{
	History:     true,
	HistorySize: historySize,
	Epoch:       true,
	Presence:    true,
	Pinger:      true,
	// The memory sweep runs every third of the shortest TTL (100ms here).
	ExpiryWithin: 150 * time.Millisecond,
}

// TestBus runs the suite, cross-node checks included, on membus: a fake
// multi-node backend built on one memory broker, the way a redis or nats
// backend provides NewPair.
func TestBus(t *testing.T) {
	brokertest.Suite{
		Features: busFeatures,
		New:      func(t *testing.T) brokers.Broker { return membus.New(memory.Config{HistorySize: historySize}, 1)[0] },
		NewPair: func(t *testing.T) (a, b brokers.Broker) {
			ns := membus.New(memory.Config{HistorySize: historySize}, 2)
			return ns[0], ns[1]
		},
	}.Run(t)
}
