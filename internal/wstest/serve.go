package wstest

import (
	"net"
	"testing"
)

// Server is a server under test: a *gateway.Server.
type Server interface {
	Serve(net.Listener) error
}

// Serve runs srv on a new listener at addr (say "127.0.0.1:0"), failing
// the test if it cannot listen. It returns the address it listens on and
// a channel that receives what Serve returns; the test shuts srv down.
func Serve(t testing.TB, srv Server, addr string) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return ln.Addr().String(), done
}
