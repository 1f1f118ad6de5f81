package web_test

import (
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/testdeps"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestClientJSBinary: client.js publishes a Uint8Array as a binary
// message and hands binary publications (live as binary messages, in a
// catch-up as base64 "bin") and binary snapshots to the application as
// Uint8Array (web/e2e/binary.test.mjs).
func TestClientJSBinary(t *testing.T) {
	url := startMemoryNode(t, nil)
	const ch = "doc:binjs"
	w := wstest.Dial(t, url)
	epoch := w.Sub(ch).Str("epoch")
	peer := []byte{0xde, 0xad, 0, '\n', 0xbe, 0xef}
	w.MustCall("pub", map[string]any{"ch": ch, "bin": base64.StdEncoding.EncodeToString(peer)}, "ack")

	runClientJS(t, "binary.test.mjs", 60*time.Second, "WS_URL="+url, "CH="+ch, "EPOCH="+epoch, "PEER="+base64.StdEncoding.EncodeToString(peer))
}

// TestBrowserBinary runs web/e2e/binary.browser.test.mjs: client.js in
// headless Chromium publishes a Uint8Array, another client receives it as
// one, stores a binary snapshot, and a third loads it. Needs chromium and
// web/e2e/node_modules (scripts/deps.sh), like TestBrowser.
func TestBrowserBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: not in -short mode")
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	nodeJS := testdeps.Binary(t, "node")
	if _, err := os.Stat(chromium); err != nil {
		testdeps.Missing(t, chromium)
	}
	if _, err := os.Stat("e2e/node_modules/playwright-core/package.json"); err != nil {
		testdeps.Missing(t, "web/e2e/node_modules (npm ci in web/e2e)")
	}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
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
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeJS, "e2e/binary.browser.test.mjs")
	cmd.Env = append(os.Environ(), "NODE=http://"+addr, "CH=doc:binbrowser", "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	t.Logf("browser: %s", strings.TrimSpace(string(out)))
}
