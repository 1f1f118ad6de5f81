package nats_test

import (
	"testing"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/nats"
	"github.com/syncgate/syncgate/internal/natstest"
)

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
			brokertest.StartBench(b, br)
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
