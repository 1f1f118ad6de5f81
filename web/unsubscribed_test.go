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
)

// TestClientJSUnsubscribedByServer: client.js forgets a channel the server
// API unsubscribed it from and says so with an "unsubscribed" event.
func TestClientJSUnsubscribedByServer(t *testing.T) {
	node := testdeps.Node(t)
	url, backend := startAPINode(t, func(c *config.Config) { c.History.Size = 10 })

	src, err := os.ReadFile("client.js")
	if err != nil {
		t.Fatal(err)
	}
	mod := filepath.Join(t.TempDir(), "client.mjs")
	if err := os.WriteFile(mod, src, 0o644); err != nil {
		t.Fatal(err)
	}
	const ch = "doc:unsub"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node[0], append(node[1:], "--no-warnings", "e2e/unsubscribed.test.mjs")...)
	cmd.Env = append(os.Environ(), "CLIENT_JS="+mod, "WS_URL="+url, "CH="+ch)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for {
		ms, err := backend.Presence(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the node script never subscribed: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r, err := backend.Unsubscribe(ctx, "js", ch); err != nil || r.Local != 1 {
		t.Fatalf("unsubscribe = %+v, %v", r, err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node: %v\n%s", err, out.String())
	}
	t.Logf("node: %s", strings.TrimSpace(out.String()))
}
