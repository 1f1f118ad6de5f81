// Package gwtest runs gateways for tests outside the gateway package
// (the change feed's, the example backend's): real listeners on
// loopback, real WebSocket clients.
package gwtest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/client/api"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/gateway/serverapi"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// Node is one gateway on a loopback port.
type Node struct {
	Srv  *gateway.Server
	Addr string
}

// Start runs a gateway on b (not started: the gateway starts it) with
// the default configuration, publish rate limit off; edit may change it.
// It is shut down when the test ends.
func Start(t testing.TB, b brokers.Broker, edit func(*config.Config)) *Node {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	srv, err := gateway.New(cfg.Gateway(), b, nil)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	addr, done := wstest.Serve(t, srv, cfg.Listen)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return &Node{Srv: srv, Addr: addr}
}

// Dial connects a WebSocket client to n as user (connect sent); its
// failures are reported with t.Errorf, so it can run off the test
// goroutine.
func (n *Node) Dial(t testing.TB, user string) *wstest.Client {
	t.Helper()
	c := wstest.Dial(t, "ws://"+n.Addr+"/ws", wstest.Named(user), wstest.NonFatal())
	c.Connect(user)
	return c
}

// APIKey is the key of the server API that API serves.
const APIKey = "gwtest-api-key-0123456789"

// API serves n's server API (gateway/serverapi) on a loopback port, with
// key APIKey, and returns a client of it. It is shut down when the test
// ends, before the node.
func (n *Node) API(t testing.TB) *api.Client {
	t.Helper()
	s, err := serverapi.New(serverapi.Config{Keys: []string{APIKey}}, n.Srv, nil)
	if err != nil {
		t.Fatalf("serverapi.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = s.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	})
	return api.New("http://"+ln.Addr().String(), APIKey, api.Options{})
}
