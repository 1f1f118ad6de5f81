package memory_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

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
		History:     true,
		HistorySize: suiteHistorySize,
		Epoch:       true,
		Presence:    true,
		Pinger:      true,
	}, func(t *testing.T) brokers.Broker {
		return memory.New(memory.Config{HistorySize: suiteHistorySize})
	})
}

// nopHandler is the cheapest possible handler, for benchmarks.
type nopHandler struct{}

func (nopHandler) HandlePublication(string, brokers.Publication)                    {}
func (nopHandler) HandlePresence(string, brokers.PresenceEventType, brokers.Member) {}

func startBench(b *testing.B, cfg memory.Config) *memory.Broker {
	b.Helper()
	br := memory.New(cfg)
	if err := br.Start(context.Background(), nopHandler{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	return br
}

// BenchmarkPublish publishes 64 bytes on one subscribed channel whose
// history is full (the steady state). Expected: 1 alloc, the copy of data.
func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	br := startBench(b, memory.Config{})
	const ch = "doc:1"
	if err := br.Subscribe(ctx, ch); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 64)
	for range memory.DefaultHistorySize {
		if _, err := br.Publish(ctx, ch, data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := br.Publish(ctx, ch, data); err != nil {
			b.Fatal(err)
		}
	}
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
