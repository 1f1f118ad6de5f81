package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
)

// BenchmarkFanout measures the hot path end to end: one publication on the
// memory broker -> msg frame encoded once -> queued on N subscribers ->
// written to N real loopback sockets (and read by N draining clients).
// One op is one message; deliveries = N per op.
//
// paced: each message is fully delivered before the next is published (the
// per-message cost and latency of a fan-out, queues one deep).
// burst: messages are published back to back (throughput; queues grow and
// frames are coalesced into fewer writev calls).
func BenchmarkFanout(b *testing.B) {
	for _, mode := range ioModes {
		for _, n := range []int{1, 1000} {
			for _, paced := range []bool{true, false} {
				name := fmt.Sprintf("%s/subs=%d/burst", mode, n)
				if paced {
					name = fmt.Sprintf("%s/subs=%d/paced", mode, n)
				}
				b.Run(name, func(b *testing.B) { benchFanout(b, mode, n, paced) })
			}
		}
	}
}

func benchFanout(b *testing.B, mode string, n int, paced bool) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Server.IO = mode
	cfg.Client.MaxQueueBytes = 64 << 20
	cfg.Presence.JoinLeave = false
	broker := memory.New(memory.Config{})
	srv, err := gateway.New(cfg, broker, nil)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()

	var received atomic.Int64
	for range n {
		rc := rawDial(b, ln.Addr().String(), nil)
		rc.writeFrame(0x1, true, []byte(`{"op":"sub","id":1,"ch":"doc:bench"}`))
		rc.readObj()
		go func() {
			_, _ = io.Copy(countingWriter{&received}, rc.br)
		}()
	}
	data := []byte(`"from":"bench","data":{"text":"hello, world","pos":12345}`)
	ctx := context.Background()
	// Frame size of one delivery, measured on a warm-up message.
	if _, err := broker.Publish(ctx, "doc:bench", data); err != nil {
		b.Fatal(err)
	}
	waitBytes := func(target int64) {
		deadline := time.Now().Add(60 * time.Second)
		for spins := 0; received.Load() < target; spins++ {
			if spins%1024 == 1023 && time.Now().After(deadline) {
				b.Fatalf("received %d of %d bytes", received.Load(), target)
			}
			runtime.Gosched()
		}
	}
	for received.Load() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	waitBytes(received.Load())
	frame := received.Load() / int64(n)
	base := received.Load()

	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := broker.Publish(ctx, "doc:bench", data); err != nil {
			b.Fatal(err)
		}
		if paced {
			waitBytes(base + int64(i+1)*int64(n)*frame)
		}
	}
	waitBytes(base + int64(b.N)*int64(n)*frame)
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	deliveries := float64(b.N) * float64(n)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/deliveries, "allocs/delivery")
}

type countingWriter struct{ n *atomic.Int64 }

func (w countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// BenchmarkNeighbourLatency measures one client's round trip (a ping
// command answered by pong) while another client floods the node: with no
// flood, with tiny (empty) text frames written back to back, and with
// WebSocket pings written back to back (closed past
// client.control_frame_rate). The node has one read worker, as if every
// worker were busy, so the flooder and the victim take turns on it. One op
// is one round trip; p50 and p99 are reported in microseconds. The flooding
// client runs in this process too, on the same cores.
func BenchmarkNeighbourLatency(b *testing.B) {
	floods := []struct {
		name  string
		frame []byte
	}{{"none", nil}, {"frames", emptyTextFrame}, {"pings", emptyPingFrame}}
	for _, mode := range ioModes {
		for _, fl := range floods {
			b.Run(mode+"/flood="+fl.name, func(b *testing.B) {
				ts := startServer(b, mode, func(c *config.Config) { c.Server.Workers = 1 })
				victim := rawDial(b, ts.addr, nil)
				roundTrips(b, victim, 100) // warm up
				if fl.frame != nil {
					_, stop := startFlood(b, ts.addr, fl.frame)
					defer stop()
					time.Sleep(100 * time.Millisecond) // let the flood build up
				}
				b.ReportAllocs()
				b.ResetTimer()
				rtts := roundTrips(b, victim, b.N)
				b.StopTimer()
				slices.Sort(rtts)
				b.ReportMetric(float64(rtts[len(rtts)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(rtts[len(rtts)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}
