package gateway

import (
	"context"
	"net"
	"time"

	"github.com/gobwas/ws"
)

// The outbound queue.
//
// Every frame for a connection is appended to c.out under c.mu; frames are
// immutable and may be shared by many connections (a msg is encoded once per
// node and queued on every subscriber). A flush writes everything pending
// with one writev. The queue is bounded by client.max_queue_bytes: a client
// that does not read fast enough is disconnected (slow consumer) instead of
// slowing the publisher or anybody else.

// closeGrace is how long a closing connection may take to flush its last
// frames (disconnect + close) before the socket is closed regardless.
const closeGrace = time.Second

// maxIov bounds the frames gathered into one writev (IOV_MAX is 1024).
const maxIov = 1024

// event is what the code queuing a frame knows of it: the op of the JSON
// object the frame carries and, for msg and subscribed, the channel and
// position. A WebSocket writes the frame; an SSE stream writes the same
// JSON as an event built from this (sseState.event), never by reading the
// frame back. A control frame has no op: a stream does not show it.
type event struct {
	op    string
	ch    string
	seq   uint64
	epoch string
}

// sendFrame queues a frame. It never blocks.
func (c *conn) sendFrame(ev event, frame []byte) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if c.sse != nil {
		if frame = c.sse.event(ev, frame); frame == nil {
			c.mu.Unlock()
			return
		}
	}
	if c.outBytes+len(frame) > c.srv.cfg.Client.MaxQueueBytes {
		c.mu.Unlock()
		c.srv.metrics.slowConsumers.Inc()
		c.closeWith("slow_consumer", "outbound queue full: the client does not read fast enough", true, ws.StatusPolicyViolation, true)
		return
	}
	c.out = append(c.out, frame)
	c.outBytes += len(frame)
	c.mu.Unlock()
	c.scheduleFlush()
}

// sendJSON copies one encoded JSON object, a reply of the given op, into
// its own frame and queues it.
func (c *conn) sendJSON(s *scratch, op string, obj []byte) {
	if s != nil {
		s.enc = obj[:0]
	}
	c.sendFrame(event{op: op}, textFrame(obj))
}

// waitRoom waits until the queue can take n more bytes without passing
// client.max_queue_bytes (or is empty: a frame larger than the limit goes
// out alone). It reports false when the connection is closing or ctx
// ends. A streamed catch-up uses it to queue its next page only as fast as
// the client reads.
func (c *conn) waitRoom(ctx context.Context, n int) bool {
	for {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return false
		}
		if c.outBytes == 0 || c.outBytes+n <= c.srv.cfg.Client.MaxQueueBytes {
			c.mu.Unlock()
			return true
		}
		if c.room == nil {
			c.room = make(chan struct{})
		}
		room := c.room
		c.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return false
		}
	}
}

// pageTurn is the connection's one-page-at-a-time token for streamed
// catch-ups (made on first use: most connections never stream).
func (c *conn) pageTurn() chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.turn == nil {
		c.turn = make(chan struct{}, 1)
	}
	return c.turn
}

// wakeRoomLocked wakes the waitRoom callers to look again. c.mu is held.
func (c *conn) wakeRoomLocked() {
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
}

func (c *conn) sendError(id uint64, code, msg string) {
	var buf [256]byte
	c.sendFrame(event{op: "error"}, textFrame(appendError(buf[:0], id, code, msg)))
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// closeWith sends disconnect then a close frame, and closes the connection
// once they are written (or after closeGrace). dropQueue discards frames not
// yet written, for a slow consumer whose queue is what overflowed.
// It reports whether this call started the close (false: already closing).
func (c *conn) closeWith(code, reason string, reconnect bool, status ws.StatusCode, dropQueue bool) bool {
	var buf [256]byte
	disc := textFrame(appendDisconnect(buf[:0], code, reason, reconnect))
	if c.closeFrames(dropQueue, disc, closeFrame(status, reason)) {
		c.srv.metrics.disconnects.WithLabelValues(code).Inc()
		return true
	}
	return false
}

// closeFrameOnly answers a client's close frame: no disconnect message.
func (c *conn) closeFrameOnly(status ws.StatusCode, reason string) {
	c.closeFrames(false, nil, closeFrame(status, reason))
}

// protocolError closes a connection that broke RFC 6455.
func (c *conn) protocolError(status ws.StatusCode, reason string) {
	c.srv.log.Debug("websocket protocol error", "client", c.id, "reason", reason)
	c.closeWith("bad_request", "websocket protocol error: "+reason, false, status, false)
}

// closeFrames queues the last frames, a disconnect message (nil for none)
// and a close frame, and starts closing.
func (c *conn) closeFrames(dropQueue bool, disconnect, closing []byte) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing = true
	if dropQueue {
		c.dropLocked()
	}
	if c.sse != nil {
		// A stream ends with the disconnect event; it has no close frame.
		closing = nil
		if disconnect != nil {
			disconnect = c.sse.event(event{op: "disconnect"}, disconnect)
		}
	}
	for _, f := range [2][]byte{disconnect, closing} {
		if f != nil {
			c.out = append(c.out, f)
			c.outBytes += len(f)
		}
	}
	c.closeTimer = time.AfterFunc(time.Duration(c.srv.graceNs.Load()), c.fail)
	c.wakeRoomLocked()
	c.mu.Unlock()
	c.scheduleFlush()
	return true
}

// dropLocked discards unwritten frames, keeping a partly written one so the
// stream of frames stays well formed, and those a writer is writing now
// (gathered): their bytes go out whatever happens here, and consume must
// find them in the queue, or it would count the frames queued after the
// drop (the disconnect and close frames) as written.
func (c *conn) dropLocked() {
	keep := c.head + c.gathered
	if c.gathered == 0 && c.off > 0 {
		keep++
	}
	for i := keep; i < len(c.out); i++ {
		c.outBytes -= len(c.out[i])
		c.out[i] = nil
	}
	c.out = c.out[:keep]
}

// fail closes the connection now, without writing anything more.
func (c *conn) fail() {
	c.mu.Lock()
	c.closing = true
	c.wakeRoomLocked()
	c.mu.Unlock()
	c.finish()
}

// finish releases the connection once: off the poller, socket closed, then
// hub and presence cleanup in an owned goroutine (it may wait on the broker).
func (c *conn) finish() {
	if !c.finished.CompareAndSwap(false, true) {
		return
	}
	c.mu.Lock()
	if c.closeTimer != nil {
		c.closeTimer.Stop()
	}
	c.out, c.head, c.off, c.outBytes, c.gathered = nil, 0, 0, 0, 0
	c.mu.Unlock()
	if c.fd >= 0 {
		c.srv.poller.remove(c)
	}
	_ = c.nc.Close()
	if c.done != nil {
		close(c.done)
	}
	c.srv.goOwned(c.cleanup)
}

// scheduleFlush makes sure a flush runs after this call.
func (c *conn) scheduleFlush() {
	if c.wake != nil {
		select {
		case c.wake <- struct{}{}:
		default:
		}
		return
	}
	if c.wrSched.Add(1) == 1 {
		c.srv.wpool.submit(task{c, taskWrite})
	}
}

// writeTask is the epoll-mode flush, run by a write pool worker.
func (c *conn) writeTask(s *scratch) {
	for {
		n := c.wrSched.Load()
		c.flushNonBlocking(s)
		if c.wrSched.Add(-n) == 0 {
			return
		}
	}
}

// gather fills s.bufs with the unwritten frames (the first one from c.off).
// It reports whether the connection is closing, and whether there was
// nothing to write.
func (c *conn) gather(s *scratch) (closing, empty bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.bufs = s.bufs[:0]
	for i := c.head; i < len(c.out) && len(s.bufs) < maxIov; i++ {
		b := c.out[i]
		if i == c.head {
			b = b[c.off:]
		}
		s.bufs = append(s.bufs, b)
	}
	c.gathered = len(s.bufs)
	return c.closing, len(s.bufs) == 0
}

// consume drops n written bytes from the front of the queue and reports
// whether the queue is now empty.
func (c *conn) consume(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.outBytes -= n
	c.gathered = 0
	c.wakeRoomLocked()
	for n > 0 && c.head < len(c.out) {
		rest := len(c.out[c.head]) - c.off
		if n < rest {
			c.off += n
			break
		}
		n -= rest
		c.out[c.head] = nil
		c.head++
		c.off = 0
	}
	if c.head == len(c.out) {
		// Keep the backing array: the next burst appends without
		// allocating. shrinkIdle gives a large one back later.
		c.out = c.out[:0]
		c.head, c.off = 0, 0
		return true
	}
	return false
}

// idleQueueCap is the queue capacity an idle connection may keep: none. A
// connection that receives again allocates a small array, at most once per
// sweep (a second), which is nothing next to what an idle one saves.
const idleQueueCap = 0

// shrinkIdle releases a burst-sized queue array once the queue is empty, so
// an idle connection costs no more than a few pointers. The heartbeat sweep
// calls it.
// It returns the bytes queued, for the queue-depth metric.
func (c *conn) shrinkIdle() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.out) == 0 && cap(c.out) > idleQueueCap {
		c.out = nil
	}
	return int64(c.outBytes)
}

func (c *conn) flushNonBlocking(s *scratch) {
	for {
		if c.finished.Load() {
			return
		}
		closing, empty := c.gather(s)
		if empty {
			if closing {
				c.finish()
			}
			return
		}
		s.wn, s.werr = 0, nil
		err := c.rc.Write(s.writeFn)
		n, werr := s.wn, s.werr
		clear(s.bufs)
		if err != nil || (werr != nil && !isEAGAIN(werr)) {
			c.fail()
			return
		}
		c.srv.metrics.bytesOut.Add(float64(n))
		drained := c.consume(n)
		if werr != nil { // EAGAIN: the poller's EPOLLOUT edge reschedules us
			return
		}
		if drained && closing {
			c.finish()
			return
		}
	}
}

// writeLoop is the goroutine-mode writer: it owns the blocking writes.
func (c *conn) writeLoop() {
	s := newScratch(0)()
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		for {
			closing, empty := c.gather(s)
			if empty {
				if closing {
					c.finish()
					return
				}
				break
			}
			bufs := net.Buffers(s.bufs)
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.srv.writeTimeout))
			n, err := bufs.WriteTo(c.nc)
			clear(s.bufs)
			c.srv.metrics.bytesOut.Add(float64(n))
			if err != nil {
				c.fail()
				return
			}
			c.consume(int(n))
		}
	}
}
