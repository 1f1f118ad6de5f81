package redis_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// BenchmarkPublishWait: the publish latency cost of redis.wait_replicas,
// side by side: one goroutine (a round trip per publication), then 64
// goroutines sharing pipelines (one WAIT per pipeline), on a master with
// one replica (both spawned redis-servers, loopback), with WaitReplicas 0
// and 1.
func BenchmarkPublishWait(b *testing.B) {
	master := redistest.Start(b, redistest.Options{})
	replica := redistest.Start(b, redistest.Options{})
	host, port, _ := strings.Cut(master.Addr(), ":")
	replica.MustDo("REPLICAOF", host, port)
	brokertest.Eventually(b, 10*time.Second, "the replica in sync", func() bool {
		out, err := master.Do("INFO", "replication")
		return err == nil && strings.Contains(out, "connected_slaves:1") && strings.Contains(out, "state=online")
	})
	for _, wait := range []int{0, 1} {
		for _, par := range []int{0, 64} {
			b.Run(fmt.Sprintf("wait_replicas=%d/goroutines=%d", wait, max(par, 1)), func(b *testing.B) {
				cfg := testConfig(master.Addr())
				cfg.WaitReplicas = wait
				br := redis.New(cfg)
				brokertest.StartBench(b, br)
				ctx := context.Background()
				data := make([]byte, 64)
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				if par == 0 {
					for b.Loop() {
						if _, err := br.Publish(ctx, "doc:wait", data); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				var next atomic.Int64
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
			})
		}
	}
}
