package jetstream_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
)

func benchBroker(b *testing.B, cfg jetstream.Config) *jetstream.Broker {
	b.Helper()
	br := jetstream.New(cfg)
	brokertest.StartBench(b, br)
	return br
}

// BenchmarkPublish: Publish round trips (a conditional write and its ack)
// on a subscribed channel, so each message is also delivered back.
func BenchmarkPublish(b *testing.B) {
	srv := natstest.RunServer(b)
	for _, c := range []struct {
		name string
		cfg  jetstream.Config
	}{
		{"TCP/File", jetstream.Config{URL: srv.URL()}},
		{"TCP/Memory", jetstream.Config{URL: srv.URL(), Storage: jetstream.MemoryStorage, Prefix: "sgmem"}},
		{"Embedded/File", jetstream.Config{Embedded: jetstream.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: b.TempDir()}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			br := benchBroker(b, c.cfg)
			ch := "bench." + c.name
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
	b.Run("TCP/File/Parallel", func(b *testing.B) {
		br := benchBroker(b, jetstream.Config{URL: srv.URL()})
		var next atomic.Int64
		data := []byte(`{"op":"insert","pos":12,"text":"hello"}`)
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		b.RunParallel(func(pb *testing.PB) {
			ch := fmt.Sprintf("bench.parallel.%d", next.Add(1)) // a channel per goroutine
			for pb.Next() {
				if _, err := br.Publish(b.Context(), ch, data); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkSnapshots stores (a key-value put, compare-and-set by revision)
// and loads snapshots of 1, 64 and 512 KiB, on an in-process nats-server
// over loopback, file and memory storage (brokertest.BenchSnapshots;
// docs/benchmarks.md).
func BenchmarkSnapshots(b *testing.B) {
	srv := natstest.RunServer(b)
	b.Run("File", func(b *testing.B) {
		brokertest.BenchSnapshots(b, benchBroker(b, jetstream.Config{URL: srv.URL()}))
	})
	b.Run("Memory", func(b *testing.B) {
		brokertest.BenchSnapshots(b, benchBroker(b, jetstream.Config{URL: srv.URL(), Storage: jetstream.MemoryStorage, Prefix: "sgmem"}))
	})
}
