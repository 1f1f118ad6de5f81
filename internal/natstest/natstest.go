// Package natstest starts real in-process nats-servers for tests and
// benchmarks (Start, for programs outside tests): one server, or a cluster of servers with routes, JetStream on,
// bound to 127.0.0.1 on free ports, data in a test temp dir. Servers can be
// shut down and restarted on the same ports and store directory, to test
// what survives.
//
// Every server is shut down when the test ends. Helpers call t.Fatal, so
// call them from the test goroutine.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is one in-process nats-server that can be stopped and restarted.
type Server struct {
	mu   sync.Mutex
	srv  *server.Server
	opts *server.Options // ports fixed after the first start
}

// Option edits the server options before the first start.
type Option func(*server.Options)

// WithoutJetStream turns JetStream off.
func WithoutJetStream() Option { return func(o *server.Options) { o.JetStream = false } }

// baseOptions: loopback, free port, JetStream in dir.
func baseOptions(dir string) *server.Options {
	return &server.Options{
		Host:                  "127.0.0.1",
		Port:                  server.RANDOM_PORT,
		NoLog:                 true,
		NoSigs:                true,
		JetStream:             true,
		StoreDir:              dir,
		DisableShortFirstPing: true,
		// Small, so that many test servers fit on a small machine.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  1 << 30,
	}
}

// RunServer starts a server and shuts it down when the test ends.
func RunServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := baseOptions(t.TempDir())
	for _, f := range opts {
		f(o)
	}
	s := &Server{opts: o}
	s.start(t)
	if t.Failed() {
		t.FailNow()
	}
	t.Cleanup(s.Shutdown)
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	if err := s.startErr(); err != nil {
		t.Errorf("natstest: %v", err)
	}
}

func (s *Server) startErr() error {
	srv, err := server.NewServer(s.opts.Clone())
	if err != nil {
		return fmt.Errorf("new server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("server %s not ready", s.opts.ServerName)
	}
	// Pin the ports so a restart comes back where clients look.
	if s.opts.Port == server.RANDOM_PORT {
		s.opts.Port = srv.Addr().(*net.TCPAddr).Port
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	return nil
}

// Start starts a server outside a test (a benchmark program): JetStream
// data in dir, a free loopback port. The caller shuts it down.
func Start(dir string, opts ...Option) (*Server, error) {
	o := baseOptions(dir)
	for _, f := range opts {
		f(o)
	}
	s := &Server{opts: o}
	if err := s.startErr(); err != nil {
		return nil, err
	}
	return s, nil
}

// Server returns the running server, nil while shut down.
func (s *Server) Server() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// URL is the client URL (stable across restarts).
func (s *Server) URL() string {
	return fmt.Sprintf("nats://%s:%d", s.opts.Host, s.opts.Port)
}

// StoreDir is the JetStream directory.
func (s *Server) StoreDir() string { return s.opts.StoreDir }

// Shutdown stops the server and waits for it. A second call is a no-op.
func (s *Server) Shutdown() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart starts the server again on the same ports and store directory
// (shutting it down first if it runs).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Shutdown()
	s.start(t)
	if t.Failed() {
		t.FailNow()
	}
}

// Cluster is n servers routed to each other, with JetStream clustered.
type Cluster struct {
	Servers []*Server
}

// RunCluster starts n servers in one cluster and waits until JetStream has
// a meta leader. All are shut down when the test ends.
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: cluster of %d", n)
	}
	// JetStream needs each server's routes up front: pick the ports first.
	ports := make([]int, n)
	var routes []*url.URL
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: %v", err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])})
	}
	c := &Cluster{}
	for i := range n {
		o := baseOptions(t.TempDir())
		o.ServerName = fmt.Sprintf("S%d", i+1)
		o.Cluster.Name = "syncgate-test"
		o.Cluster.Host = "127.0.0.1"
		o.Cluster.Port = ports[i]
		o.Cluster.PoolSize = -1
		o.Routes = routes
		c.Servers = append(c.Servers, &Server{opts: o})
	}
	var wg sync.WaitGroup
	for _, s := range c.Servers {
		t.Cleanup(s.Shutdown)
		wg.Go(func() { s.start(t) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	c.WaitJetStream(t, 20*time.Second)
	return c
}

// URL lists every server's client URL, comma-separated.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.URL()
	}
	return strings.Join(urls, ",")
}

// WaitJetStream waits until the running servers agree on a JetStream meta
// leader.
func (c *Cluster) WaitJetStream(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		leader, current := false, true
		for _, s := range c.Servers {
			srv := s.Server()
			if srv == nil {
				continue
			}
			if srv.JetStreamIsLeader() {
				leader = true
			}
			if !srv.JetStreamIsCurrent() {
				current = false
			}
		}
		if leader && current {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: no JetStream meta leader after %v", timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// StreamLeader returns the server that leads the named stream.
func (c *Cluster) StreamLeader(t testing.TB, stream string) *Server {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, s := range c.Servers {
			if srv := s.Server(); srv != nil && srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: no leader for stream %s", stream)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
