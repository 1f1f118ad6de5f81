package gateway_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
)

// reconnectFor is the `reconnect` value docs/protocol.md gives each
// disconnect code expectClose is used with.
var reconnectFor = map[string]bool{"frame_timeout": true, "overloaded": true, "rate_limited": false, "slow_consumer": true}

// expectClose reads frames until the server's close frame and checks the
// disconnect code before it and the close status; other frames (pongs,
// replies) are skipped. It returns how many frames came before the close.
func (rc *rawConn) expectClose(code string, status uint16) int {
	rc.t.Helper()
	var sawDisconnect bool
	for n := 0; n < 100000; n++ {
		f := rc.readFrame()
		switch f.op {
		case 0x1:
			if strings.Contains(string(f.payload), `"disconnect"`) {
				if !strings.Contains(string(f.payload), `"code":"`+code+`"`) {
					rc.t.Fatalf("disconnect = %s, want code %s", f.payload, code)
				}
				var d struct {
					Reconnect *bool `json:"reconnect"`
				}
				want, known := reconnectFor[code]
				if err := json.Unmarshal(f.payload, &d); err != nil || !known || d.Reconnect == nil || *d.Reconnect != want {
					rc.t.Fatalf("disconnect = %s (%v), want reconnect %v (documented: %v)", f.payload, err, want, known)
				}
				sawDisconnect = true
			}
		case 0x8:
			if len(f.payload) < 2 || binary.BigEndian.Uint16(f.payload) != status {
				rc.t.Fatalf("close frame %v, want status %d", f, status)
			}
			if !sawDisconnect {
				rc.t.Fatalf("close %d without a disconnect %s before it", status, code)
			}
			return n
		}
	}
	rc.t.Fatalf("no close frame after 100000 frames")
	return 0
}

// trickle writes b one byte every gap until it is written or a write fails
// (the server closed the connection). It runs in its own goroutine; wait
// for it with the returned function.
func (rc *rawConn) trickle(b []byte, gap time.Duration) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, x := range b {
			rc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := rc.nc.Write([]byte{x}); err != nil {
				return
			}
			time.Sleep(gap)
		}
	}()
	return wg.Wait
}

// TestTrickledFrameIsClosed: a client that sends a frame one byte every
// 300 ms (each byte resets the idle timeout) is closed after
// client.frame_timeout, for a single frame and for a fragmented message
// trickled as 1-byte continuation frames.
func TestTrickledFrameIsClosed(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) { c.Client.FrameTimeout = time.Second })
		msg := []byte(`{"op":"ping","id":1}` + strings.Repeat(" ", 200))

		t.Run("frame", func(t *testing.T) {
			rc := rawDial(t, ts.addr, nil)
			start := time.Now()
			wait := rc.trickle(rc.frameBytes(0x1, true, msg), 300*time.Millisecond)
			rc.expectClose("frame_timeout", 1008)
			// Not before client.frame_timeout (1 s), and within it plus a
			// sweep (every frame_timeout/2) and slack for a loaded machine.
			if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
				t.Fatalf("closed after %v, want client.frame_timeout (1s) to 3s", d)
			}
			rc.expectEOF()
			rc.nc.Close()
			wait()
		})
		t.Run("fragments", func(t *testing.T) {
			rc := rawDial(t, ts.addr, nil)
			var stream []byte
			stream = append(stream, rc.frameBytes(0x1, false, msg[:1])...)
			for _, x := range msg[1:] {
				stream = append(stream, rc.frameBytes(0x0, false, []byte{x})...)
			}
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // one whole 1-byte fragment every 300 ms
				defer wg.Done()
				for len(stream) > 0 {
					n := 6 + 1
					if len(stream) < n {
						n = len(stream)
					}
					rc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if _, err := rc.nc.Write(stream[:n]); err != nil {
						return
					}
					stream = stream[n:]
					time.Sleep(300 * time.Millisecond)
				}
			}()
			rc.expectClose("frame_timeout", 1008)
			rc.expectEOF()
			rc.nc.Close()
			wg.Wait()
		})
		t.Run("whole frames are not affected", func(t *testing.T) {
			rc := rawDial(t, ts.addr, nil)
			for i := range 5 { // slower than the timeout in total, but each frame is whole
				rc.writeFrame(0x1, true, []byte(fmt.Sprintf(`{"op":"ping","id":%d}`, i+1)))
				if r := rc.readObj(); r != fmt.Sprintf(`{"op":"pong","id":%d}`, i+1) {
					t.Fatalf("got %s", r)
				}
				time.Sleep(300 * time.Millisecond)
			}
		})
		assertMetric(t, ts, `syncgate_limit_rejections_total{kind="frame_timeout"}`, 2)
		if v := scrape(t, ts, `syncgate_limit_rejections_total{kind="frame_timeout"}`); v != 2 {
			t.Fatalf("frame_timeout rejections = %v, want 2 (one per connection)", v)
		}
	})
}

// TestPartialBytesBudget: partial frames held by all connections count
// against server.max_partial_bytes; the connection that would pass it is
// closed (1013), the ones already holding partial frames are not and can
// finish them.
func TestPartialBytesBudget(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) {
			c.Client.MaxMessageSize = 1024
			c.Server.MaxPartialBytes = 4096
		})
		// Each frame is 1032 bytes (8-byte header + 1024); 3 fit, 4 do not.
		var frames [][]byte
		var conns []*rawConn
		for i := range 4 {
			rc := rawDial(t, ts.addr, nil)
			ping := fmt.Sprintf(`{"op":"ping","id":%d}`, i+1)
			frames = append(frames, rc.frameBytes(0x1, true, []byte(ping+strings.Repeat(" ", 1024-len(ping)))))
			conns = append(conns, rc)
		}
		for i := range 3 {
			conns[i].write(frames[i][:600])
			want := float64(1032 * (i + 1))
			waitFor(t, 5*time.Second, fmt.Sprintf("%v partial bytes held", want), func() bool {
				return scrape(t, ts, "syncgate_partial_frame_bytes") == want
			})
		}
		conns[3].write(frames[3][:600])
		conns[3].expectClose("overloaded", 1013)
		conns[3].expectEOF()
		for i := range 3 {
			conns[i].write(frames[i][600:])
			if r := conns[i].readObj(); r != fmt.Sprintf(`{"op":"pong","id":%d}`, i+1) {
				t.Fatalf("connection %d: got %s", i, r)
			}
		}
		waitFor(t, 5*time.Second, "no partial bytes held", func() bool {
			return scrape(t, ts, "syncgate_partial_frame_bytes") == 0
		})
		assertMetric(t, ts, `syncgate_limit_rejections_total{kind="partial_bytes"}`, 1)
	})
}

// TestControlFrameFlood: a client sending pings past
// client.control_frame_rate is disconnected (rate_limited, close 1008); one
// under it is answered with every pong.
func TestControlFrameFlood(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) { c.Client.ControlFrameRate = 20 })
		ok := rawDial(t, ts.addr, nil)
		for i := range 10 {
			ok.writeFrame(0x9, true, []byte{byte(i)})
			if f := ok.readFrame(); f.op != 0xA || !bytes.Equal(f.payload, []byte{byte(i)}) {
				t.Fatalf("ping %d: got %v", i, f)
			}
		}
		for _, op := range []byte{0x9, 0xA} { // pings, and unsolicited pongs
			rc := rawDial(t, ts.addr, nil)
			var flood []byte
			for range 500 {
				flood = append(flood, rc.frameBytes(op, true, nil)...)
			}
			rc.write(flood)
			if n := rc.expectClose("rate_limited", 1008); n > 40 {
				t.Fatalf("op %x: %d frames answered before the close, want at most about 20", op, n)
			}
			rc.expectEOF()
		}
		ok.writeFrame(0x1, true, []byte(`{"op":"ping","id":9}`))
		if r := ok.readObj(); r != `{"op":"pong","id":9}` {
			t.Fatalf("got %s", r)
		}
		assertMetric(t, ts, `syncgate_limit_rejections_total{kind="control_rate"}`, 2)
	})
}

// TestFloodDoesNotStarve: while one client sends tiny frames as fast as it
// can, another's round trips stay short. The node has one read worker, as
// if every worker were busy: before read turns were bounded by frames, the
// flooder kept it for 16 reads of ~5,000 frames each per turn and the
// victim's median round trip grew ~100-fold. The bound is generous for a
// loaded CI machine; BenchmarkNeighbourLatency measures the real figures.
func TestFloodDoesNotStarve(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) { c.Server.Workers = 1 })
		victim := rawDial(t, ts.addr, nil)
		roundTrips(t, victim, 50) // warm up
		calm := median(roundTrips(t, victim, 200))
		written, stop := startFlood(t, ts.addr, emptyTextFrame)
		waitFor(t, 10*time.Second, "the flood to get going", func() bool { return written.Load() >= 4<<20 })
		rtts := roundTrips(t, victim, 200)
		stop()
		flood := median(rtts)
		slices.Sort(rtts)
		t.Logf("%s: victim median %v without a flood, %v (p99 %v) during one", mode, calm, flood, rtts[len(rtts)*99/100])
		if limit := max(30*calm, 5*time.Millisecond); flood > limit {
			t.Fatalf("victim median round trip %v during a flood of tiny frames (%v without), want under %v", flood, calm, limit)
		}
	})
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// Masked client frames with an empty payload (mask 0: payload bytes as is).
var (
	emptyTextFrame = []byte{0x81, 0x80, 0, 0, 0, 0}
	emptyPingFrame = []byte{0x89, 0x80, 0, 0, 0, 0}
)

// startFlood opens a connection that writes frame back to back as fast as
// it can (and throws away what it receives) until the returned stop is
// called or the server closes it; written counts the bytes it wrote.
func startFlood(t testing.TB, addr string, frame []byte) (written *atomic.Int64, stop func()) {
	written = new(atomic.Int64)
	rc := rawDial(t, addr, nil)
	buf := bytes.Repeat(frame, (64<<10)/len(frame))
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		rc.nc.SetReadDeadline(time.Time{})
		_, _ = io.Copy(io.Discard, rc.br)
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			rc.nc.SetWriteDeadline(time.Now().Add(time.Second))
			n, err := rc.nc.Write(buf)
			written.Add(int64(n))
			if err != nil {
				if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
					return // closed by the server
				}
			}
		}
	}()
	var once sync.Once
	return written, func() {
		once.Do(func() {
			close(done)
			rc.nc.Close()
			wg.Wait()
		})
	}
}

// roundTrips times n ping commands on rc, one at a time.
func roundTrips(t testing.TB, rc *rawConn, n int) []time.Duration {
	rtts := make([]time.Duration, 0, n)
	for i := range n {
		req := rc.frameBytes(0x1, true, []byte(fmt.Sprintf(`{"op":"ping","id":%d}`, i+1)))
		start := time.Now()
		rc.write(req)
		rc.readObj()
		rtts = append(rtts, time.Since(start))
	}
	return rtts
}
