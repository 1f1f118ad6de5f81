//go:build linux

// faults_proc.go: the servers of the fault campaign's clusters, each a
// child process on fixed loopback ports and a data directory of its own,
// so the nemesis can kill -9 it, pause it (SIGSTOP/SIGCONT) and restart it
// in place. Every signal goes to the PID this process started.
package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/syncgate/syncgate/bench/internal/faults"
	"github.com/syncgate/syncgate/bench/internal/proc"
)

// serverProc is one server of a campaign cluster.
type serverProc struct {
	name  string // for the log and the results: "redis 2", "nats 1"
	bin   string
	args  []string
	env   []string // added to an empty environment
	dir   string
	addr  string                 // its own client address (not the proxy's)
	ready func(addr string) bool // answers like a ready server

	mu     sync.Mutex
	child  *proc.Child // nil before the first start
	paused bool
	stderr *proc.TailBuffer
}

// start starts the server and waits up to 30 s for it to be ready.
func (s *serverProc) start(ctx context.Context) error {
	s.mu.Lock()
	s.stderr = proc.NewTailBuffer(32 << 10)
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir, cmd.Env = s.dir, s.env
	cmd.Stdout, cmd.Stderr = s.stderr, s.stderr
	child, err := proc.Start(cmd, nil)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("starting %s: %w", s.name, err)
	}
	s.child, s.paused = child, false
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for !s.ready(s.addr) {
		if child.Exited() {
			return fmt.Errorf("%s (pid %d) exited at start: %s\n%s", s.name, child.PID(), child.State(), proc.Indent(s.stderr.String()))
		}
		if time.Now().After(deadline) {
			child.Kill()
			return fmt.Errorf("%s on %s not ready after 30s\n%s", s.name, s.addr, proc.Indent(s.stderr.String()))
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			child.Kill()
			return err
		}
	}
	return nil
}

// pid is the running server's process id, 0 if it is not running.
func (s *serverProc) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.child == nil || s.child.Exited() {
		return 0
	}
	return s.child.PID()
}

// kill sends SIGKILL (which ends a paused process too) and waits for the
// exit.
func (s *serverProc) kill() {
	s.mu.Lock()
	c := s.child
	s.mu.Unlock()
	if c != nil {
		c.Kill()
	}
}

// pause stops the server with SIGSTOP; resume continues it.
func (s *serverProc) pause() error { return s.signal(syscall.SIGSTOP, true) }

func (s *serverProc) resume() error { return s.signal(syscall.SIGCONT, false) }

func (s *serverProc) signal(sig syscall.Signal, paused bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.child == nil || s.child.Exited() {
		return fmt.Errorf("%s is not running", s.name)
	}
	if err := syscall.Kill(s.child.PID(), sig); err != nil {
		return fmt.Errorf("%s: %s: %w", s.name, sig, err)
	}
	s.paused = paused
	return nil
}

// stop continues a paused server and stops it: SIGTERM, SIGKILL after 5 s.
func (s *serverProc) stop() {
	s.mu.Lock()
	c, paused := s.child, s.paused
	s.mu.Unlock()
	if c == nil {
		return
	}
	if paused {
		_ = syscall.Kill(c.PID(), syscall.SIGCONT)
	}
	c.Terminate(5 * time.Second)
}

// log is the tail of the server's output.
func (s *serverProc) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stderr == nil {
		return ""
	}
	return s.stderr.String()
}

// serverSet is a cluster's servers as the proxies' goroutines see them:
// set once they are all known, before the first starts.
type serverSet struct{ p atomic.Pointer[[]*serverProc] }

func (s *serverSet) set(ss []*serverProc) { s.p.Store(&ss) }

// owner is the index of the server that opened the connection from a, or
// -1 (see faults.SocketOwner).
func (s *serverSet) owner(a *net.TCPAddr) int {
	ss := s.p.Load()
	if ss == nil {
		return -1
	}
	pids := make([]int, len(*ss))
	for i, sp := range *ss {
		pids[i] = sp.pid()
	}
	return faults.SocketOwner(a, pids)
}
