package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
)

var errHeadTooLarge = errors.New("gateway: request head too large")

// readHead reads an HTTP request head (through the blank line) from nc.
// rest is whatever the client sent after it in the same reads: for a
// WebSocket it is the start of the first frames, which must not be lost.
func readHead(nc net.Conn) (head, rest []byte, err error) {
	buf := make([]byte, 0, 1024)
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= maxRequestHead {
				return nil, nil, errHeadTooLarge
			}
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			return buf[:i+4], bytes.Clone(buf[i+4:]), nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

// requestPath returns the path of the request line, without the query.
func requestPath(head []byte) []byte {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	_, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return nil
	}
	target, _, _ := bytes.Cut(rest, []byte(" "))
	path, _, _ := bytes.Cut(target, []byte("?"))
	return path
}

// replayRW lets the WebSocket upgrader read a head we already read, and
// write its response to the socket.
type replayRW struct {
	r *bytes.Reader
	w io.Writer
}

func (rw *replayRW) Read(p []byte) (int, error)  { return rw.r.Read(p) }
func (rw *replayRW) Write(p []byte) (int, error) { return rw.w.Write(p) }

// prefixConn is a connection whose first bytes were already read; the HTTP
// server reads them again through it.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// unwrapPrefix returns the raw socket under a hijacked prefixConn whose
// prefix has been consumed, so the epoll path can use its fd.
func unwrapPrefix(nc net.Conn) net.Conn {
	if pc, ok := nc.(*prefixConn); ok && len(pc.prefix) == 0 {
		return pc.Conn
	}
	return nc
}

// chanListener feeds connections routed by the handshake to net/http.
type chanListener struct {
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }
