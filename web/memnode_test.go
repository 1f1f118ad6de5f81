package web_test

import (
	"context"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// startMemoryNode serves an in-process gateway on the memory broker on a
// loopback port (defaults, no publish rate limit, a short drain; tune
// changes the rest) and returns its WebSocket URL; the node is shut down
// when t ends.
func startMemoryNode(t *testing.T, tune func(*config.Config)) string {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	if tune != nil {
		tune(&cfg)
	}
	srv, err := gateway.New(cfg.Gateway(), memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL}), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, done := wstest.Serve(t, srv, cfg.Listen)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return "ws://" + addr + "/ws"
}
