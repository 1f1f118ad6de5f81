package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
)

// fuzzStream turns fuzz bytes into a stream of client frames, 3 bytes of
// spec each: opcode and flags, payload kind, payload length. Payloads are
// pings commands, garbage, or empty; lengths reach past
// client.max_message_size (256 here) so oversize frames are discarded.
// Some frames are invalid (unmasked, reserved opcode, orphan continuation),
// which closes the connection: what follows must then be ignored alike.
func fuzzStream(spec []byte) []byte {
	var out []byte
	for i := 0; i+3 <= len(spec) && len(out) < 64<<10; i += 3 {
		opSel, kind, n := spec[i], spec[i+1], int(spec[i+2])
		ops := []byte{0x1, 0x1, 0x0, 0x0, 0x9, 0xA, 0x2, 0x3, 0x8}
		op := ops[int(opSel&0x0f)%len(ops)]
		fin := opSel&0x10 == 0
		masked := opSel&0xe0 != 0xe0
		var p []byte
		switch kind % 4 {
		case 0:
			p = []byte(`{"op":"ping","id":` + itoa(int(kind)+1) + `}`)
		case 1:
			p = bytes.Repeat([]byte{'x'}, n)
		case 2:
			p = bytes.Repeat([]byte{' '}, n*2) // up to 510: past the limit
		case 3:
			p = []byte(`{"op":"ping"}` + "\n")
		}
		if op >= 0x8 && len(p) > 125 {
			p = p[:125]
		}
		b0 := op
		if fin || op >= 0x8 {
			b0 |= 0x80
		}
		out = append(out, b0)
		mbit := byte(0)
		if masked {
			mbit = 0x80
		}
		switch {
		case len(p) < 126:
			out = append(out, mbit|byte(len(p)))
		default:
			out = append(out, mbit|126)
			out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		}
		mask := [4]byte{kind, 7, byte(n), 1}
		if masked {
			out = append(out, mask[:]...)
		}
		for j, c := range p {
			if masked {
				c ^= mask[j%4]
			}
			out = append(out, c)
		}
	}
	return out
}

// FuzzSplitFrames feeds the same stream of frames to two connections, whole
// and cut into the pieces cuts describes: what each is sent back, and
// whether it is closed, must be the same; a connection whose read state is
// idle holds no partial bytes, and the node's count is the sum of what its
// connections hold.
func FuzzSplitFrames(f *testing.F) {
	f.Add([]byte{0x01, 0, 0, 0x11, 1, 200, 0x02, 1, 100, 0x04, 3, 0}, []byte{1, 2, 3, 7, 1})
	f.Add([]byte{0x11, 2, 200, 0x02, 2, 200, 0x12, 1, 5, 0x02, 0, 0}, []byte{9, 1, 1, 255})
	f.Add([]byte{0x01, 0, 0, 0xe1, 0, 0, 0x01, 0, 0}, []byte{3})
	f.Add([]byte{0x11, 0, 0, 0x04, 1, 20, 0x02, 3, 0, 0x05, 1, 0}, []byte{1})
	f.Fuzz(func(t *testing.T, spec, cuts []byte) {
		stream := fuzzStream(spec)
		if len(stream) == 0 {
			return
		}
		var cfg Config
		cfg.Server.IO = "goroutine"
		cfg.Client.MaxMessageSize = 256
		cfg.Client.MaxQueueBytes = 16 << 20
		cfg.Client.ControlFrameRate = -1
		cfg.Server.DrainWindow = 10 * time.Millisecond
		cfg.Presence.NoJoinLeave = true
		srv, err := New(cfg, memory.New(memory.Config{}), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			if n := srv.partialBytes.Load(); n != 0 {
				t.Fatalf("%d partial bytes still counted after every connection was cleaned up", n)
			}
		}()
		newConn := func() *conn {
			a, b := net.Pipe()
			b.Close()
			c := srv.newConn(a, false)
			c.connected = true // replies carry no client id
			return c
		}
		whole, split := newConn(), newConn()
		defer whole.fail()
		defer split.fail()
		whole.onData(newScratch(0)(), bytes.Clone(stream))
		s := newScratch(0)()
		rest := bytes.Clone(stream)
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(cuts) > 0 {
				n = min(max(int(cuts[i%len(cuts)]), 1), n)
			}
			split.onData(s, rest[:n])
			rest = rest[n:]
			w, sp := partialHeld(whole.partial.Load()), partialHeld(split.partial.Load())
			if split.fs == nil && split.partial.Load() != 0 {
				t.Fatalf("idle read state: partial word %x", split.partial.Load())
			}
			if split.fs != nil && sp != int64(cap(split.fs.pending)+cap(split.fs.frag)) {
				t.Fatalf("read state holds %d+%d bytes, %d counted", cap(split.fs.pending), cap(split.fs.frag), sp)
			}
			if held := srv.partialBytes.Load(); held != w+sp {
				t.Fatalf("node counts %d partial bytes, its connections hold %d + %d", held, w, sp)
			}
		}
		if a, b := queued(whole), queued(split); !bytes.Equal(a, b) {
			t.Fatalf("stream %x\nwhole sent %q\nsplit sent %q", stream, a, b)
		}
		if whole.isClosing() != split.isClosing() {
			t.Fatalf("closing: whole %v, split %v", whole.isClosing(), split.isClosing())
		}
		if (whole.fs == nil) != (split.fs == nil) {
			t.Fatalf("read state: whole %+v, split %+v", whole.fs, split.fs)
		}
	})
}

// queued is every frame waiting in c's outbound queue, concatenated.
func queued(c *conn) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b []byte
	for _, f := range c.out[c.head:] {
		b = append(b, f...)
	}
	return b
}

// BenchmarkReadFrames is the read path for tiny frames: one op is one read
// of 4 KiB of empty text frames and pongs (nothing is sent back). whole:
// reads end on a frame boundary; split: every read ends inside a frame,
// which the connection must keep until the next read (one small
// allocation, the frame's exact size).
func BenchmarkReadFrames(b *testing.B) {
	for _, split := range []bool{false, true} {
		name := "whole"
		if split {
			name = "split"
		}
		b.Run(name, func(b *testing.B) {
			var cfg Config
			cfg.Server.IO = "goroutine"
			cfg.Client.ControlFrameRate = -1
			cfg.Server.DrainWindow = 10 * time.Millisecond
			srv, err := New(cfg, memory.New(memory.Config{}), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(ctx)
			}()
			a, p := net.Pipe()
			p.Close()
			c := srv.newConn(a, false)
			defer c.fail()
			c.connected = true
			frames := []byte{0x81, 0x80, 0, 0, 0, 0, 0x8A, 0x80, 0, 0, 0, 0}
			stream := bytes.Repeat(frames, 4096/len(frames)+1)
			chunk := 4096 - 4096%len(frames) // whole frames
			if split {
				chunk = 4096 // a read ends 4 bytes into a frame
			}
			s := newScratch(0)()
			buf := make([]byte, chunk)
			off := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				copy(buf, stream[off:]) // onData unmasks in place
				c.onData(s, buf)
				off = (off + chunk) % len(frames)
			}
			b.StopTimer()
			if c.isClosing() {
				b.Fatal("connection closed")
			}
		})
	}
}

// TestFrameTimedOutClock checks the 32-bit millisecond clock of partial
// frames: across its wrap, and with a start stamped after the sweep read
// the clock.
func TestFrameTimedOutClock(t *testing.T) {
	var cfg Config
	cfg.Client.FrameTimeout = time.Second
	c := &conn{srv: &Server{cfg: cfg.WithDefaults()}}
	for _, tc := range []struct {
		at, now uint32
		held    int64
		want    bool
	}{
		{0, 5000, 0, false},                 // no partial frame
		{1001, 2001, 10, false},             // exactly the timeout
		{1001, 2003, 10, true},              // past it
		{0xffffff01, 900, 0, true},          // past it, across the wrap (a discard holds 0 bytes)
		{0xffffff01, 100, 0, false},         // within it, across the wrap
		{5001, 4999, maxPartialHeld, false}, // stamped after the sweep's clock
	} {
		c.partial.Store(partialWord(tc.at, tc.held))
		if got := c.frameTimedOut(tc.now); got != tc.want {
			t.Errorf("started %#x, now %#x: timed out %v, want %v", tc.at, tc.now, got, tc.want)
		}
		if h := partialHeld(c.partial.Load()); h != tc.held {
			t.Errorf("held %d, want %d", h, tc.held)
		}
	}
	c.partial.Store(partialReleased | partialWord(1, 5))
	if c.frameTimedOut(1 << 20) {
		t.Error("a released connection timed out")
	}
}
