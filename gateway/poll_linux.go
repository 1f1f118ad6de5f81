//go:build linux

package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const epollSupported = true

// poller is the edge-triggered epoll readiness loop. It owns one goroutine
// that waits for events and hands each ready connection to a pool; it never
// reads, writes or blocks on a connection itself.
type poller struct {
	epfd   int
	wakeFD int // eventfd used to stop the loop

	mu    sync.RWMutex
	conns []*conn // indexed by fd: fds are small, dense numbers

	onRead  func(*conn)
	onWrite func(*conn)
	done    chan struct{}
}

func newPoller(onRead, onWrite func(*conn)) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gateway: epoll_create1: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("gateway: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, fmt.Errorf("gateway: epoll_ctl eventfd: %w", err)
	}
	p := &poller{epfd: epfd, wakeFD: wfd, onRead: onRead, onWrite: onWrite, done: make(chan struct{})}
	go p.loop()
	return p, nil
}

func (p *poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		p.mu.RLock()
		for i := range n {
			ev := &events[i]
			if ev.Fd == int32(p.wakeFD) {
				p.mu.RUnlock()
				return
			}
			if int(ev.Fd) >= len(p.conns) || p.conns[ev.Fd] == nil {
				continue
			}
			c := p.conns[ev.Fd]
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.onRead(c)
			}
			if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.onWrite(c)
			}
		}
		p.mu.RUnlock()
	}
}

// add registers c for edge-triggered read and write readiness. An fd that is
// already readable produces an event right away.
func (p *poller) add(c *conn) error {
	p.mu.Lock()
	if c.fd >= len(p.conns) {
		grown := make([]*conn, max(c.fd+1, 2*len(p.conns), 1024))
		copy(grown, p.conns)
		p.conns = grown
	}
	p.conns[c.fd] = c
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c.fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		p.mu.Lock()
		p.conns[c.fd] = nil
		p.mu.Unlock()
		return fmt.Errorf("gateway: epoll_ctl add: %w", err)
	}
	return nil
}

// remove deregisters c. It must run before the connection's fd is closed,
// so a reused fd number never reaches the old connection.
func (p *poller) remove(c *conn) {
	p.mu.Lock()
	if c.fd < len(p.conns) && p.conns[c.fd] == c {
		p.conns[c.fd] = nil
	}
	p.mu.Unlock()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
}

func (p *poller) close() {
	var one = [8]byte{1}
	_, _ = unix.Write(p.wakeFD, one[:])
	<-p.done
	unix.Close(p.epfd)
	unix.Close(p.wakeFD)
}

// connFD returns the socket descriptor of a TCP or Unix connection, or -1.
func connFD(rc syscall.RawConn) int {
	fd := -1
	_ = rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// sysScratch is a worker's iovec array for writev.
type sysScratch struct{ iov []unix.Iovec }

// rawRead is run through syscall.RawConn.Read, which holds a reference on
// the fd so it cannot be closed and reused while we read.
func (s *scratch) rawRead(fd uintptr) bool {
	s.rn, s.rerr = unix.Read(int(fd), s.rbuf)
	return true // never park: EAGAIN is handled by the caller
}

// rawWritev writes s.bufs with one writev call.
func (s *scratch) rawWritev(fd uintptr) bool {
	iov := s.sys.iov[:0]
	for _, b := range s.bufs {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	s.sys.iov = iov
	if len(iov) == 0 {
		s.wn, s.werr = 0, nil
		return true
	}
	r, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if e != 0 {
		s.wn, s.werr = 0, e
	} else {
		s.wn, s.werr = int(r), nil
	}
	return true
}

func isEAGAIN(err error) bool { return errors.Is(err, unix.EAGAIN) }

// rawAccepter returns an accept function for a TCP listener that accepts
// with accept4 and wraps the socket in an *os.File (pollable, with
// deadlines) instead of a *net.TCPConn, whose two remote/local address
// objects every idle connection would otherwise keep.
//
// A listener's own RawConn cannot Read, so it accepts on a duplicate of the
// listening fd, registered with Go's poller; the returned listener closes
// both.
func rawAccepter(ln net.Listener) (func() (net.Conn, error), net.Listener, bool) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, nil, false
	}
	lrc, err := tl.SyscallConn()
	if err != nil {
		return nil, nil, false
	}
	dfd := -1
	_ = lrc.Control(func(fd uintptr) { dfd, err = unix.Dup(int(fd)) })
	if dfd < 0 || err != nil {
		return nil, nil, false
	}
	unix.CloseOnExec(dfd)
	if err := unix.SetNonblock(dfd, true); err != nil {
		unix.Close(dfd)
		return nil, nil, false
	}
	pf := os.NewFile(uintptr(dfd), "listener") // non-blocking: pollable
	rc, err := pf.SyscallConn()
	if err != nil {
		pf.Close()
		return nil, nil, false
	}
	closer := &dupListener{Listener: ln, f: pf}
	return func() (net.Conn, error) {
		var nfd int
		var aerr error
		err := rc.Read(func(fd uintptr) bool {
			nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			return aerr != unix.EAGAIN // park until the listener is readable
		})
		if err != nil {
			return nil, err // the listener was closed
		}
		if aerr != nil {
			return nil, os.NewSyscallError("accept4", aerr)
		}
		_ = unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		return &fileConn{File: os.NewFile(uintptr(nfd), "")}, nil
	}, closer, true
}

// dupListener closes the listener and the duplicate fd accepted on.
type dupListener struct {
	net.Listener
	f    *os.File
	once sync.Once
}

func (l *dupListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() {
		_ = l.f.Close()
	})
	return err
}

// fileConn is an accepted TCP socket held as a pollable *os.File. Its
// addresses are looked up only when asked for (logs).
type fileConn struct{ *os.File }

func (c *fileConn) LocalAddr() net.Addr  { return c.addr(unix.Getsockname) }
func (c *fileConn) RemoteAddr() net.Addr { return c.addr(unix.Getpeername) }

func (c *fileConn) addr(get func(int) (unix.Sockaddr, error)) net.Addr {
	var sa unix.Sockaddr
	if rc, err := c.File.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { sa, _ = get(int(fd)) })
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return &net.TCPAddr{}
}

// Read and Write report errors the way a net.Conn does (net/http relies
// on a deadline error being a net.Error), not as *os.PathError.
func (c *fileConn) Read(p []byte) (int, error) {
	n, err := c.File.Read(p)
	return n, netErr("read", err)
}

func (c *fileConn) Write(p []byte) (int, error) {
	n, err := c.File.Write(p)
	return n, netErr("write", err)
}

func netErr(op string, err error) error {
	var pe *os.PathError
	if err == nil || err == io.EOF || !errors.As(err, &pe) {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Err: pe.Err}
}

func (c *fileConn) SetDeadline(t time.Time) error      { return c.File.SetDeadline(t) }
func (c *fileConn) SetReadDeadline(t time.Time) error  { return c.File.SetReadDeadline(t) }
func (c *fileConn) SetWriteDeadline(t time.Time) error { return c.File.SetWriteDeadline(t) }
