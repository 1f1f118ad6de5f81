package gateway

import (
	"time"

	"github.com/gobwas/ws"
)

// Partial frames and control-frame floods: what a client may make the node
// hold or do without completing anything.
//
//   - A frame, or a fragmented message, must complete within
//     client.frame_timeout of its first byte (the heartbeat sweep checks
//     Conn.partialAt): trickling a byte at a time resets the idle timeout
//     but not this one.
//   - The bytes of unfinished frames and messages of every connection
//     together stay under server.max_partial_bytes (Server.partialBytes);
//     the connection whose partial frame would pass it is closed, so the
//     others keep theirs.
//   - Ping and pong frames are limited to client.control_frame_rate per
//     second per connection.

// maxClientHeader is the largest client frame header: 64-bit length + mask.
const maxClientHeader = 14

// emptyPong answers a ping without payload (the common case) without
// building a frame; frames are immutable, so every connection shares it.
var emptyPong = []byte{0x80 | byte(ws.OpPong), 0}

// headerSize is the size of a client frame header from its first two bytes.
func headerSize(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// frameNeed is how many bytes, as far as the start of b tells, the frame
// starting at b[0] occupies before it can be handled: the header, plus the
// payload when it is to be kept (not for a frame that is invalid or is
// discarded as too large: those are handled from their header alone). It
// never exceeds maxClientHeader + client.max_message_size.
func frameNeed(st *frameState, b []byte, maxMessage int) int {
	if len(b) < 2 {
		return 2
	}
	hs := headerSize(b[1])
	h, ok, err := parseHeader(b)
	if !ok || err != nil || checkHeader(st, &h) != "" {
		return hs
	}
	if (h.op.IsData() || h.op == ws.OpContinuation) && (st.skipMsg || exceeds(st, &h, maxMessage)) {
		return hs
	}
	return hs + int(h.length)
}

// fillPending moves bytes from the front of b into st.pending until it
// holds the whole frame it started, growing it to exactly that frame's
// size. It returns the rest of b and whether the frame is now whole.
func (c *Conn) fillPending(st *frameState, b []byte) ([]byte, bool) {
	for {
		need := frameNeed(st, st.pending, c.srv.cfg.Client.MaxMessageSize)
		if len(st.pending) >= need {
			return b, true
		}
		if len(b) == 0 {
			return b, false
		}
		if cap(st.pending) < need {
			p := make([]byte, len(st.pending), need)
			copy(p, st.pending)
			st.pending = p
		}
		n := min(need-len(st.pending), len(b))
		st.pending = append(st.pending, b[:n]...)
		b = b[n:]
	}
}

// appendFrag adds a continuation frame's payload to a fragmented message.
// It grows the buffer at most to limit (client.max_message_size, which
// tooLarge already enforces on the total), so a message held across reads
// costs no more than its limit.
func appendFrag(frag, payload []byte, limit int) []byte {
	if need := len(frag) + len(payload); need > cap(frag) {
		grown := make([]byte, len(frag), min(max(2*cap(frag), need), max(limit, need)))
		copy(grown, frag)
		frag = grown
	}
	return append(frag, payload...)
}

// exceeds reports whether the message h belongs to passes limit.
func exceeds(st *frameState, h *clientHeader, limit int) bool {
	total := h.length
	if h.op == ws.OpContinuation {
		total += int64(len(st.frag))
	}
	return total > int64(limit)
}

// keepFrameState stores the read state in the connection when a frame or
// message is incomplete (and drops it when not), charges its bytes against
// server.max_partial_bytes, and starts or restarts client.frame_timeout.
func (c *Conn) keepFrameState(s *scratch, st *frameState) {
	if st.idle() {
		c.fs = nil
		if c.partialAt.Load() != 0 {
			c.partialAt.Store(0)
			c.chargePartial(0)
		}
		return
	}
	if !c.chargePartial(int64(cap(st.pending) + cap(st.frag))) {
		c.fs = nil
		c.partialAt.Store(0)
		c.srv.reject(rejPartialBytes)
		c.closeWith("overloaded", "partial frames on this node passed server.max_partial_bytes; reconnect", true, statusTryAgainLater, false)
		return
	}
	if c.fs == nil {
		c.fs = new(frameState)
	}
	*c.fs = *st
	if s.completed || c.partialAt.Load() == 0 {
		c.partialAt.Store(time.Now().UnixNano())
	}
}

// statusTryAgainLater is close code 1013 (RFC 6455 registry): the server
// is overloaded, the client may retry.
const statusTryAgainLater ws.StatusCode = 1013

// chargePartial sets the bytes this connection holds in partial frames to
// n, moving the node's total by the difference. It reports false, charging
// nothing more, when the increase would pass server.max_partial_bytes.
// Only the connection's reader calls it; cleanup releases the charge
// concurrently (releasePartial), after which nothing is charged.
func (c *Conn) chargePartial(n int64) bool {
	old := c.partialBytes.Load()
	if old < 0 {
		return true // released: the connection is gone, its state with it
	}
	delta := n - old
	if delta > 0 {
		if c.srv.partialBytes.Add(delta) > int64(c.srv.cfg.Server.MaxPartialBytes) {
			c.srv.partialBytes.Add(-delta)
			c.chargePartial(0)
			return false
		}
	}
	if !c.partialBytes.CompareAndSwap(old, n) {
		// Released meanwhile, and old given back with it.
		if delta > 0 {
			c.srv.partialBytes.Add(-delta)
		}
		return true
	}
	if delta < 0 {
		c.srv.partialBytes.Add(delta)
	}
	return true
}

// releasePartial gives back what the connection holds, once, when it is
// cleaned up.
func (c *Conn) releasePartial() {
	if old := c.partialBytes.Swap(-1); old > 0 {
		c.srv.partialBytes.Add(-old)
	}
}

// frameTimedOut reports whether the connection has kept an unfinished
// frame or message past client.frame_timeout at unix time nowNano.
func (c *Conn) frameTimedOut(nowNano int64) bool {
	at := c.partialAt.Load()
	return at != 0 && nowNano-at > int64(c.srv.cfg.Client.FrameTimeout)
}

// controlAllowed counts a ping or pong frame against
// client.control_frame_rate and closes the connection (1008) past it.
func (c *Conn) controlAllowed() bool {
	limit := c.srv.cfg.Client.ControlFrameRate
	if limit == 0 {
		return true
	}
	if now := uint32(c.srv.now()); c.ctlSec != now {
		c.ctlSec, c.ctlCount = now, 0
	}
	c.ctlCount++
	if c.ctlCount <= uint32(limit) {
		return true
	}
	if c.ctlCount == uint32(limit)+1 {
		c.srv.reject(rejControlRate)
		c.closeWith("rate_limited", "more than client.control_frame_rate ("+itoa(limit)+") ping/pong frames in a second", false, ws.StatusPolicyViolation, false)
	}
	return false
}
