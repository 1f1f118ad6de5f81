package faults

import (
	"errors"
	"net"
	"sync"
)

// Net is the campaign's loopback network: one TCP proxy in front of each
// port of each server (clients, cluster bus or routes), every connection
// between the servers and from the gateways going through them. Isolate
// partitions one server away: no byte moves on any proxied connection to
// it or from it (those it dialled itself, recognised by Owner), old or
// new, in either direction, though the connections stay open (packets
// dropped, not refused); Heal forwards what was held back and carries on.
//
// Net is safe for concurrent use. Close stops every proxy and waits for
// its goroutines.
type Net struct {
	// Owner, if set, names the server (its index) that opened a
	// connection arriving from the loopback address addr, or -1 for
	// another process (a gateway). Called once per accepted connection.
	Owner func(addr *net.TCPAddr) int

	mu       sync.Mutex
	cond     *sync.Cond
	isolated map[int]bool
	closed   bool
	lns      []net.Listener
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

// NewNet returns a Net with no proxies.
func NewNet() *Net {
	n := &Net{isolated: map[int]bool{}, conns: map[net.Conn]struct{}{}}
	n.cond = sync.NewCond(&n.mu)
	return n
}

// Listen starts a proxy on a free 127.0.0.1 port in front of target, the
// address of server node, and returns its address.
func (n *Net) Listen(node int, target string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		ln.Close()
		return "", errors.New("faults: net closed")
	}
	n.lns = append(n.lns, ln)
	n.wg.Go(func() { n.accept(ln, node, target) })
	return ln.Addr().String(), nil
}

// Isolate partitions server node away until Heal(node).
func (n *Net) Isolate(node int) {
	n.mu.Lock()
	n.isolated[node] = true
	n.mu.Unlock()
}

// Heal ends node's partition.
func (n *Net) Heal(node int) {
	n.mu.Lock()
	delete(n.isolated, node)
	n.mu.Unlock()
	n.cond.Broadcast()
}

// Close stops every proxy, closes every proxied connection and waits for
// the goroutines.
func (n *Net) Close() {
	n.mu.Lock()
	n.closed = true
	for _, ln := range n.lns {
		ln.Close()
	}
	for c := range n.conns {
		c.Close()
	}
	n.mu.Unlock()
	n.cond.Broadcast()
	n.wg.Wait()
}

func (n *Net) accept(ln net.Listener, node int, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		from := -1
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok && n.Owner != nil {
			from = n.Owner(a)
		}
		n.wg.Go(func() { n.serve(c, node, from, target) })
	}
}

// serve forwards c to target. A connection accepted while one of its ends
// is isolated dials the target only once both are not.
func (n *Net) serve(c net.Conn, to, from int, target string) {
	if !n.track(c) || !n.wait(to, from) {
		c.Close()
		return
	}
	t, err := net.Dial("tcp", target)
	if err != nil {
		n.untrack(c)
		c.Close()
		return
	}
	if !n.track(t) {
		n.untrack(c)
		c.Close()
		t.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { n.pump(t, c, to, from) })
	n.pump(c, t, to, from)
	wg.Wait()
	n.untrack(c)
	n.untrack(t)
}

func (n *Net) track(c net.Conn) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.conns[c] = struct{}{}
	return true
}

func (n *Net) untrack(c net.Conn) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
}

// wait blocks while server to or server from is isolated; false once the
// net is closed.
func (n *Net) wait(to, from int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for !n.closed && (n.isolated[to] || (from >= 0 && n.isolated[from])) {
		n.cond.Wait()
	}
	return !n.closed
}

// pump copies src to dst, holding each read back while either end is
// isolated; it closes both when either side ends.
func (n *Net) pump(dst, src net.Conn, to, from int) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if !n.wait(to, from) {
				return
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil { // io.EOF or a closed connection alike
			return
		}
	}
}
