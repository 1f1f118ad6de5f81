package multinode_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestBinaryAcrossNodes (docs/protocol.md "Binary data"): a binary
// publisher on node A; a binary subscriber on A and on B gets the bytes
// in binary messages, a JSON subscriber on B the same publication with
// the bytes as base64 under "bin" and never a binary message (wstest
// fails on one it did not accept); a late subscriber on B catches up on
// the binary messages (bin in pubs); a binary snapshot stored on A is
// served on B as bytes to a binary client and as base64 to a JSON one;
// SSE gets "bin" too.
func TestBinaryAcrossNodes(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{})
		binaryAcrossNodes(t, func() brokers.Broker {
			return redis.New(redis.Config{Addrs: []string{srv.Addr()}, HistorySize: 10})
		})
	})
	t.Run("jetstream", func(t *testing.T) {
		srv := natstest.RunServer(t)
		binaryAcrossNodes(t, func() brokers.Broker {
			return jetstream.New(jetstream.Config{URL: srv.URL(), HistorySize: 10})
		})
	})
}

func binaryAcrossNodes(t *testing.T, nb func() brokers.Broker) {
	a, b := startNode(t, nb(), nil), startNode(t, nb(), nil)
	const ch = "doc.bin"
	binClient := func(n *node, user string) *wstest.Client {
		c := wstest.Dial(t, "ws://"+n.addr+"/ws", wstest.AcceptBinary())
		c.MustCall("connect", map[string]any{"user": user, "binary": true}, "connected")
		return c
	}
	pubA := binClient(a, "ann")
	subA := binClient(a, "sub-a")
	subB := binClient(b, "sub-b")
	jsonB := wstest.Dial(t, "ws://"+b.addr+"/ws")
	jsonB.Connect("json-b")
	epoch := pubA.Sub(ch).Str("epoch")
	subA.Sub(ch)
	subB.Sub(ch)
	jsonB.Sub(ch)

	// Bytes no JSON string could carry as they are: NUL, '\n', invalid
	// UTF-8, a quote.
	update := []byte{0x00, '\n', 0xff, 0xfe, '"', 0x01, 0x0a, 0x80}
	ack := pubA.CallBinary("pub", map[string]any{"ch": ch}, update)
	if ack.Op() != "ack" || ack.Num("seq") != 1 {
		t.Fatalf("binary pub = %v, want ack seq 1", ack)
	}
	for _, c := range []*wstest.Client{pubA, subA, subB} {
		m := c.NextOp("msg")
		if !m.Binary() || !bytes.Equal(m.Bytes(), update) || m.Num("seq") != 1 || m.Str("from") != "ann" || m.Str("epoch") != epoch {
			t.Fatalf("binary subscriber got %v (binary %v), want the bytes %q in a binary message", m, m.Binary(), update)
		}
	}
	j := jsonB.NextOp("msg")
	if j.Binary() || j.Str("bin") != base64.StdEncoding.EncodeToString(update) || j["data"] != nil || j.Str("from") != "ann" || j.Num("seq") != 1 {
		t.Fatalf("JSON subscriber got %v, want bin = base64 of the bytes", j)
	}

	// A JSON publisher can send bytes too (base64 "bin"); a binary
	// subscriber gets them as bytes.
	jsonB.MustCall("pub", map[string]any{"ch": ch, "bin": base64.StdEncoding.EncodeToString([]byte("from json"))}, "ack")
	for _, c := range []*wstest.Client{subA, subB} {
		if m := c.NextOp("msg"); !m.Binary() || string(m.Bytes()) != "from json" {
			t.Fatalf("binary subscriber got %v for a JSON bin publish", m)
		}
	}
	// JSON data stays JSON for everybody, binary clients included.
	pubA.MustCall("pub", map[string]any{"ch": ch, "data": map[string]any{"k": "v"}}, "ack")
	if m := subB.NextOp("msg"); m.Binary() || m.Num("seq") != 3 {
		t.Fatalf("binary client got %v for JSON data, want a text msg", m)
	}

	// Catch-up over JSON carries the binary flag: bin in pubs.
	late := binClient(b, "late")
	r := late.MustCall("sub", map[string]any{"ch": ch, "since": map[string]any{"seq": 0, "epoch": epoch}}, "subscribed")
	pubs, _ := r["pubs"].([]any)
	if r["recovered"] != true || len(pubs) != 3 {
		t.Fatalf("catch-up = %v, want 3 pubs", r)
	}
	if p := wstest.Msg(pubs[0].(map[string]any)); !bytes.Equal(p.Bytes(), update) || p["data"] != nil {
		t.Fatalf("catch-up pubs[0] = %v, want bin of the update", p)
	}
	// Streamed catch-up too.
	streamed := wstest.Dial(t, "ws://"+b.addr+"/ws")
	streamed.Send(map[string]any{"op": "sub", "id": 1, "ch": ch, "since": map[string]any{"seq": 0, "epoch": epoch}, "stream": true})
	got := collectStream(t, streamed, ch)
	if len(got) != 3 || !bytes.Equal(got[0].Bytes(), update) || string(got[1].Bytes()) != "from json" {
		t.Fatalf("streamed catch-up = %v", got)
	}

	// A binary snapshot through A, served on B: bytes to a binary
	// client, base64 to a JSON one, then the tail.
	snap := []byte{0xde, 0xad, '\n', 0x00, 0xbe, 0xef}
	if r := pubA.CallBinary("snap", map[string]any{"ch": ch, "at": map[string]any{"seq": 2, "epoch": epoch}}, snap); r.Op() != "snapped" || r["stored"] != true || r.Num("seq") != 2 {
		t.Fatalf("binary snap = %v", r)
	}
	bs := binClient(b, "bs")
	bs.Send(map[string]any{"op": "sub", "id": 1, "ch": ch, "snapshot": true})
	if m := bs.Next(func(wstest.Msg) bool { return true }); m.Op() != "snapshot" || !m.Binary() || !bytes.Equal(m.Bytes(), snap) || m.Num("seq") != 2 {
		t.Fatalf("binary client's snapshot = %v, want the bytes", m)
	}
	if m := bs.NextOp("subscribed"); m["recovered"] != true || len(m["pubs"].([]any)) != 1 {
		t.Fatalf("after the snapshot = %v, want seq 3", m)
	}
	js := wstest.Dial(t, "ws://"+b.addr+"/ws")
	js.Send(map[string]any{"op": "sub", "id": 1, "ch": ch, "snapshot": true})
	if m := js.Next(func(wstest.Msg) bool { return true }); m.Op() != "snapshot" || m.Binary() || m.Str("bin") != base64.StdEncoding.EncodeToString(snap) || m["data"] != nil {
		t.Fatalf("JSON client's snapshot = %v, want bin", m)
	}

	// SSE: bin, never raw bytes.
	resp, err := http.Get("http://" + b.addr + "/sse?ch=" + ch + "&since=0:" + epoch)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 0, 4096)
	want := `"bin":"` + base64.StdEncoding.EncodeToString(update) + `"`
	for !strings.Contains(string(buf), want) {
		chunk := make([]byte, 1024)
		n, err := resp.Body.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if err == io.EOF || err != nil && n == 0 || len(buf) > 64<<10 {
			t.Fatalf("SSE stream without %s: %q (%v)", want, buf, err)
		}
	}
}

// collectStream reads a streamed catch-up's msgs up to caught_up.
func collectStream(t *testing.T, c *wstest.Client, ch string) []wstest.Msg {
	t.Helper()
	var out []wstest.Msg
	for {
		m := c.Next(func(m wstest.Msg) bool { return m.Str("ch") == ch })
		switch m.Op() {
		case "subscribed":
			for _, p := range m["pubs"].([]any) {
				out = append(out, wstest.Msg(p.(map[string]any)))
			}
			if m["more"] != true {
				return out
			}
		case "msg":
			out = append(out, m)
		case "caught_up":
			return out
		}
	}
}
