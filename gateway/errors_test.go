package gateway_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

func TestBadInputKeepsConnectionUsable(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) {
			c.Client.MaxMessageSize = 1024
			c.Client.MaxSubscriptions = 2
		})
		c := dial(t, ts)
		c.Connect("alice")
		cases := []struct {
			name, send, code, msgHas string
		}{
			{"invalid json", `{"op":"ping",`, "bad_request", "invalid JSON"},
			{"not an object", `[1,2]`, "bad_request", "JSON object"},
			{"unknown op", `{"op":"dance","id":7}`, "bad_request", `unknown op "dance"`},
			{"missing op", `{"id":8}`, "bad_request", `missing "op"`},
			{"bad id", `{"op":"ping","id":-1}`, "bad_request", `"id"`},
			{"bad channel", `{"op":"sub","id":9,"ch":"doc 1"}`, "bad_request", "channel name"},
			{"empty channel", `{"op":"sub","id":10,"ch":""}`, "bad_request", "channel name"},
			{"long channel", `{"op":"sub","id":11,"ch":"` + strings.Repeat("a", 256) + `"}`, "bad_request", "channel name"},
			{"missing channel", `{"op":"pub","id":12,"data":1}`, "bad_request", `missing "ch"`},
			{"missing data", `{"op":"pub","id":13,"ch":"doc:1"}`, "bad_request", `missing "data"`},
			{"ch not string", `{"op":"sub","id":14,"ch":5}`, "bad_request", `"ch" must be a string`},
			{"bad since", `{"op":"sub","id":15,"ch":"doc:1","since":5}`, "bad_request", `"since"`},
			{"unsub not subscribed", `{"op":"unsub","id":16,"ch":"doc:zz"}`, "bad_request", "not subscribed"},
			{"too large", `{"op":"pub","id":17,"ch":"doc:1","data":"` + strings.Repeat("x", 2000) + `"}`, "too_large", "max_message_size"},
		}
		for _, tc := range cases {
			c.SendRaw(tc.send)
			e := c.NextOp("error")
			if e.Str("code") != tc.code || !strings.Contains(e.Str("message"), tc.msgHas) {
				t.Fatalf("%s: error = %v", tc.name, e)
			}
			c.MustCall("ping", nil, "pong") // still usable
		}
		// The id of a failing command is echoed.
		e := c.Call("dance", nil)
		if e.Op() != "error" {
			t.Fatalf("unknown op reply = %v", e)
		}
		// Subscription limits.
		c.Sub("doc:a")
		if r := c.Call("sub", map[string]any{"ch": "doc:a"}); r.Str("code") != "bad_request" || !strings.Contains(r.Str("message"), "already subscribed") {
			t.Fatalf("duplicate sub = %v", r)
		}
		c.Sub("doc:b")
		if r := c.Call("sub", map[string]any{"ch": "doc:c"}); r.Str("code") != "bad_request" || !strings.Contains(r.Str("message"), "max_subscriptions") {
			t.Fatalf("third sub = %v", r)
		}
		// A bad object in a batch does not swallow the good ones after it.
		c.SendRaw("{\"op\":\"ping\",\"id\":100}\n{broken\n{\"op\":\"ping\",\"id\":101}")
		c.Next(func(o wstest.Msg) bool { return o.Num("id") == 100 })
		c.NextOp("error")
		c.Next(func(o wstest.Msg) bool { return o.Num("id") == 101 })
		// Binary frames are refused, connection stays.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := c.Conn().Write(ctx, websocket.MessageBinary, []byte(`{"op":"ping"}`)); err != nil {
			t.Fatal(err)
		}
		if e := c.NextOp("error"); !strings.Contains(e.Str("message"), "binary") {
			t.Fatalf("binary = %v", e)
		}
		c.MustCall("ping", nil, "pong")
	})
}

func TestTooLargeFragmentedAndSplit(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) { c.Client.MaxMessageSize = 1024 })
		rc := rawDial(t, ts.addr, nil)
		// A 3-fragment message of 1500 bytes: too large in total.
		big := `{"op":"pub","ch":"doc:1","data":"` + strings.Repeat("y", 1450) + `"}`
		rc.writeFrame(0x1, false, []byte(big[:600]))
		rc.writeFrame(0x0, false, []byte(big[600:1200]))
		rc.writeFrame(0x0, true, []byte(big[1200:]))
		if e := rc.readObj(); !strings.Contains(e, `"too_large"`) {
			t.Fatalf("got %s", e)
		}
		// A fragmented message under the limit, with a ping in between.
		ok := `{"op":"ping","id":5}`
		rc.writeFrame(0x1, false, []byte(ok[:7]))
		rc.writeFrame(0x9, true, []byte("hi"))
		rc.writeFrame(0x0, true, []byte(ok[7:]))
		if f := rc.readFrame(); f.op != 0xA || string(f.payload) != "hi" {
			t.Fatalf("want pong hi, got %v", f)
		}
		if r := rc.readObj(); r != `{"op":"pong","id":5}` {
			t.Fatalf("got %s", r)
		}
		// One frame split into single bytes across writes.
		frame := rc.frameBytes(0x1, true, []byte(`{"op":"ping","id":6}`))
		for _, b := range frame {
			rc.write([]byte{b})
			time.Sleep(time.Millisecond)
		}
		if r := rc.readObj(); r != `{"op":"pong","id":6}` {
			t.Fatalf("got %s", r)
		}
	})
}

func TestProtocolViolationsClose(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		cases := []struct {
			name   string
			frame  func(rc *rawConn) []byte
			status uint16
		}{
			{"unmasked", func(rc *rawConn) []byte { return []byte{0x81, 0x02, '{', '}'} }, 1002},
			{"reserved opcode", func(rc *rawConn) []byte { return rc.frameBytes(0x3, true, nil) }, 1002},
			{"rsv bit", func(rc *rawConn) []byte { f := rc.frameBytes(0x1, true, []byte("{}")); f[0] |= 0x40; return f }, 1002},
			{"orphan continuation", func(rc *rawConn) []byte { return rc.frameBytes(0x0, true, []byte("x")) }, 1002},
			{"invalid utf8", func(rc *rawConn) []byte { return rc.frameBytes(0x1, true, []byte{'"', 0xff, '"'}) }, 1007},
		}
		for _, tc := range cases {
			rc := rawDial(t, ts.addr, nil)
			rc.write(tc.frame(rc))
			var sawDisconnect bool
			for {
				f := rc.readFrame()
				if f.op == 0x1 && strings.Contains(string(f.payload), `"disconnect"`) {
					// docs/protocol.md: code bad_request, reconnect false.
					if !strings.Contains(string(f.payload), `"code":"bad_request"`) || !strings.Contains(string(f.payload), `"reconnect":false`) {
						t.Fatalf("%s: disconnect = %s, want code bad_request, reconnect false", tc.name, f.payload)
					}
					sawDisconnect = true
					continue
				}
				if f.op != 0x8 {
					t.Fatalf("%s: unexpected frame %v", tc.name, f)
				}
				if got := binary.BigEndian.Uint16(f.payload); got != tc.status {
					t.Fatalf("%s: close status %d, want %d", tc.name, got, tc.status)
				}
				break
			}
			if !sawDisconnect {
				t.Fatalf("%s: no disconnect before close", tc.name)
			}
			rc.expectEOF()
		}
		// A client-initiated close is echoed.
		rc := rawDial(t, ts.addr, nil)
		rc.writeFrame(0x8, true, []byte{0x03, 0xe8, 'b', 'y', 'e'})
		if f := rc.readFrame(); f.op != 0x8 || binary.BigEndian.Uint16(f.payload) != 1000 {
			t.Fatalf("close echo = %v", f)
		}
		rc.expectEOF()
	})
}

// TestFirstFrameInHandshakePacket sends the upgrade request and a frame in
// one write: the frame must not be lost in the handshake's buffers.
func TestFirstFrameInHandshakePacket(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		rc := &rawConn{t: t}
		frame := rc.frameBytes(0x1, true, []byte(`{"op":"connect","id":1,"user":"eager"}`+"\n"+`{"op":"ping","id":2}`))
		rc = rawDial(t, ts.addr, frame)
		if r := rc.readObj(); !strings.Contains(r, `"connected"`) || !strings.Contains(r, `"eager"`) {
			t.Fatalf("got %s", r)
		}
		if r := rc.readObj(); r != `{"op":"pong","id":2}` {
			t.Fatalf("got %s", r)
		}
	})
}

func TestSlowConsumerIsDisconnected(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) { c.Client.MaxQueueBytes = 256 << 10 })
		// The kernel holds ~4 MB for the slow client when it is cut; on a
		// loaded machine reading that under -race can take over 1 s.
		gateway.SetCloseGraceForTest(ts.srv, 10*time.Second)
		// The slow client subscribes, then stops reading until it is cut.
		slow := rawDial(t, ts.addr, nil)
		slow.writeFrame(0x1, true, []byte(`{"op":"connect","id":1,"user":"slow"}`))
		slow.readObj()
		slow.writeFrame(0x1, true, []byte(`{"op":"sub","id":2,"ch":"doc:s"}`))
		slow.readObj()
		fast := dial(t, ts)
		fast.Sub("doc:s")
		pub := dial(t, ts)
		payload := strings.Repeat("z", 8000)
		const n = 1000 // 8 MB: more than socket buffers plus the 256 KiB queue
		// Poll for the cut: the test must start reading within closeGrace
		// of it, which a /metrics scrape per message is too slow for.
		var cutSeen atomic.Bool
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for !cutSeen.Load() {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				cutSeen.Store(gateway.ClosingForTest(ts.srv) > 0)
			}
		}()
		cut := 0
		for i := 1; i <= n && cut == 0; i++ {
			pub.SendRaw(fmt.Sprintf(`{"op":"pub","ch":"doc:s","data":"%s"}`, payload))
			if i%10 == 0 {
				// The publisher is never slowed by the slow client; the fast
				// one keeps up, so only the slow one overflows.
				for j := i - 9; j <= i; j++ {
					if m := fast.NextOp("msg"); m.Num("seq") != uint64(j) {
						t.Fatalf("fast subscriber got seq %d, want %d", m.Num("seq"), j)
					}
				}
			}
			if cutSeen.Load() {
				cut = i
			}
		}
		if cut == 0 {
			t.Fatalf("%d messages of 8000 bytes did not overflow a 256 KiB queue", n)
		}
		// The queue was dropped, the disconnect and close frames queued
		// behind what the socket and the writer already hold: a client
		// that reads them within closeGrace gets the disconnect and the
		// close frame after the msgs that were on their way, the stream
		// well formed (docs/protocol.md). Before the writer's in-flight
		// frames were kept by the drop, the goroutine mode counted the
		// disconnect and close frames as written and closed without them.
		// A 16 KiB receive buffer, once full, reopens by zero-window
		// probes (backing off to seconds): read with a normal one.
		slow.nc.(*net.TCPConn).SetReadBuffer(4 << 20)
		if before := slow.expectClose("slow_consumer", 1008); before == 0 {
			t.Fatal("no msg before the disconnect: the socket buffers were empty?")
		}
		slow.expectEOF()
		// The slow one was cut (its leave reached the fast one) while the
		// fast one received everything.
		l := fast.NextOp("leave")
		if l.Str("user") != "slow" {
			t.Fatalf("leave = %v", l)
		}
		waitFor(t, 5*time.Second, "slow connection closed", func() bool { return ts.srv.Connections() == 2 })
		// Counted where docs/security.md says: not a limit rejection.
		if v := scrape(t, ts, "syncgate_slow_consumer_disconnects_total"); v != 1 {
			t.Fatalf("syncgate_slow_consumer_disconnects_total = %v, want 1", v)
		}
		assertMetric(t, ts, `syncgate_disconnects_total{code="slow_consumer"}`, 1)
	})
}

// ---- a raw WebSocket client for frame-level tests ----

type rawConn struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

type rawFrame struct {
	op      byte
	fin     bool
	payload []byte
}

func (f rawFrame) String() string { return fmt.Sprintf("{op %x fin %v %q}", f.op, f.fin, f.payload) }

// rawDial performs the handshake by hand; extra is written in the same
// write as the request.
func rawDial(t testing.TB, addr string, extra []byte) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.(*net.TCPConn).SetReadBuffer(16 << 10) // a small window makes a non-reader fill up quickly
	t.Cleanup(func() { nc.Close() })
	key := make([]byte, 16)
	rand.Read(key)
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key) + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write(append([]byte(req), extra...)); err != nil {
		t.Fatal(err)
	}
	rc := &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("handshake status %d", resp.StatusCode)
	}
	return rc
}

func (rc *rawConn) frameBytes(op byte, fin bool, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xffff:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	mask := []byte{1, 2, 3, 4}
	f = append(f, mask...)
	for i, c := range payload {
		f = append(f, c^mask[i%4])
	}
	return f
}

func (rc *rawConn) write(b []byte) {
	rc.t.Helper()
	rc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.nc.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

func (rc *rawConn) writeFrame(op byte, fin bool, payload []byte) {
	rc.t.Helper()
	rc.write(rc.frameBytes(op, fin, payload))
}

func (rc *rawConn) readFrame() rawFrame {
	rc.t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(rc.br, h[:]); err != nil {
		rc.t.Fatalf("read frame: %v", err)
	}
	if h[1]&0x80 != 0 {
		rc.t.Fatal("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		io.ReadFull(rc.br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		io.ReadFull(rc.br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(rc.br, p); err != nil {
		rc.t.Fatalf("read payload: %v", err)
	}
	return rawFrame{op: h[0] & 0x0f, fin: h[0]&0x80 != 0, payload: p}
}

// readObj reads the next text frame and returns its payload.
func (rc *rawConn) readObj() string {
	rc.t.Helper()
	for {
		f := rc.readFrame()
		if f.op == 0x1 {
			return string(f.payload)
		}
	}
}

func (rc *rawConn) expectEOF() {
	rc.t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.br.ReadByte(); err == nil {
		rc.t.Fatal("expected the server to close the connection")
	}
}
