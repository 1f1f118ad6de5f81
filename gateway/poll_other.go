//go:build !linux

package gateway

import (
	"errors"
	"net"
	"syscall"
)

const epollSupported = false

// poller is not available off Linux; the server uses one goroutine per
// connection instead.
type poller struct{}

func newPoller(onRead, onWrite func(*conn)) (*poller, error) {
	return nil, errors.New("gateway: epoll is only available on Linux")
}

func (p *poller) add(c *conn) error { return errors.New("gateway: no poller") }
func (p *poller) remove(c *conn)    {}
func (p *poller) close()            {}

func connFD(rc syscall.RawConn) int { return -1 }

func rawAccepter(ln net.Listener) (func() (net.Conn, error), net.Listener, bool) {
	return nil, nil, false
}

type sysScratch struct{}

func (s *scratch) rawRead(fd uintptr) bool   { return true }
func (s *scratch) rawWritev(fd uintptr) bool { return true }

func isEAGAIN(err error) bool { return false }
