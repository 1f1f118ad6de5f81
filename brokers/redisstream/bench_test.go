package redisstream_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/internal/redistest"
)

func startBench(b *testing.B) (*redisstream.Broker, *brokertest.Counter) {
	b.Helper()
	srv := redistest.Start(b, redistest.Options{})
	br := redisstream.New(testConfig(srv.Addr()))
	return br, brokertest.StartBench(b, br)
}

// BenchmarkPublish: one goroutine publishing 64 bytes on a channel with
// full history: one script call (one round trip) per publication.
// "subscribed" has this node tailing the channel (its XREAD loop runs
// alongside); "unsubscribed" is the publish path alone.
func BenchmarkPublish(b *testing.B) {
	brokertest.BenchPublish(b, suiteHistorySize, func(b *testing.B) brokers.Broker {
		br, _ := startBench(b)
		return br
	})
}

// BenchmarkPublishParallel: many goroutines publishing at once on 64
// subscribed channels of one server, each publish its own script call on
// a pooled connection.
func BenchmarkPublishParallel(b *testing.B) {
	for _, par := range []int{1, 8} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", par), func(b *testing.B) {
			br, h := startBench(b)
			ctx := context.Background()
			for i := range 64 {
				if err := br.Subscribe(ctx, fmt.Sprintf("doc:%d", i)); err != nil {
					b.Fatal(err)
				}
			}
			data := make([]byte, 64)
			var next atomic.Int64
			before := h.N.Load()
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
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
			b.ReportMetric(float64(h.N.Load()-before)/float64(b.N), "delivered/op")
		})
	}
}

// BenchmarkPublishManyChannels: 16 publishers on 2000 channels that the
// node serves: every XREAD carries all 4000 streams of the node.
func BenchmarkPublishManyChannels(b *testing.B) {
	br, h := startBench(b)
	ctx := context.Background()
	const n = 2000
	for i := range n {
		if err := br.Subscribe(ctx, fmt.Sprintf("many:%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	data := make([]byte, 64)
	var next atomic.Int64
	before := h.N.Load()
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ch := fmt.Sprintf("many:%d", next.Add(1)%n)
			if _, err := br.Publish(ctx, ch, data); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	want := int64(b.N)
	brokertestEventually(b, func() bool { return h.N.Load()-before >= want })
}

// brokertestEventually waits up to 10s for cond.
func brokertestEventually(b *testing.B, cond func() bool) {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("timed out waiting for delivery")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
