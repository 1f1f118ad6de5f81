package gateway_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// dialBinary opens a connection that asked for binary messages.
func dialBinary(t *testing.T, ts *testServer, user string) *wstest.Client {
	t.Helper()
	c := wstest.Dial(t, ts.url(), wstest.AcceptBinary())
	c.MustCall("connect", map[string]any{"user": user, "binary": true}, "connected")
	return c
}

// TestBinaryMessages (docs/protocol.md "Binary data"): a binary pub is
// acked and reaches a binary subscriber as bytes and a JSON subscriber
// (which never gets a binary message: wstest fails on one) as base64 under
// "bin"; fragmented binary messages work; the size limit counts the
// bytes as sent, not their base64.
func TestBinaryMessages(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) { c.Client.MaxMessageSize = 1024 })
		bc := dialBinary(t, ts, "ann")
		jc := dial(t, ts)
		jc.Connect("bob")
		bc.Sub("doc:b")
		jc.Sub("doc:b")

		data := []byte{0, '\n', 0xff, '"', '\\', 0xe2, 0x80, 0xa8}
		if r := bc.CallBinary("pub", map[string]any{"ch": "doc:b"}, data); r.Op() != "ack" || r.Num("seq") != 1 {
			t.Fatalf("binary pub = %v", r)
		}
		if m := bc.NextOp("msg"); !m.Binary() || !bytes.Equal(m.Bytes(), data) || m.Str("from") != "ann" || m.Num("seq") != 1 {
			t.Fatalf("binary subscriber got %v", m)
		}
		if m := jc.NextOp("msg"); m.Binary() || m.Str("bin") != base64.StdEncoding.EncodeToString(data) || m.Str("from") != "ann" {
			t.Fatalf("JSON subscriber got %v", m)
		}

		// A fragmented binary message: header in the first fragment,
		// bytes in the next.
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		w, err := bc.Conn().Writer(ctx, websocket.MessageBinary)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(`{"op":"pub","id":50,"ch":"doc:b"}` + "\n"))
		w.Write([]byte("part two"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if r := bc.Next(func(m wstest.Msg) bool { return m.Num("id") == 50 }); r.Op() != "ack" {
			t.Fatalf("fragmented binary pub = %v", r)
		}
		if m := jc.NextOp("msg"); string(m.Bytes()) != "part two" {
			t.Fatalf("fragmented: JSON subscriber got %v", m)
		}

		// 980 raw bytes fit client.max_message_size (1024) with their
		// header, though their base64 (1308 bytes) would not.
		big := bytes.Repeat([]byte{0xab}, 980)
		if r := bc.CallBinary("pub", map[string]any{"ch": "doc:b"}, big); r.Op() != "ack" {
			t.Fatalf("980-byte binary pub = %v", r)
		}
		if m := jc.NextOp("msg"); !bytes.Equal(m.Bytes(), big) {
			t.Fatalf("JSON subscriber got %d bytes", len(m.Bytes()))
		}
		// Past the limit: too_large, the connection stays usable.
		bc.SendBinary(map[string]any{"op": "pub", "id": 60, "ch": "doc:b"}, bytes.Repeat([]byte{1}, 1024))
		if e := bc.NextOp("error"); e.Str("code") != "too_large" {
			t.Fatalf("oversize binary = %v", e)
		}
		bc.MustCall("ping", nil, "pong")
	})
}

// TestBinaryMalformed: a malformed binary message is answered with
// bad_request (carrying the header's id when it can be read) and the
// connection stays usable; so is a bad "bin" in a JSON command.
func TestBinaryMalformed(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		c := dialBinary(t, ts, "ann")
		c.Sub("doc:m")
		cases := []struct {
			name, msg string
			id        uint64
			has       string
		}{
			{"no newline", `{"op":"pub","id":1,"ch":"doc:m"}`, 1, "newline"},
			{"header not JSON", "{\"op\":\"pub\",\"id\":2,\"ch\":\n\x00", 2, "JSON"},
			{"header not an object", "[1]\nx", 0, "object"},
			{"not pub or snap", "{\"op\":\"ping\",\"id\":3}\nx", 3, `"pub" or "snap"`},
			{"data in the header", "{\"op\":\"pub\",\"id\":4,\"ch\":\"doc:m\",\"data\":1}\nx", 4, `no "data"`},
			{"bin in the header", "{\"op\":\"pub\",\"id\":5,\"ch\":\"doc:m\",\"bin\":\"\"}\nx", 5, `no "data"`},
			{"header not UTF-8", "{\"op\":\"pub\",\"id\":6,\"ch\":\"\xff\"}\nx", 6, "JSON"},
			{"bad channel", "{\"op\":\"pub\",\"id\":7,\"ch\":\"a b\"}\nx", 7, "channel"},
			{"two objects", "{\"op\":\"pub\",\"id\":8} {\"op\":\"pub\"}\nx", 8, "after"},
			{"empty", "", 0, "newline"},
		}
		for _, tc := range cases {
			c.SendBinaryRaw([]byte(tc.msg))
			e := c.NextOp("error")
			if e.Str("code") != "bad_request" || e.Num("id") != tc.id || !strings.Contains(e.Str("message"), tc.has) {
				t.Fatalf("%s: %v, want bad_request id %d containing %q", tc.name, e, tc.id, tc.has)
			}
		}
		for _, bad := range []map[string]any{
			{"ch": "doc:m", "bin": "aGk"},
			{"ch": "doc:m", "bin": "a\nk="},
			{"ch": "doc:m", "bin": 5},
			{"ch": "doc:m", "bin": "aGk=", "data": 1},
		} {
			if e := c.MustCall("pub", bad, "error"); e.Str("code") != "bad_request" {
				t.Fatalf("pub %v = %v", bad, e)
			}
		}
		c.MustCall("ping", nil, "pong")
		// Nothing of it was published.
		c.None(100*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })
		if r := c.CallBinary("pub", map[string]any{"ch": "doc:m"}, []byte("ok")); r.Op() != "ack" || r.Num("seq") != 1 {
			t.Fatalf("good binary pub after the bad ones = %v", r)
		}
	})
}

// TestBinarySnap: snap with bytes (binary message or "bin"), the limit on
// the bytes, served to a binary client as bytes and to a JSON one as
// base64; a hostile binary snapshot in the broker is ignored.
func TestBinarySnap(t *testing.T) {
	ts := startServer(t, "epoll", func(c *config.Config) { c.History.SnapshotMaxBytes = 1024 })
	c := dialBinary(t, ts, "ann")
	epoch := c.Sub("doc:s").Str("epoch")
	for i := 1; i <= 3; i++ {
		c.Pub("doc:s", i)
	}
	at := map[string]any{"ch": "doc:s", "at": since(2, epoch)}
	if e := c.CallBinary("snap", at, bytes.Repeat([]byte{7}, 1025)); e.Str("code") != "too_large" {
		t.Fatalf("1025-byte binary snap = %v", e)
	}
	state := bytes.Repeat([]byte{0, '\n', 0xff}, 341) // 1023 bytes; base64 1364 > 1024
	if r := c.CallBinary("snap", at, state); r.Op() != "snapped" || r["stored"] != true {
		t.Fatalf("binary snap = %v", r)
	}
	if r := c.MustCall("snap", map[string]any{"ch": "doc:s", "at": since(3, epoch), "bin": base64.StdEncoding.EncodeToString([]byte("three"))}, "snapped"); r["stored"] != true || r.Num("seq") != 3 {
		t.Fatalf("JSON bin snap = %v", r)
	}
	b := dialBinary(t, ts, "late")
	b.Send(map[string]any{"op": "sub", "id": 1, "ch": "doc:s", "snapshot": true, "since": since(0, "other")})
	if m := b.Next(func(wstest.Msg) bool { return true }); m.Op() != "snapshot" || !m.Binary() || string(m.Bytes()) != "three" || m.Num("seq") != 3 {
		t.Fatalf("binary client's snapshot = %v", m)
	}
	j := dial(t, ts)
	j.Send(map[string]any{"op": "sub", "id": 1, "ch": "doc:s", "snapshot": true})
	if m := j.Next(func(wstest.Msg) bool { return true }); m.Op() != "snapshot" || m.Str("bin") != base64.StdEncoding.EncodeToString([]byte("three")) {
		t.Fatalf("JSON client's snapshot = %v", m)
	}

	// Hostile: a binary snapshot over history.snapshot_max_bytes written
	// straight into the broker is not served.
	h := dial(t, ts)
	epoch2 := h.Sub("doc:h").Str("epoch")
	h.Pub("doc:h", 1)
	if _, _, err := ts.broker.StoreSnapshot(t.Context(), "doc:h", brokers.Snapshot{Seq: 1, Epoch: epoch2, Data: append([]byte{0}, bytes.Repeat([]byte{1}, 1025)...)}); err != nil {
		t.Fatal(err)
	}
	v := dial(t, ts)
	v.Send(map[string]any{"op": "sub", "id": 1, "ch": "doc:h", "snapshot": true})
	if m := v.Next(func(wstest.Msg) bool { return true }); m.Op() != "subscribed" {
		t.Fatalf("hostile snapshot served: %v", m)
	}
}

// TestHTTPPubBinary: POST /pub takes "bin" (base64); subscribers get a
// binary publication; bad base64 is 400.
func TestHTTPPubBinary(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	c := dialBinary(t, ts, "ann")
	c.Sub("doc:p")
	post := func(body string) (int, string) {
		resp, err := http.Post("http://"+ts.addr+"/pub?user=web", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(`{"ch":"doc:p","bin":"AP8K"}`); code != 200 || !strings.Contains(body, `"seq":1`) {
		t.Fatalf("POST /pub bin = %d %s", code, body)
	}
	if m := c.NextOp("msg"); !m.Binary() || !bytes.Equal(m.Bytes(), []byte{0, 0xff, '\n'}) {
		t.Fatalf("subscriber got %v", m)
	}
	for _, bad := range []string{`{"ch":"doc:p","bin":"AP8"}`, `{"ch":"doc:p","bin":"AP8K","data":1}`, `{"ch":"doc:p","bin":7}`} {
		if code, body := post(bad); code != 400 || !strings.Contains(body, "bad_request") {
			t.Fatalf("POST /pub %s = %d %s", bad, code, body)
		}
	}
}

// TestBinaryWireBytes measures the bytes on the wire (WebSocket frame
// headers included, client frames masked) of one 25-byte Yjs-like update
// published three ways: a binary message, JSON with the bytes as base64
// "bin" (both make the same binary publication: a binary client receives
// a binary message, a JSON client base64), and JSON with the bytes as an
// array of numbers (a JSON publication, the same for every client).
// docs/protocol.md quotes its log (go test -run TestBinaryWireBytes -v
// ./gateway/); it fails unless the binary form is the smallest both ways.
func TestBinaryWireBytes(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	update := []byte{1, 1, 209, 230, 163, 197, 8, 0, 4, 1, 4, 116, 101, 120, 116, 1, 97, 0, 0, 0, 0, 0, 0, 0, 0}[:25]
	json := rawDial(t, ts.addr, nil)
	bin := rawDial(t, ts.addr, nil)
	pub := rawDial(t, ts.addr, nil)
	for _, c := range []struct {
		rc   *rawConn
		user string
		bin  bool
	}{{json, "bob", false}, {bin, "carol", true}, {pub, "alice", true}} {
		c.rc.writeFrame(0x1, true, []byte(`{"op":"connect","id":1,"user":"`+c.user+`","binary":`+map[bool]string{true: "true", false: "false"}[c.bin]+`}`))
		c.rc.readObj()
		c.rc.writeFrame(0x1, true, []byte(`{"op":"sub","id":2,"ch":"doc:123"}`))
		c.rc.readObj()
	}
	arr := strings.ReplaceAll(fmtBytes(update), " ", ",")
	ways := []struct {
		name  string
		frame []byte
	}{
		{"binary message", pub.frameBytes(0x2, true, append([]byte(`{"op":"pub","id":3,"ch":"doc:123"}`+"\n"), update...))},
		{"JSON, base64 bin", pub.frameBytes(0x1, true, []byte(`{"op":"pub","id":3,"ch":"doc:123","bin":"`+base64.StdEncoding.EncodeToString(update)+`"}`))},
		{"JSON, array of numbers", pub.frameBytes(0x1, true, []byte(`{"op":"pub","id":3,"ch":"doc:123","data":[`+arr+`]}`))},
	}
	var up, downBin, downJSON [3]int
	for i, w := range ways {
		pub.write(w.frame)
		up[i] = len(w.frame)
		// The publisher's own msg and ack.
		nextMsg(pub)
		// What a binary client and a JSON client receive.
		fb := nextMsg(bin)
		fj := nextMsg(json)
		downBin[i] = 2 + len(fb.payload)
		downJSON[i] = 2 + len(fj.payload)
		if len(fb.payload) >= 126 {
			downBin[i] += 2
		}
		if len(fj.payload) >= 126 {
			downJSON[i] += 2
		}
		t.Logf("%-24s client->server %3d bytes; server->binary client %3d; server->JSON client %3d", w.name, up[i], downBin[i], downJSON[i])
	}
	// The first two publish the same binary publication; the third is a
	// JSON one. Down: bytes to a binary client, base64 to a JSON one.
	if !(up[0] < up[1] && up[1] < up[2]) || downBin[0] != downBin[1] || !(downBin[0] < downJSON[0] && downJSON[0] < downJSON[2]) {
		t.Fatalf("binary is not the smallest: up %v, down to a binary client %v, to a JSON client %v", up, downBin, downJSON)
	}
}

// nextMsg reads frames up to the next msg (skipping join, ack, ...).
func nextMsg(rc *rawConn) rawFrame {
	for {
		f := rc.readFrame()
		if bytes.HasPrefix(f.payload, []byte(`{"op":"msg"`)) {
			return f
		}
	}
}

func fmtBytes(b []byte) string {
	s := make([]string, len(b))
	for i, c := range b {
		s[i] = strconv.Itoa(int(c))
	}
	return strings.Join(s, " ")
}
