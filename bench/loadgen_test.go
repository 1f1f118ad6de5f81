//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// TestFrameReader feeds a subscriber's frame reader the frames a server may
// send: a text message, a binary one (skipped), a ping between the two
// fragments of a text message (answered with a pong, the fragments
// joined), an oversized message and a close.
func TestFrameReader(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	defer cli.Close()
	c := &client{nc: cli, r: bufio.NewReader(cli)}
	var wire bytes.Buffer
	for _, f := range []ws.Frame{
		ws.NewTextFrame([]byte(`{"op":"msg","a":1}`)),
		ws.NewBinaryFrame([]byte{1, 2, 3}),
		ws.NewFrame(ws.OpText, false, []byte(`{"op":"msg",`)),
		ws.NewPingFrame([]byte("p1")),
		ws.NewFrame(ws.OpContinuation, true, []byte(`"b":2}`)),
		{Header: ws.Header{Fin: true, OpCode: ws.OpText, Length: maxMessage + 1}},
	} {
		if err := ws.WriteFrame(&wire, f); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _, _ = srv.Write(wire.Bytes()) }()
	pong := make(chan ws.Frame, 1)
	go func() {
		f, err := ws.ReadFrame(srv)
		if err == nil && f.Header.Masked {
			f = ws.UnmaskFrameInPlace(f)
		}
		pong <- f
	}()
	var fr frameReader
	for _, want := range []string{`{"op":"msg","a":1}`, `{"op":"msg","b":2}`} {
		got, err := fr.next(c)
		if err != nil || string(got) != want {
			t.Fatalf("next: %q, %v; want %q", got, err, want)
		}
	}
	select {
	case f := <-pong:
		if f.Header.OpCode != ws.OpPong || string(f.Payload) != "p1" {
			t.Errorf("answer to the ping: %v %q", f.Header.OpCode, f.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
	if _, err := fr.next(c); err == nil || !strings.Contains(err.Error(), "message over") {
		t.Errorf("oversized message: %v", err)
	}

	// A close frame ends the connection with its code.
	var fr2 frameReader
	c.r = bytes.NewReader(ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "bye"))))
	if _, err := fr2.next(c); err == nil || !strings.Contains(err.Error(), "1001 bye") {
		t.Errorf("close: %v", err)
	}
	// A continuation with no message started is a protocol error.
	c.r = bytes.NewReader(ws.MustCompileFrame(ws.NewFrame(ws.OpContinuation, true, []byte("x"))))
	if _, err := fr2.next(c); err == nil {
		t.Error("stray continuation accepted")
	}
}

// BenchmarkSubscriberRead: what the subscriber's read path costs per
// delivery, the frame reader against wsutil.ReadServerData (which it
// replaced), both scanning the message with parseMsg.
func BenchmarkSubscriberRead(b *testing.B) {
	msg := ws.MustCompileFrame(ws.NewTextFrame([]byte(`{"op":"msg","ch":"bench-3","seq":17,"epoch":"e1","from":"pub-3","data":{"id":17,"t":1795000000123456789}}`)))
	src := bytes.NewReader(nil)
	c := &client{r: src}
	for _, bc := range []struct {
		name string
		read func() ([]byte, error)
	}{
		{"frameReader", func() func() ([]byte, error) { var fr frameReader; return func() ([]byte, error) { return fr.next(c) } }()},
		{"wsutil", func() ([]byte, error) {
			d, _, err := wsutil.ReadServerData(struct {
				io.Reader
				io.Writer
			}{src, io.Discard})
			return d, err
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var m srvMsg
			for b.Loop() {
				src.Reset(msg)
				data, err := bc.read()
				if err != nil || !parseMsg(data, &m) {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	if percentile(ds, 99) != 10 || percentile(ds, 50) != 5 || percentile(ds, 0) != 1 || percentile(nil, 99) != 0 {
		t.Errorf("percentile: p99 %v p50 %v p0 %v", percentile(ds, 99), percentile(ds, 50), percentile(ds, 0))
	}
}

// TestPubFrames: the frames a publisher builds decode to the JSON fmt
// would make, masked as a client must, and building one allocates
// nothing once the buffers have grown.
func TestPubFrames(t *testing.T) {
	f := newPubFrames("bench-3", `,"pad":"xx"`)
	for _, id := range []int{1, 12345} {
		fr, err := ws.ReadFrame(bytes.NewReader(f.build(id, 1795000000123456789)))
		if err != nil || !fr.Header.Masked || fr.Header.OpCode != ws.OpText || !fr.Header.Fin {
			t.Fatalf("frame %d: %+v, %v", id, fr.Header, err)
		}
		fr = ws.UnmaskFrameInPlace(fr)
		want := fmt.Sprintf(`{"op":"pub","id":%d,"ch":"bench-3","data":{"id":%d,"t":1795000000123456789,"pad":"xx"}}`, id, id)
		if string(fr.Payload) != want {
			t.Errorf("payload %s, want %s", fr.Payload, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { f.build(777, 1795000000123456789) }); n != 0 {
		t.Errorf("%v allocs per frame, want 0", n)
	}
}
