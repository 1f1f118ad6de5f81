package gateway

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// The read path: bytes from the socket (a pool worker in epoll mode, the
// connection's own goroutine otherwise) become frames, frames become
// messages, messages become commands. The parser is resumable: a read may
// end anywhere in a frame, and what must survive until the next read is a
// frameState, kept in the connection only while something is unfinished
// (gobwas/ws's readers block on an io.Reader, so they are not used; its
// header type and RFC 6455 checks are). Bounds on what a client may make
// the node hold are in partial.go.

// clientHeader is a parsed client frame header: gobwas/ws's Header, and
// how many bytes it took.
type clientHeader struct {
	ws.Header
	size int
}

// parseHeader parses a client frame header from b. ok is false when b does
// not hold the whole header yet. It does what ws.ReadHeader does
// (FuzzFrameHeader compares the two) without a reader, so that a header
// split across reads costs nothing until it is whole.
func parseHeader(b []byte) (h clientHeader, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	size := headerSize(b[1])
	if len(b) < size {
		return h, false, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	switch l := b[1] & 0x7f; l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, false, ws.ErrHeaderLengthMSB
		}
		h.Length = int64(u)
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[size-4:size])
	}
	h.size = size
	return h, true, nil
}

// checkHeader applies RFC 6455's rules (ws.CheckHeader, for a server that
// negotiated no extension); it returns why a frame is invalid, in the words
// the close frame carries.
func checkHeader(st *frameState, h *clientHeader) string {
	state := ws.StateServerSide
	if st.inFrag || st.skipMsg {
		state |= ws.StateFragmented
	}
	switch ws.CheckHeader(h.Header, state) {
	case nil:
		return ""
	case ws.ErrProtocolNonZeroRsv:
		return "reserved bits set (no extension was negotiated)"
	case ws.ErrProtocolMaskRequired:
		return "client frames must be masked"
	case ws.ErrProtocolOpCodeReserved:
		return "reserved opcode"
	case ws.ErrProtocolControlPayloadOverflow, ws.ErrProtocolControlNotFinal:
		return "control frames must be final and at most 125 bytes"
	case ws.ErrProtocolContinuationUnexpected:
		return "continuation frame without a message to continue"
	case ws.ErrProtocolContinuationExpected:
		return "new message before the previous fragmented message ended"
	}
	return "invalid frame header"
}

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
	if (h.OpCode.IsData() || h.OpCode == ws.OpContinuation) && (st.skipMsg || exceeds(st, &h, maxMessage)) {
		return hs
	}
	return hs + int(h.Length)
}

// fillPending moves bytes from the front of b into st.pending until it
// holds the whole frame it started, growing it to exactly that frame's
// size. It returns the rest of b and whether the frame is now whole.
func (c *conn) fillPending(st *frameState, b []byte) ([]byte, bool) {
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
	total := h.Length
	if h.OpCode == ws.OpContinuation {
		total += int64(len(st.frag))
	}
	return total > int64(limit)
}

// frameState is what the read side must remember between two reads. It
// lives in the worker's scratch while a read is processed and is copied into
// the connection only when a frame or a fragmented message is incomplete, so
// an idle connection carries none of it.
type frameState struct {
	pending []byte // a partial frame carried to the next read
	frag    []byte // payload of a fragmented message being assembled
	fragOp  ws.OpCode
	inFrag  bool
	discard int64 // bytes of an oversize frame still to skip
	skipMsg bool  // skipping the continuation frames of an oversize message
}

func (st *frameState) idle() bool {
	return len(st.pending) == 0 && !st.inFrag && st.discard == 0 && !st.skipMsg
}

// ---- reading (epoll mode) ----

// scheduleRead is called by the poller when the socket may be readable.
func (c *conn) scheduleRead() {
	if c.rdSched.Add(1) == 1 {
		c.srv.rpool.submit(task{c, taskRead})
	}
}

// A read turn ends after maxReadsPerTurn reads or maxFramesPerTurn frames,
// whichever comes first; a connection with more input then goes to the back
// of the pool's queue, so one client sending as fast as it can takes its
// turn with the others instead of keeping a worker (and a CPU) to itself.
// A whole read buffer of tiny frames is ~5,000 of them, so a connection
// whose turn ended on the frame budget reads at most shortReadSize bytes a
// read in its next turn (a task of kind taskReadShort): its turns stay
// short for as long as it floods, without any state kept in the connection.
const (
	maxReadsPerTurn  = 4
	maxFramesPerTurn = 256
	shortReadSize    = 2 << 10
)

// readTask reads until EAGAIN (or the end of its turn) and handles what
// arrived. The rdSched counter makes sure one worker at a time runs it and
// that an edge arriving while it runs is not lost.
func (c *conn) readTask(s *scratch, short bool) {
	for {
		n := c.rdSched.Load()
		if more, flooding := c.readAvailable(s, short); more {
			// Yield to others: back of the pool's queue (rdSched stays
			// > 0). (A runtime.Gosched here as well made the neighbours'
			// p99 worse in BenchmarkNeighbourLatency, not better.)
			kind := taskRead
			if flooding {
				kind = taskReadShort
			}
			c.srv.rpool.submit(task{c, kind})
			return
		}
		if c.rdSched.Add(-n) == 0 {
			return
		}
	}
}

// readAvailable runs one turn. more reports input left for another turn;
// flooding, that the turn ended on the frame budget.
func (c *conn) readAvailable(s *scratch, short bool) (more, flooding bool) {
	full := s.rbuf
	if short && len(full) > shortReadSize {
		s.rbuf = full[:shortReadSize]
	}
	more, flooding = c.readTurn(s)
	s.rbuf = full
	return more, flooding
}

func (c *conn) readTurn(s *scratch) (more, flooding bool) {
	s.frames = 0
	for range maxReadsPerTurn {
		if c.finished.Load() {
			return false, false
		}
		if s.frames >= maxFramesPerTurn {
			return true, true
		}
		s.rn, s.rerr = 0, nil
		if err := c.rc.Read(s.readFn); err != nil {
			c.fail()
			return false, false
		}
		n, err := s.rn, s.rerr
		if n > 0 {
			c.lastSeen.Store(c.srv.now())
			c.onData(s, s.rbuf[:n])
			continue
		}
		if err != nil && isEAGAIN(err) {
			return false, false
		}
		// n == 0: orderly shutdown by the peer; or a real error.
		c.fail()
		return false, false
	}
	return true, s.frames >= maxFramesPerTurn
}

// ---- reading (goroutine mode) ----

func (c *conn) readLoop(readSize int) {
	s := newScratch(readSize)()
	for {
		n, err := c.nc.Read(s.rbuf)
		if n > 0 {
			c.lastSeen.Store(c.srv.now())
			c.onData(s, s.rbuf[:n])
		}
		if err != nil || c.finished.Load() {
			c.fail()
			return
		}
	}
}

// ---- frame parsing ----

// onData consumes bytes from the socket. b may be the worker's buffer; what
// is kept past this call is copied into memory the connection owns: a
// partial frame into a buffer of exactly that frame's size (see
// fillPending), counted against server.max_partial_bytes.
func (c *conn) onData(s *scratch, b []byte) {
	st := &s.fs
	*st = frameState{}
	if c.fs != nil {
		*st = *c.fs
	}
	s.completed = false
	if len(st.pending) > 0 {
		// Finish the frame an earlier read started, then go on with the
		// rest of b straight from the read buffer.
		var whole bool
		b, whole = c.fillPending(st, b)
		if whole {
			p := st.pending
			st.pending = nil
			c.parseFrames(s, st, p) // exactly one frame (or its header)
		}
	}
	if len(st.pending) == 0 && len(b) > 0 {
		if rest := c.parseFrames(s, st, b); len(rest) > 0 && !c.isClosing() {
			st.pending = make([]byte, len(rest), max(frameNeed(st, rest, c.srv.cfg.Client.MaxMessageSize), len(rest)))
			copy(st.pending, rest)
		}
	}
	if c.isClosing() {
		st.pending, st.frag = nil, nil // nothing more is read: hold nothing
	}
	c.keepFrameState(s, st)
	*st = frameState{}
}

// parseFrames handles the whole frames at the start of b and returns the
// bytes of an incomplete frame left at its end.
func (c *conn) parseFrames(s *scratch, st *frameState, b []byte) []byte {
	for len(b) > 0 && !c.isClosing() {
		if st.discard > 0 {
			n := int64(len(b))
			if n > st.discard {
				n = st.discard
			}
			st.discard -= n
			b = b[n:]
			if st.discard == 0 && !st.skipMsg {
				s.completed = true // the oversize message is behind us
			}
			continue
		}
		h, ok, err := parseHeader(b)
		if err != nil {
			c.protocolError(ws.StatusProtocolError, "bad frame header")
			return nil
		}
		if !ok {
			break
		}
		if reason := checkHeader(st, &h); reason != "" {
			c.protocolError(ws.StatusProtocolError, reason)
			return nil
		}
		if h.OpCode.IsData() || h.OpCode == ws.OpContinuation {
			if st.skipMsg || c.tooLarge(st, &h) {
				// Discard an oversize frame's payload as it arrives, so the
				// connection stays usable after a too_large error.
				st.discard = h.Length
				st.skipMsg = !h.Fin
				b = b[h.size:]
				if st.discard == 0 && !st.skipMsg {
					s.completed = true
				}
				continue
			}
		}
		if int64(len(b)-h.size) < h.Length {
			break // wait for the rest of the frame
		}
		end := h.size + int(h.Length)
		payload := b[h.size:end]
		ws.Cipher(payload, h.Mask, 0)
		b = b[end:]
		s.frames++
		c.handleFrame(s, st, &h, payload)
	}
	return b
}

// tooLarge reports (and answers, once per message) a message over the limit.
func (c *conn) tooLarge(st *frameState, h *clientHeader) bool {
	if !exceeds(st, h, c.srv.cfg.Client.MaxMessageSize) {
		return false
	}
	c.sendUnanswering(codeTooLarge, "message exceeds client.max_message_size ("+itoa(c.srv.cfg.Client.MaxMessageSize)+" bytes); it was discarded")
	c.srv.reject(rejMessageSize)
	st.frag, st.inFrag = nil, false
	return true
}

func (c *conn) handleFrame(s *scratch, st *frameState, h *clientHeader, payload []byte) {
	switch h.OpCode {
	case ws.OpText, ws.OpBinary:
		if h.Fin {
			s.completed = true
			c.handleMessage(s, h.OpCode, payload)
			return
		}
		st.frag = append([]byte(nil), payload...)
		st.fragOp, st.inFrag = h.OpCode, true
	case ws.OpContinuation:
		st.frag = appendFrag(st.frag, payload, c.srv.cfg.Client.MaxMessageSize)
		if h.Fin {
			msg := st.frag
			st.frag, st.inFrag = nil, false
			s.completed = true
			c.handleMessage(s, st.fragOp, msg)
		}
	case ws.OpPing:
		if !c.controlAllowed() {
			return
		}
		if len(payload) == 0 {
			c.sendFrame(event{}, emptyPong)
		} else {
			c.sendFrame(event{}, controlFrame(ws.OpPong, payload))
		}
	case ws.OpPong:
		// Nothing to do: any byte received already counts as activity.
		c.controlAllowed()
	case ws.OpClose:
		code, reason := ws.StatusNormalClosure, ""
		switch {
		case len(payload) == 1:
			code, reason = ws.StatusProtocolError, "close frame with a 1-byte body"
		case len(payload) >= 2:
			var why string
			code, why = ws.ParseCloseFrameDataUnsafe(payload)
			if !validClose(code, why) {
				code, reason = ws.StatusProtocolError, "invalid close frame"
			}
		}
		c.closeFrameOnly(code, reason)
	}
}

// validClose reports whether a client's close frame carries a code it may
// send and a UTF-8 reason: RFC 6455 section 7.4 as ws.CheckCloseFrameData
// applies it (1000-1003, 1007-1011 and 3000-4999), minus the codes past
// 4999 that it lets through but no range of the RFC holds.
func validClose(code ws.StatusCode, reason string) bool {
	return code <= ws.StatusRangePrivate.Max && ws.CheckCloseFrameData(code, reason) == nil
}

// handleMessage runs every JSON object of one complete message, in order.
func (c *conn) handleMessage(s *scratch, op ws.OpCode, msg []byte) {
	if op == ws.OpBinary {
		c.handleBinary(s, msg)
		return
	}
	if !utf8.Valid(msg) {
		c.closeWith("bad_request", "text frame is not valid UTF-8", false, ws.StatusInvalidFramePayloadData, false)
		return
	}
	i := 0
	for {
		i = skipWS(msg, i)
		if i >= len(msg) || c.isClosing() {
			return
		}
		end, err := decodeObject(msg, i, &s.cmd)
		if c.px != nil && c.deferProxied(s, msg, i, end, err) {
			if err == nil {
				i = end
			} else if i = nextLine(msg, i); i < 0 {
				return
			}
			continue
		}
		if err != nil {
			// The reply carries the command's id when it can be read.
			c.sendError(salvageID(msg, i), codeBadRequest, decodeErrorText(err))
			// Resynchronise at the next line, so one bad object does not
			// swallow the good ones batched after it.
			j := indexByte(msg[i:], '\n')
			if j < 0 {
				return
			}
			i += j + 1
			continue
		}
		i = end
		c.handleCommand(s, &s.cmd)
	}
}

// handleBinary runs a binary message: one pub or snap whose data is the
// bytes after the header line (binary.go). The event proxy queues
// commands as JSON text, so with the proxy on binary messages are refused.
func (c *conn) handleBinary(s *scratch, msg []byte) {
	if c.px != nil {
		id, _ := parseBinaryMessage(msg, &s.cmd)
		c.sendErrorInTurn(id, codeBadRequest, "binary messages are not available with the event proxy on; send \"bin\" (base64) in a JSON command")
		return
	}
	id, err := parseBinaryMessage(msg, &s.cmd)
	if err != nil {
		c.sendError(id, codeBadRequest, decodeErrorText(err))
		return
	}
	c.handleCommand(s, &s.cmd)
}

// deferProxied hands the object at msg[i:] to the connection's proxy queue
// when it must wait for (or itself needs) an event proxy call.
func (c *conn) deferProxied(s *scratch, msg []byte, i, end int, err error) bool {
	if err == nil {
		return c.deferCommand(s, msg[i:end], &s.cmd)
	}
	j := nextLine(msg, i)
	if j < 0 {
		j = len(msg)
	}
	return c.deferCommand(s, msg[i:j], nil)
}

// nextLine returns the index after the next '\n' at or after i, or -1.
func nextLine(msg []byte, i int) int {
	j := indexByte(msg[i:], '\n')
	if j < 0 {
		return -1
	}
	return i + j + 1
}

func decodeErrorText(err error) string {
	if e, ok := err.(*errDecode); ok {
		return e.msg
	}
	return "invalid JSON"
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
