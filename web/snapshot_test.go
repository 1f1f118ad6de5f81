package web_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/testdeps"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestClientJSSnapshot: client.js subscribed with {snapshot: true} to a
// channel whose history (10) rolled past its start gets the `snapshot`
// event at the stored seq and then exactly the messages after it.
func TestClientJSSnapshot(t *testing.T) {
	node := testdeps.Node(t)
	url := startMemoryNode(t, func(c *config.Config) {
		c.History.Size = 10
	})
	const ch = "doc:snapjs"
	w := wstest.Dial(t, url)
	epoch := w.Sub(ch).Str("epoch")
	for i := 1; i <= 30; i++ {
		w.Pub(ch, i)
	}
	w.MustCall("snap", map[string]any{"ch": ch, "at": map[string]any{"seq": 25, "epoch": epoch}, "data": map[string]any{"y": "AAA="}}, "snapped")

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
	cmd := exec.CommandContext(ctx, node[0], append(node[1:], "--no-warnings", "e2e/snapshot.test.mjs")...)
	cmd.Env = append(os.Environ(), "CLIENT_JS="+mod, "WS_URL="+url, "CH="+ch, "SNAP=25", "N=30")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	t.Logf("node: %s", strings.TrimSpace(string(out)))
}
