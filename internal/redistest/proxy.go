package redistest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy in front of a server that can partition the
// network: while partitioned, it forwards nothing in either direction on
// any connection, old or new, but keeps them open (what a client sees when
// packets are dropped); Heal forwards what was held back and carries on.
// HoldReplies holds back only what the server sends (a request arrives but
// its answer is lost). Its goroutines stop at test cleanup.
type Proxy struct {
	ln     net.Listener
	target string

	mu          sync.Mutex
	cond        *sync.Cond
	partitioned bool
	holdReplies bool
	closed      bool
	conns       map[net.Conn]struct{}
	wg          sync.WaitGroup
}

// StartProxy listens on a free 127.0.0.1 port and forwards to target.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Partition stops all forwarding until Heal.
func (p *Proxy) Partition() {
	p.mu.Lock()
	p.partitioned = true
	p.mu.Unlock()
}

// HoldReplies stops forwarding what the server sends until Heal; what
// clients send still reaches it.
func (p *Proxy) HoldReplies() {
	p.mu.Lock()
	p.holdReplies = true
	p.mu.Unlock()
}

// Heal resumes forwarding, held-back bytes first.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.partitioned, p.holdReplies = false, false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = s.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.conns[s] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(c, s, false)
		go p.pump(s, c, true)
	}
}

// pump copies src to dst, holding bytes back while partitioned (and,
// from the server, reply, while replies are held).
func (p *Proxy) pump(src, dst net.Conn, reply bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for (p.partitioned || reply && p.holdReplies) && !p.closed {
				p.cond.Wait()
			}
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if err != io.EOF {
				_ = src.Close()
			}
			_ = dst.Close()
			p.mu.Lock()
			delete(p.conns, src)
			delete(p.conns, dst)
			p.mu.Unlock()
			return
		}
	}
}
