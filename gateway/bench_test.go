package gateway_test

import (
	"bufio"
	"context"
	"fmt"
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
				b.Run(name, func(b *testing.B) { benchFanout(b, mode, n, paced, false) })
			}
		}
	}
}

// BenchmarkFanoutBinary is BenchmarkFanout for a binary publication (a
// 25-byte update, docs/protocol.md "Binary data") with every other
// subscriber a binary client: the node builds one text frame (base64
// "bin") and one binary frame per publication, whatever the number of
// subscribers.
func BenchmarkFanoutBinary(b *testing.B) {
	for _, mode := range ioModes {
		for _, n := range []int{1, 1000} {
			b.Run(fmt.Sprintf("%s/subs=%d/paced", mode, n), func(b *testing.B) { benchFanout(b, mode, n, true, true) })
		}
	}
}

func benchFanout(b *testing.B, mode string, n int, paced, binary bool) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Server.IO = mode
	cfg.Client.MaxQueueBytes = 64 << 20
	cfg.Presence.JoinLeave = false
	// The subscribers only read: a run longer than twice the ping interval
	// would see them disconnected as silent.
	cfg.Client.PingInterval = time.Hour
	broker := memory.New(memory.Config{})
	srv, err := gateway.New(cfg.Gateway(), broker, nil)
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

	// delivered counts msg frames read, over all subscribers: the timer
	// stops when every subscriber has read every message, counted frame by
	// frame (not estimated from bytes: a byte count taken before every
	// subscriber has its first frame underestimates a frame's size).
	var delivered deliveryCounter
	delivered.reached = make(chan struct{}, 1)
	for i := range n {
		rc := rawDial(b, ln.Addr().String(), nil)
		if binary && i%2 == 0 {
			// One user each: client.max_connections_per_user.
			rc.writeFrame(0x1, true, fmt.Appendf(nil, `{"op":"connect","id":2,"user":"b%d","binary":true}`, i))
			rc.readObj()
		}
		rc.writeFrame(0x1, true, []byte(`{"op":"sub","id":1,"ch":"doc:bench"}`))
		rc.readObj()
		rc.nc.SetReadDeadline(time.Time{})
		go countFrames(rc.br, &delivered)
	}
	data := []byte(`"from":"bench","data":{"text":"hello, world","pos":12345}`)
	if binary {
		data = []byte(`"from":"bench","bin":"AQHR5qPFCAAEAQR0ZXh0AWEAAAAAAAAAAA=="`)
	}
	ctx := context.Background()
	// waitDeliveries blocks (no spinning: a spinning waiter keeps the
	// scheduler from polling the network and delays every delivery by
	// milliseconds) until target frames have been read.
	// One timer for every wait: the harness allocates nothing per message.
	timeout := time.NewTimer(time.Hour)
	defer timeout.Stop()
	waitDeliveries := func(target int64) {
		delivered.target.Store(target)
		timeout.Reset(60 * time.Second)
		for delivered.n.Load() < target {
			select {
			case <-delivered.reached:
			case <-timeout.C:
				b.Fatalf("delivered %d of %d frames", delivered.n.Load(), target)
			}
		}
	}
	// A warm-up message, fully delivered before the timer starts.
	if _, err := broker.Publish(ctx, "doc:bench", data); err != nil {
		b.Fatal(err)
	}
	waitDeliveries(int64(n))
	base := delivered.n.Load()

	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := broker.Publish(ctx, "doc:bench", data); err != nil {
			b.Fatal(err)
		}
		if paced {
			waitDeliveries(base + int64(i+1)*int64(n))
		}
	}
	waitDeliveries(base + int64(b.N)*int64(n))
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	if got, want := delivered.n.Load(), base+int64(b.N)*int64(n); got != want {
		b.Fatalf("delivered %d frames, want %d (a frame other than msg arrived)", got, want)
	}
	deliveries := float64(b.N) * float64(n)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/deliveries, "allocs/delivery")
}

// deliveryCounter counts msg frames read by all subscribers; the reader
// whose frame brings n to target signals reached (the waiter re-checks n,
// so a stale signal is harmless).
type deliveryCounter struct {
	n, target atomic.Int64
	reached   chan struct{}
}

// countFrames reads server frames (unmasked) from br until it fails and
// counts each text or binary frame in d, discarding payloads without allocating.
func countFrames(br *bufio.Reader, d *deliveryCounter) {
	for {
		h0, err := br.ReadByte()
		if err != nil {
			return
		}
		h1, err := br.ReadByte()
		if err != nil {
			return
		}
		size := uint64(h1 & 0x7f)
		switch size {
		case 126, 127:
			k := 2
			if size == 127 {
				k = 8
			}
			size = 0
			for range k {
				c, err := br.ReadByte()
				if err != nil {
					return
				}
				size = size<<8 | uint64(c)
			}
		}
		if _, err := br.Discard(int(size)); err != nil {
			return
		}
		if op := h0 & 0x0f; (op == 0x1 || op == 0x2) && d.n.Add(1) == d.target.Load() {
			select {
			case d.reached <- struct{}{}:
			default:
			}
		}
	}
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
