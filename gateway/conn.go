package gateway

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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

// conn is one client WebSocket connection.
//
// Read side: bytes are consumed by exactly one goroutine at a time (a pool
// worker scheduled by the poller, or the connection's own reader goroutine in
// goroutine mode), which also runs the client's commands in order.
// Write side: every write goes through the bounded queue out (see writer.go).
// An idle connection holds no goroutine (epoll mode) and no buffer: pending
// and frag are nil unless a frame is split across reads.
type conn struct {
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
	gathered   int // frames from out[head] a writer holds (gather to consume): a drop keeps them
	outBytes   int
	wake       chan struct{} // goroutine mode: wakes the writer
	closeTimer *time.Timer
	room       chan struct{} // closed when the queue shrinks (waitRoom); nil without waiters
	turn       chan struct{} // one streamed catch-up page at a time (pageTurn); nil until used

	sse    *sseState     // non-nil for a Server-Sent Events stream (sse.go)
	done   chan struct{} // goroutine mode: closed by finish, stops the writer
	regIdx int           // position in the server's connection registry

	// The small fields last, packed together (an idle connection's size
	// matters: conn stays in the 352-byte size class). Each says who
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
	binary    bool // reader only, set by connect: takes binary messages (binary.go)
	cleaned   bool // guarded by smu: cleanup ran; no new subscriptions
	closing   bool // guarded by mu
}

func (s *Server) newConn(nc net.Conn, epoll bool) *conn {
	c := &conn{srv: s, nc: nc, fd: -1}
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

func itoa(n int) string { return string(appendUint(nil, uint64(n))) }
