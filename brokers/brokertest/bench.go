package brokertest

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/syncgate/syncgate/brokers"
)

// Counter is the cheapest handler that still counts the publications
// delivered, for benchmarks.
type Counter struct{ N atomic.Int64 }

// HandlePublication implements brokers.Handler.
func (h *Counter) HandlePublication(string, brokers.Publication) { h.N.Add(1) }

// HandlePresence implements brokers.Handler.
func (h *Counter) HandlePresence(string, brokers.PresenceEventType, brokers.Member) {}

// StartBench starts br with a Counter, failing b if it cannot, and closes
// br at cleanup.
func StartBench(b testing.TB, br brokers.Broker) *Counter {
	b.Helper()
	h := &Counter{}
	if err := br.Start(context.Background(), h); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	return h
}

// BenchPublish benchmarks one goroutine publishing 64 bytes on a channel
// whose history holds fill publications already (the steady state), on a
// fresh started broker from start for each of two sub-benchmarks:
// "subscribed" includes the delivery back to this node, "unsubscribed" is
// the publish path alone.
func BenchPublish(b *testing.B, fill int, start func(b *testing.B) brokers.Broker) {
	for _, sub := range []bool{true, false} {
		b.Run(map[bool]string{true: "subscribed", false: "unsubscribed"}[sub], func(b *testing.B) {
			br := start(b)
			ctx := context.Background()
			const ch = "doc:1"
			if sub {
				if err := br.Subscribe(ctx, ch); err != nil {
					b.Fatal(err)
				}
			}
			data := make([]byte, 64)
			for range fill {
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
		})
	}
}

// BenchSnapshots benchmarks StoreSnapshot and LoadSnapshot of br (a
// backend with Snapshots) for snapshots of 1 KiB, 64 KiB and 512 KiB:
// "store" writes a higher seq each time (so each is kept: the
// compare-and-set and the write), "load" reads the kept one back.
func BenchSnapshots(b *testing.B, br brokers.Broker) {
	sn, ok := br.(brokers.Snapshots)
	if !ok {
		b.Fatalf("%T has no snapshots", br)
	}
	ctx := context.Background()
	for _, size := range []int{1 << 10, 64 << 10, 512 << 10} {
		ch := fmt.Sprintf("doc:snap%d", size)
		// A JSON string, as the gateway stores a client's data.
		data := append(append([]byte{'"'}, bytes.Repeat([]byte{'a'}, size-2)...), '"')
		seq := uint64(0)
		b.Run(fmt.Sprintf("store/%dKiB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				seq++
				if kept, _, err := sn.StoreSnapshot(ctx, ch, brokers.Snapshot{Seq: seq, Epoch: "e1", Data: data}); err != nil || !kept {
					b.Fatalf("StoreSnapshot seq %d: kept %v, %v", seq, kept, err)
				}
			}
		})
		b.Run(fmt.Sprintf("load/%dKiB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				s, ok, err := sn.LoadSnapshot(ctx, ch)
				if err != nil || !ok || len(s.Data) != size {
					b.Fatalf("LoadSnapshot: %d bytes, ok %v, %v", len(s.Data), ok, err)
				}
			}
		})
	}
}
