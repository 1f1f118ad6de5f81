package web_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/testdeps"
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

// runClientJS runs the node script web/e2e/<script> against a copy of
// client.js (as .mjs: node 20 takes an ES module only under that name,
// outside a "type": "module" package) passed as CLIENT_JS, with env added
// to the environment; it fails t when the script exits non-zero or is not
// done within timeout, and logs its output.
func runClientJS(t *testing.T, script string, timeout time.Duration, env ...string) {
	t.Helper()
	node := testdeps.Node(t)
	src, err := os.ReadFile("client.js")
	if err != nil {
		t.Fatal(err)
	}
	mod := filepath.Join(t.TempDir(), "client.mjs")
	if err := os.WriteFile(mod, src, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node[0], append(node[1:], "--no-warnings", filepath.Join("e2e", script))...)
	cmd.Env = append(append(os.Environ(), "CLIENT_JS="+mod), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, out)
	}
	t.Logf("node: %s", strings.TrimSpace(string(out)))
}
