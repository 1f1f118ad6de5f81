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
//     conn.partial): trickling a byte at a time resets the idle timeout
//     but not this one.
//   - The bytes of unfinished frames and messages of every connection
//     together stay under server.max_partial_bytes (Server.partialBytes);
//     the connection whose partial frame would pass it is closed, so the
//     others keep theirs.
//   - Ping and pong frames are limited to client.control_frame_rate per
//     second per connection.

// conn.partial packs two things other goroutines need to know about the
// reader's partial-frame state:
//
//	bits 0-31   when the unfinished frame or message started: milliseconds
//	            since the server started (Server.sinceStart), with bit 0
//	            set so that 0 means none; compared modulo 2^32 (49 days),
//	            as a signed difference
//	bits 32-62  bytes held, as counted in Server.partialBytes
//	bit 63      released: cleanup gave the bytes back; nothing is held again
const (
	partialReleased = 1 << 63
	maxPartialHeld  = 1<<31 - 1
)

func partialWord(at uint32, held int64) uint64 { return uint64(held)<<32 | uint64(at) }

func partialHeld(v uint64) int64 { return int64(v>>32) & maxPartialHeld }

// sinceStart is the clock of partial-frame start times: milliseconds since
// the server started, truncated to 32 bits.
func (s *Server) sinceStart() uint32 { return uint32(time.Since(s.started).Milliseconds()) }

// keepFrameState stores the read state in the connection when a frame or
// message is incomplete (and drops it when not), charges its bytes against
// server.max_partial_bytes, and starts or restarts client.frame_timeout.
// Only the connection's reader calls it.
func (c *conn) keepFrameState(s *scratch, st *frameState) {
	old := c.partial.Load()
	if old&partialReleased != 0 {
		c.fs = nil // cleaned up: the connection is gone
		return
	}
	if st.idle() {
		c.fs = nil
		if old != 0 {
			c.setPartial(old, 0, 0)
		}
		return
	}
	held := int64(cap(st.pending) + cap(st.frag))
	delta := held - partialHeld(old)
	if delta > 0 && (held > maxPartialHeld || c.srv.partialBytes.Add(delta) > int64(c.srv.cfg.Server.MaxPartialBytes)) {
		if held <= maxPartialHeld {
			c.srv.partialBytes.Add(-delta)
		}
		c.setPartial(old, 0, 0)
		c.fs = nil
		c.srv.reject(rejPartialBytes)
		c.closeWith("overloaded", "partial frames on this node passed server.max_partial_bytes; reconnect", true, statusTryAgainLater, false)
		return
	}
	at := uint32(old)
	if s.completed || at == 0 {
		at = c.srv.sinceStart() | 1
	}
	if !c.partial.CompareAndSwap(old, partialWord(at, held)) {
		// Released meanwhile (only cleanup changes the word under the
		// reader), and old's bytes given back with it.
		if delta > 0 {
			c.srv.partialBytes.Add(-delta)
		}
		c.fs = nil
		return
	}
	if delta < 0 {
		c.srv.partialBytes.Add(delta)
	}
	if c.fs == nil {
		c.fs = new(frameState)
	}
	*c.fs = *st
}

// setPartial replaces old with (at, held), held <= old's, and gives the
// difference back to the node; it does nothing once cleanup released the
// connection.
func (c *conn) setPartial(old uint64, at uint32, held int64) {
	if c.partial.CompareAndSwap(old, partialWord(at, held)) {
		c.srv.partialBytes.Add(held - partialHeld(old))
	}
}

// statusTryAgainLater is close code 1013 (RFC 6455 registry): the server
// is overloaded, the client may retry.
const statusTryAgainLater ws.StatusCode = 1013

// releasePartial gives back what the connection holds, once, when it is
// cleaned up; the reader charges nothing after it.
func (c *conn) releasePartial() {
	if old := c.partial.Swap(partialReleased); old&partialReleased == 0 {
		c.srv.partialBytes.Add(-partialHeld(old))
	}
}

// frameTimedOut reports whether the connection has kept an unfinished
// frame or message past client.frame_timeout at nowMs (Server.sinceStart).
func (c *conn) frameTimedOut(nowMs uint32) bool {
	v := c.partial.Load()
	at := uint32(v)
	if at == 0 || v&partialReleased != 0 {
		return false
	}
	// Signed: a start stamped after the sweep read its clock is not late.
	// (A timeout past 2^30 ms, 12 days, acts as 12 days.)
	return int64(int32(nowMs-at)) > min(c.srv.cfg.Client.FrameTimeout.Milliseconds(), 1<<30)
}

// controlAllowed counts a ping or pong frame against
// client.control_frame_rate and closes the connection (1008) past it.
func (c *conn) controlAllowed() bool {
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
