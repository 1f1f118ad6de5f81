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
	url := startMemoryNode(t, func(c *config.Config) {
		c.Client.MaxQueueBytes = 64 << 10
		c.Client.MaxMessageSize = 8 << 10
		c.History.PageBytes = 16 << 10
	})

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
