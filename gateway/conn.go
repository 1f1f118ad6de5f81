package gateway

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"
)

// scratch is per-worker state lent to one connection for one read or write.
type scratch struct {
	rbuf []byte
	rn   int
	rerr error

	bufs [][]byte
	wn   int
	werr error
	sys  sysScratch

	cmd command
	enc []byte
	// loop is set for the epoll read pool's scratches: a command that
	// would block on the event proxy must not run on them (proxyconn.go).
	loop bool
	fs   frameState // the connection's read state while this worker reads

	// frames counts the frames handled in this read turn (the per-turn
	// budget, see readAvailable); completed is set by onData when a
	// message (or an oversize one being discarded) ended, which restarts
	// client.frame_timeout for whatever follows it.
	frames    int
	completed bool

	// rawRead and rawWritev bound to this scratch, made once per worker, so
	// a syscall.RawConn call allocates nothing and connections hold no
	// closures.
	readFn  func(uintptr) bool
	writeFn func(uintptr) bool
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

func newScratch(readSize int) func() *scratch {
	return func() *scratch {
		s := &scratch{rbuf: make([]byte, readSize), bufs: make([][]byte, 0, 64), enc: make([]byte, 0, 512)}
		s.readFn, s.writeFn = s.rawRead, s.rawWritev
		return s
	}
}

// loopScratch is newScratch for the epoll read pool (scratch.loop).
func loopScratch(readSize int) func() *scratch {
	mk := newScratch(readSize)
	return func() *scratch {
		s := mk()
		s.loop = true
		return s
	}
}

// Conn is one client WebSocket connection.
//
// Read side: bytes are consumed by exactly one goroutine at a time (a pool
// worker scheduled by the poller, or the connection's own reader goroutine in
// goroutine mode), which also runs the client's commands in order.
// Write side: every write goes through the bounded queue out (see writer.go).
// An idle connection holds no goroutine (epoll mode) and no buffer: pending
// and frag are nil unless a frame is split across reads.
type Conn struct {
	srv  *Server
	nc   net.Conn
	rc   syscall.RawConn // nil in goroutine mode
	fd   int             // -1 in goroutine mode
	id   string
	num  uint64
	user string

	lastSeen atomic.Int64 // unix seconds of the last byte received
	opened   int64        // unix seconds the connection was attached

	px *connProxy // event proxy state (proxyconn.go); nil without hooks

	// Auth state. urlToken is the ?token= of the upgrade, dropped once used.
	urlToken  string
	ident     atomic.Pointer[identity] // nil when auth is off; replaced by refresh (written by the reader, read by revoke)
	expires   atomic.Int64             // unix seconds the token expires; 0 = never
	pubBucket *rate.Limiter

	// Read side, owned by the single active reader.
	fs *frameState // nil unless a frame or message is incomplete
	// partial is what others may know of fs, in one word (an idle
	// connection's size matters): when its unfinished frame or message
	// started, for client.frame_timeout, and the bytes it holds, as
	// counted in Server.partialBytes. Written by the reader; released by
	// cleanup. See partial.go.
	partial atomic.Uint64

	// Subscriptions; guarded by smu (the reader adds, cleanup removes). A
	// slice, not a map: most connections hold one or a few.
	smu  sync.Mutex
	subs []*sub

	// Write side, guarded by mu (see writer.go).
	mu         sync.Mutex
	out        [][]byte
	head       int // out[head:] is unwritten
	off        int // bytes of out[head] already written
	outBytes   int
	wake       chan struct{} // goroutine mode: wakes the writer
	closeTimer *time.Timer
	room       chan struct{} // closed when the queue shrinks (waitRoom); nil without waiters
	turn       chan struct{} // one streamed catch-up page at a time (pageTurn); nil until used

	sse    *sseState     // non-nil for a Server-Sent Events stream (sse.go)
	done   chan struct{} // goroutine mode: closed by finish, stops the writer
	regIdx int           // position in the server's connection registry

	// The small fields last, packed together (an idle connection's size
	// matters: Conn stays in the 352-byte size class). Each says who
	// owns it.
	authed   atomic.Bool  // connect succeeded
	finished atomic.Bool  // see finish
	rdSched  atomic.Int32 // read side
	wrSched  atomic.Int32 // write side
	// Control frames (ping/pong) received in the second ctlSec (the
	// server clock's unix seconds, truncated): client.control_frame_rate.
	// Reader only.
	ctlSec    uint32
	ctlCount  uint32
	userSlot  bool // counted in Server.users (cleanup gives it back)
	connected bool // reader only
	cleaned   bool // guarded by smu: cleanup ran; no new subscriptions
	closing   bool // guarded by mu
}

func (s *Server) newConn(nc net.Conn, epoll bool) *Conn {
	c := &Conn{srv: s, nc: nc, fd: -1}
	c.num, c.id = s.nextClientID()
	c.lastSeen.Store(s.now())
	c.opened = s.now()
	if epoll {
		if sc, ok := nc.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				c.rc = rc
				c.fd = connFD(rc)
			}
		}
	}
	if c.fd < 0 {
		c.rc = nil
		c.wake = make(chan struct{}, 1)
		c.done = make(chan struct{})
	}
	return c
}

// ---- reading (epoll mode) ----

// scheduleRead is called by the poller when the socket may be readable.
func (c *Conn) scheduleRead() {
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
func (c *Conn) readTask(s *scratch, short bool) {
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
func (c *Conn) readAvailable(s *scratch, short bool) (more, flooding bool) {
	full := s.rbuf
	if short && len(full) > shortReadSize {
		s.rbuf = full[:shortReadSize]
	}
	more, flooding = c.readTurn(s)
	s.rbuf = full
	return more, flooding
}

func (c *Conn) readTurn(s *scratch) (more, flooding bool) {
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

func (c *Conn) readLoop(readSize int) {
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
func (c *Conn) onData(s *scratch, b []byte) {
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
func (c *Conn) parseFrames(s *scratch, st *frameState, b []byte) []byte {
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
		if h.op.IsData() || h.op == ws.OpContinuation {
			if st.skipMsg || c.tooLarge(st, &h) {
				// Discard an oversize frame's payload as it arrives, so the
				// connection stays usable after a too_large error.
				st.discard = h.length
				st.skipMsg = !h.fin
				b = b[h.size:]
				if st.discard == 0 && !st.skipMsg {
					s.completed = true
				}
				continue
			}
		}
		if int64(len(b)-h.size) < h.length {
			break // wait for the rest of the frame
		}
		end := h.size + int(h.length)
		payload := b[h.size:end]
		ws.Cipher(payload, h.mask, 0)
		b = b[end:]
		s.frames++
		c.handleFrame(s, st, &h, payload)
	}
	return b
}

// checkHeader applies RFC 6455's rules; it returns why a frame is invalid.
func checkHeader(st *frameState, h *clientHeader) string {
	switch {
	case h.rsv != 0:
		return "reserved bits set (no extension was negotiated)"
	case !h.masked:
		return "client frames must be masked"
	case h.op.IsReserved():
		return "reserved opcode"
	case h.op.IsControl() && (!h.fin || h.length > 125):
		return "control frames must be final and at most 125 bytes"
	case h.op == ws.OpContinuation && !st.inFrag && !st.skipMsg:
		return "continuation frame without a message to continue"
	case (h.op == ws.OpText || h.op == ws.OpBinary) && (st.inFrag || st.skipMsg):
		return "new message before the previous fragmented message ended"
	}
	return ""
}

// tooLarge reports (and answers, once per message) a message over the limit.
func (c *Conn) tooLarge(st *frameState, h *clientHeader) bool {
	if !exceeds(st, h, c.srv.cfg.Client.MaxMessageSize) {
		return false
	}
	c.sendUnanswering(codeTooLarge, "message exceeds client.max_message_size ("+itoa(c.srv.cfg.Client.MaxMessageSize)+" bytes); it was discarded")
	c.srv.reject(rejMessageSize)
	st.frag, st.inFrag = nil, false
	return true
}

func (c *Conn) handleFrame(s *scratch, st *frameState, h *clientHeader, payload []byte) {
	switch h.op {
	case ws.OpText, ws.OpBinary:
		if h.fin {
			s.completed = true
			c.handleMessage(s, h.op, payload)
			return
		}
		st.frag = append([]byte(nil), payload...)
		st.fragOp, st.inFrag = h.op, true
	case ws.OpContinuation:
		st.frag = appendFrag(st.frag, payload, c.srv.cfg.Client.MaxMessageSize)
		if h.fin {
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
			c.sendFrame(emptyPong)
		} else {
			c.sendFrame(controlFrame(ws.OpPong, payload))
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
			code, _ = ws.ParseCloseFrameDataUnsafe(payload)
			if !validCloseCode(code) || !utf8.Valid(payload[2:]) {
				code, reason = ws.StatusProtocolError, "invalid close frame"
			}
		}
		c.closeFrameOnly(code, reason)
	}
}

func validCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// handleMessage runs every JSON object of one complete message, in order.
func (c *Conn) handleMessage(s *scratch, op ws.OpCode, msg []byte) {
	if op == ws.OpBinary {
		c.sendUnanswering(codeBadRequest, "binary frames are not supported: send JSON in text frames")
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

// deferProxied hands the object at msg[i:] to the connection's proxy queue
// when it must wait for (or itself needs) an event proxy call.
func (c *Conn) deferProxied(s *scratch, msg []byte, i, end int, err error) bool {
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

func itoa(n int) string { return string(appendUint(nil, uint64(n))) }
