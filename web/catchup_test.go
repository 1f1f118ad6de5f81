package web_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/testdeps"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestClientJSStreamedCatchUp runs client.js under node against a node
// whose per-client queue (64 KB) is far smaller than the history the
// client catches up on (200 x 4 KB): the client asks for a streamed
// catch-up and must get every message once, in order, then `recovered`,
// without being cut off.
func TestClientJSStreamedCatchUp(t *testing.T) {
	node := testdeps.Node(t)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	cfg.Client.MaxQueueBytes = 64 << 10
	cfg.Client.MaxMessageSize = 8 << 10
	cfg.History.PageBytes = 16 << 10
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
	url := "ws://" + addr + "/ws"

	const ch, n = "doc:js", 200
	pub := wstest.Dial(t, url)
	pub.Connect("writer")
	pad := strings.Repeat("x", 4<<10)
	var epoch string
	for i := 1; i <= n; i++ {
		epoch = pub.MustCall("pub", map[string]any{"ch": ch, "data": map[string]any{"i": i, "pad": pad}}, "ack").Str("epoch")
	}

	// client.js is an ES module; node 20 only takes .mjs as one outside a
	// "type": "module" package.
	src, err := os.ReadFile("client.js")
	if err != nil {
		t.Fatal(err)
	}
	mod := filepath.Join(t.TempDir(), "client.mjs")
	if err := os.WriteFile(mod, src, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node[0], append(node[1:], "--no-warnings", "e2e/catchup.test.mjs")...)
	cmd.Env = append(os.Environ(), "CLIENT_JS="+mod, "WS_URL="+url, "CH="+ch, "EPOCH="+epoch, "N="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	t.Logf("node: %s", strings.TrimSpace(string(out)))
}
