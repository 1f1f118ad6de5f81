package memory_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/memory"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const suiteHistorySize = 100

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Features{
		Snapshots:   true,
		History:     true,
		HistorySize: suiteHistorySize,
		Epoch:       true,
		Presence:    true,
		Pinger:      true,
		// The sweep runs every third of the shortest TTL (100ms here).
		ExpiryWithin: 150 * time.Millisecond,
	}, func(t *testing.T) brokers.Broker {
		return memory.New(memory.Config{HistorySize: suiteHistorySize})
	})
}

func startBench(b *testing.B, cfg memory.Config) *memory.Broker {
	b.Helper()
	br := memory.New(cfg)
	brokertest.StartBench(b, br)
	return br
}

// BenchmarkPublish publishes 64 bytes on one channel whose history is
// full (the steady state), subscribed (with the delivery back) and not.
// Expected: 1 alloc, the copy of data.
func BenchmarkPublish(b *testing.B) {
	brokertest.BenchPublish(b, memory.DefaultHistorySize, func(b *testing.B) brokers.Broker {
		return startBench(b, memory.Config{})
	})
}

// BenchmarkPublishParallel publishes from GOMAXPROCS goroutines, each on
// its own channel, to show that channels do not contend.
func BenchmarkPublishParallel(b *testing.B) {
	ctx := context.Background()
	br := startBench(b, memory.Config{})
	var next atomic.Int64
	data := make([]byte, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	b.RunParallel(func(pb *testing.PB) {
		ch := fmt.Sprintf("doc:%d", next.Add(1))
		if err := br.Subscribe(ctx, ch); err != nil {
			b.Error(err)
			return
		}
		for pb.Next() {
			if _, err := br.Publish(ctx, ch, data); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSince reads the last 100 of a full history of 1000: a typical
// catch-up. Expected: 1 alloc, the result slice.
func BenchmarkSince(b *testing.B) {
	ctx := context.Background()
	br := startBench(b, memory.Config{})
	const ch = "doc:1"
	data := make([]byte, 64)
	var last brokers.Position
	for range memory.DefaultHistorySize + 10 {
		var err error
		if last, err = br.Publish(ctx, ch, data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		pubs, _, err := br.Since(ctx, ch, last.Seq-100, 100)
		if err != nil || len(pubs) != 100 {
			b.Fatalf("Since: %d publications, %v", len(pubs), err)
		}
	}
}

// BenchmarkSnapshots stores and loads snapshots of 1, 64 and 512 KiB
// (brokertest.BenchSnapshots; docs/benchmarks.md).
func BenchmarkSnapshots(b *testing.B) {
	brokertest.BenchSnapshots(b, startBench(b, memory.Config{}))
}
