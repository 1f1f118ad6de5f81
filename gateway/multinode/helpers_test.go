package multinode_test

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

const wait = 10 * time.Second

// node is one gateway on a loopback port.
type node struct {
	srv         *gateway.Server
	addr        string
	metricsAddr string // the operational listener (/metrics)
	broker      brokers.Broker
	once        sync.Once
}

// startNode runs a gateway on b; it is shut down when the test ends.
func startNode(t *testing.T, b brokers.Broker, edit func(*config.Config)) *node {
	t.Helper()
	return startNodeLog(t, b, nil, edit)
}

// startNodeTB is startNode for tests and benchmarks.
func startNodeTB(t testing.TB, b brokers.Broker, edit func(*config.Config)) *node {
	t.Helper()
	return startNodeLog(t, b, nil, edit)
}

// startNodeLog is startNode with the gateway logging to log.
func startNodeLog(t testing.TB, b brokers.Broker, log *slog.Logger, edit func(*config.Config)) *node {
	t.Helper()
	return startNodeGateway(t, b, log, edit, nil)
}

// startNodeGateway is startNodeLog with gedit applied to the gateway's
// Config too (for settings without a config key).
func startNodeGateway(t testing.TB, b brokers.Broker, log *slog.Logger, edit func(*config.Config), gedit func(*gateway.Config)) *node {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	cfg.Presence.TTL = 2 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	gcfg := cfg.Gateway()
	if gedit != nil {
		gedit(&gcfg)
	}
	srv, err := gateway.New(gcfg, b, log)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	addr, done := wstest.Serve(t, srv, cfg.Listen)
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mdone := make(chan error, 1)
	go func() { mdone <- srv.ServeMetrics(mln) }()
	n := &node{srv: srv, addr: addr, metricsAddr: mln.Addr().String(), broker: b}
	t.Cleanup(func() {
		n.shutdown(t)
		if err := <-done; err != gateway.ErrServerClosed {
			t.Errorf("serve returned %v", err)
		}
		if err := <-mdone; err != gateway.ErrServerClosed {
			t.Errorf("serve metrics returned %v", err)
		}
	})
	return n
}

func (n *node) shutdown(t testing.TB) {
	n.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.srv.Shutdown(ctx); err != nil {
			t.Logf("shutdown: %v", err)
		}
	})
}

// dial connects a client to n; name prefixes its failure reports. Its
// failures are reported with t.Errorf (the methods return zero values), so
// it can run off the test goroutine.
func dial(t *testing.T, n *node, name string) *wstest.Client {
	t.Helper()
	return wstest.Dial(t, "ws://"+n.addr+"/ws", wstest.Named(name), wstest.NonFatal())
}
