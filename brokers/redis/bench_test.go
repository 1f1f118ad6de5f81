package redis_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
)

func startBench(b *testing.B) (*redis.Broker, *brokertest.Counter) {
	b.Helper()
	srv := redistest.Start(b, redistest.Options{})
	br := redis.New(testConfig(srv.Addr()))
	return br, brokertest.StartBench(b, br)
}

// BenchmarkPublish: one goroutine publishing 64 bytes on a channel with
// full history: one round trip per publication. "subscribed" includes the
// delivery back to this node's handler; "unsubscribed" is the publish path
// alone.
func BenchmarkPublish(b *testing.B) {
	brokertest.BenchPublish(b, suiteHistorySize, func(b *testing.B) brokers.Broker {
		br, _ := startBench(b)
		return br
	})
}

// BenchmarkPublishParallel: many goroutines publishing at once on 64
// channels of one shard. Their publications share pipelines
// (auto-batching): the reported pubs/pipeline is the average batch.
func BenchmarkPublishParallel(b *testing.B) {
	for _, par := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", par), func(b *testing.B) {
			br, _ := startBench(b)
			ctx := context.Background()
			for i := range 64 {
				if err := br.Subscribe(ctx, fmt.Sprintf("doc:%d", i)); err != nil {
					b.Fatal(err)
				}
			}
			data := make([]byte, 64)
			var next atomic.Int64
			before := br.Stats()
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			b.SetParallelism(par)
			b.RunParallel(func(pb *testing.PB) {
				ch := fmt.Sprintf("doc:%d", next.Add(1)%64)
				for pb.Next() {
					if _, err := br.Publish(ctx, ch, data); err != nil {
						b.Error(err)
						return
					}
				}
			})
			after := br.Stats()
			if p := after.Pipelines - before.Pipelines; p > 0 {
				b.ReportMetric(float64(after.Published-before.Published)/float64(p), "pubs/pipeline")
			}
		})
	}
}

// BenchmarkSnapshots stores (a Lua compare-and-set) and loads snapshots
// of 1, 64 and 512 KiB on a spawned redis-server over loopback
// (brokertest.BenchSnapshots; docs/benchmarks.md).
func BenchmarkSnapshots(b *testing.B) {
	br, _ := startBench(b)
	brokertest.BenchSnapshots(b, br)
}
