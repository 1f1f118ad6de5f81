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

// framePayload is the payload of a frame built here (textFrame,
// frameBuilder): its header's size follows from the frame's length alone,
// so nothing is read back.
func framePayload(frame []byte) []byte {
	switch n := len(frame); {
	case n-2 < 126:
		return frame[min(2, n):]
	case n-4 <= 0xffff:
		return frame[4:]
	default:
		return frame[maxFrameHeader:]
	}
}
