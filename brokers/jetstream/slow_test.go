package jetstream_test

import (
	"testing"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
)

// TestSlowConsumerRefill: the node's delivery queue overflows (a stalled
// handler, a queue of one message), so the client library drops the
// channel's messages, including its last one. No later message reveals
// the gap; the slow-consumer report must make the node check the channel
// against the stream and deliver everything, in order.
func TestSlowConsumerRefill(t *testing.T) {
	srv := natstest.RunServer(t)
	b := jetstream.New(jetstream.Config{URL: srv.URL(), Shards: 1, QueueSize: 1})
	brokertest.StalledRefill(t, b, "doc.slow", 60)
}
