package faults

import (
	"bufio"
	"net"
	"os"
	"testing"
	"time"
)

// echo is a TCP echo server on loopback; it stops at test cleanup.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip writes a line on c and reads the echo, within d.
func roundTrip(c net.Conn, r *bufio.Reader, d time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err := r.ReadString('\n')
	return err
}

func TestNetIsolateHoldsTrafficUntilHeal(t *testing.T) {
	n := NewNet()
	defer n.Close()
	addr, err := n.Listen(0, echo(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if err := roundTrip(c, r, 5*time.Second); err != nil {
		t.Fatalf("before the partition: %v", err)
	}
	n.Isolate(0)
	if err := roundTrip(c, r, 300*time.Millisecond); err == nil {
		t.Fatal("an isolated server answered")
	}
	// A connection made during the partition is accepted and held too.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	r2 := bufio.NewReader(c2)
	if err := roundTrip(c2, r2, 300*time.Millisecond); err == nil {
		t.Fatal("a new connection reached an isolated server")
	}
	n.Heal(0)
	// What was held back arrives after the heal: the line written before
	// the timeout, then this one.
	_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := r2.ReadString('\n'); err != nil {
		t.Fatalf("held line after heal: %v", err)
	}
	if err := roundTrip(c2, r2, 5*time.Second); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}

func TestNetIsolateCutsWhatTheServerDialled(t *testing.T) {
	n := NewNet()
	defer n.Close()
	// Every connection counts as dialled by server 1: isolating 1 cuts a
	// connection to server 0.
	n.Owner = func(*net.TCPAddr) int { return 1 }
	addr, err := n.Listen(0, echo(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	n.Isolate(1)
	if err := roundTrip(c, r, 300*time.Millisecond); err == nil {
		t.Fatal("a connection from an isolated server went through")
	}
	n.Heal(1)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}

func TestSocketOwner(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	from := s.RemoteAddr().(*net.TCPAddr)
	if got := SocketOwner(from, []int{0, 1, os.Getpid()}); got != 2 {
		t.Fatalf("SocketOwner = %d, want 2 (this process)", got)
	}
	if got := SocketOwner(from, []int{1}); got != -1 {
		t.Fatalf("SocketOwner among other pids = %d, want -1", got)
	}
}

func TestNetCloseWhileIsolated(t *testing.T) {
	n := NewNet()
	addr, err := n.Listen(0, echo(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n.Isolate(0)
	_, _ = c.Write([]byte("held\n"))
	c2, err := net.Dial("tcp", addr) // accepted, held before dialling
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	done := make(chan struct{})
	go func() { n.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on held connections")
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 8)); err == nil {
		t.Fatal("a proxied connection is still open after Close")
	}
}
