package gateway

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// maxFrameHeader is the largest server frame header: no mask, 64-bit length.
const maxFrameHeader = 10

// frameBuilder builds one unmasked server text frame in a single allocation:
// the payload is appended after room reserved for the header, and finish
// writes the header right in front of it. The result is immutable and shared
// by every connection it is queued on.
type frameBuilder struct{ b []byte }

func newFrameBuilder(sizeHint int) frameBuilder {
	b := make([]byte, maxFrameHeader, maxFrameHeader+sizeHint)
	return frameBuilder{b}
}

func (f *frameBuilder) finish(op ws.OpCode) []byte {
	n := len(f.b) - maxFrameHeader
	var hdr int
	switch {
	case n < 126:
		hdr = 2
		f.b[maxFrameHeader-1] = byte(n)
	case n <= 0xffff:
		hdr = 4
		f.b[maxFrameHeader-3] = 126
		binary.BigEndian.PutUint16(f.b[maxFrameHeader-2:], uint16(n))
	default:
		hdr = 10
		f.b[maxFrameHeader-9] = 127
		binary.BigEndian.PutUint64(f.b[maxFrameHeader-8:], uint64(n))
	}
	start := maxFrameHeader - hdr
	f.b[start] = 0x80 | byte(op) // FIN + opcode
	return f.b[start:]
}

// textFrame wraps payload (one or more JSON objects) in a text frame.
func textFrame(payload []byte) []byte {
	f := newFrameBuilder(len(payload))
	f.b = append(f.b, payload...)
	return f.finish(ws.OpText)
}

// controlFrame builds a close/ping/pong frame (payload <= 125 bytes).
func controlFrame(op ws.OpCode, payload []byte) []byte {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	b := make([]byte, 2, 2+len(payload))
	b[0] = 0x80 | byte(op)
	b[1] = byte(len(payload))
	return append(b, payload...)
}

func closeFrame(code ws.StatusCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	return controlFrame(ws.OpClose, ws.NewCloseFrameBody(code, reason))
}

// clientHeader is a parsed frame header from a client.
type clientHeader struct {
	fin    bool
	rsv    byte
	op     ws.OpCode
	masked bool
	mask   [4]byte
	length int64
	size   int // header bytes
}

// parseHeader parses a client frame header from b. ok is false when b does
// not hold the whole header yet.
func parseHeader(b []byte) (h clientHeader, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = (b[0] & 0x70) >> 4
	h.op = ws.OpCode(b[0] & 0x0f)
	h.masked = b[1]&0x80 != 0
	size := 2
	l := int64(b[1] & 0x7f)
	switch l {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if h.masked {
		size += 4
	}
	if len(b) < size {
		return h, false, nil
	}
	switch l {
	case 126:
		l = int64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, false, ws.ErrHeaderLengthMSB
		}
		l = int64(u)
	}
	h.length = l
	if h.masked {
		copy(h.mask[:], b[size-4:size])
	}
	h.size = size
	return h, true, nil
}
