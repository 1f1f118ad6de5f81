package web_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/client/api"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/gateway/serverapi"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/testdeps"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestClientJSUnsubscribedByServer: client.js forgets a channel the server
// API unsubscribed it from and says so with an "unsubscribed" event.
func TestClientJSUnsubscribedByServer(t *testing.T) {
	node := testdeps.Node(t)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Broker.Type = "memory"
	cfg.Server.DrainWindow = 50 * time.Millisecond
	srv, err := gateway.New(cfg.Gateway(), memory.New(memory.Config{HistorySize: 10, HistoryTTL: time.Minute}), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, done := wstest.Serve(t, srv, cfg.Listen)
	const key = "web-test-key-0123456789"
	as, err := serverapi.New(serverapi.Config{Keys: []string{key}}, srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adone := make(chan error, 1)
	go func() { adone <- as.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = as.Shutdown(ctx)
		if err := <-adone; !errors.Is(err, serverapi.ErrServerClosed) {
			t.Errorf("api serve: %v", err)
		}
		_ = srv.Shutdown(ctx)
		<-done
	})
	backend := api.New("http://"+ln.Addr().String(), key, api.Options{})

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
	cmd.Env = append(os.Environ(), "CLIENT_JS="+mod, "WS_URL=ws://"+addr+"/ws", "CH="+ch)
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
