package nats_test

import (
	"sync/atomic"
	"testing"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/nats"
	"github.com/syncgate/syncgate/internal/natstest"
)

// countingHandler counts deliveries; a Recorder would dominate the cost.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) HandlePublication(string, brokers.Publication) { h.n.Add(1) }
func (h *countingHandler) HandlePresence(string, brokers.PresenceEventType, brokers.Member) {
}

// BenchmarkPublish: Publish on a subscribed channel (core NATS: no ack to
// wait for; the message is also delivered back to this node).
func BenchmarkPublish(b *testing.B) {
	srv := natstest.RunServer(b)
	for _, c := range []struct {
		name string
		cfg  nats.Config
	}{
		{"TCP", nats.Config{URL: srv.URL()}},
		{"Embedded", nats.Config{Embedded: nats.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: b.TempDir()}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			br := nats.New(c.cfg)
			h := &countingHandler{}
			if err := br.Start(b.Context(), h); err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			const ch = "bench.doc:1"
			if err := br.Subscribe(b.Context(), ch); err != nil {
				b.Fatal(err)
			}
			data := []byte(`{"op":"insert","pos":12,"text":"hello"}`)
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := br.Publish(b.Context(), ch, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
