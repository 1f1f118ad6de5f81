package web_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/client/api"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/gateway/serverapi"
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
	return startNode(t, func(cfg config.Config) brokers.Broker {
		return memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL})
	}, tune)
}

// startNode is startMemoryNode on the broker newBroker makes from the
// node's config.
func startNode(t *testing.T, newBroker func(config.Config) brokers.Broker, tune func(*config.Config)) string {
	t.Helper()
	url, _ := serveNode(t, newBroker, tune)
	return url
}

// startAPINode is startMemoryNode with the server API served on another
// loopback port: it returns the node's WebSocket URL and a server API
// client with its key.
func startAPINode(t *testing.T, tune func(*config.Config)) (string, *api.Client) {
	t.Helper()
	url, srv := serveNode(t, func(cfg config.Config) brokers.Broker {
		return memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL})
	}, tune)
	const key = "web-test-key-0123456789"
	as, err := serverapi.New(serverapi.Config{Keys: []string{key}}, srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- as.Serve(ln) }()
	t.Cleanup(func() { // runs before the node's own cleanup
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = as.Shutdown(ctx)
		if err := <-done; !errors.Is(err, serverapi.ErrServerClosed) {
			t.Errorf("api serve: %v", err)
		}
	})
	return url, api.New("http://"+ln.Addr().String(), key, api.Options{})
}

// serveNode serves the node of startNode and returns its URL and server.
func serveNode(t *testing.T, newBroker func(config.Config) brokers.Broker, tune func(*config.Config)) (string, *gateway.Server) {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	if tune != nil {
		tune(&cfg)
	}
	srv, err := gateway.New(cfg.Gateway(), newBroker(cfg), nil)
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
	return "ws://" + addr + "/ws", srv
}

// runClientJS runs the node script web/e2e/<script> against copies of
// client.js and yjs.js (as .mjs: node 20 takes an ES module only under
// that name, outside a "type": "module" package) passed as CLIENT_JS and
// YJS_JS, with env added
// to the environment; it fails t when the script exits non-zero or is not
// done within timeout, and logs its output.
func runClientJS(t *testing.T, script string, timeout time.Duration, env ...string) {
	t.Helper()
	runClientJSControl(t, script, timeout, nil, env...)
}

// runClientJSControl is runClientJS for a script that asks the test to
// act (stop a broker...): each line it prints starting with "> " is
// handed to control, whose answer goes back as one line on its stdin.
func runClientJSControl(t *testing.T, script string, timeout time.Duration, control func(req string) string, env ...string) {
	t.Helper()
	node := testdeps.Node(t)
	dir := t.TempDir()
	for _, f := range []string{"client.js", "yjs.js"} {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, strings.TrimSuffix(f, ".js")+".mjs"), src, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node[0], append(node[1:], "--no-warnings", filepath.Join("e2e", script))...)
	cmd.Env = append(append(os.Environ(), "CLIENT_JS="+filepath.Join(dir, "client.mjs"), "YJS_JS="+filepath.Join(dir, "yjs.mjs")), env...)
	var (
		mu  sync.Mutex
		out strings.Builder
	)
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		mu.Lock()
		out.WriteString(line + "\n")
		mu.Unlock()
		if req, ok := strings.CutPrefix(line, "> "); ok && control != nil {
			if _, err := io.WriteString(stdin, control(req)+"\n"); err != nil {
				t.Errorf("answering %q: %v", req, err)
			}
		}
	}
	err = cmd.Wait()
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, out.String())
	}
	t.Logf("node: %s", strings.TrimSpace(out.String()))
}

// requireYjs ends t with testdeps.Missing unless web/e2e/node_modules holds
// the pinned Yjs (npm ci in web/e2e).
func requireYjs(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("e2e/node_modules/yjs/package.json"); err != nil {
		testdeps.Missing(t, "web/e2e/node_modules (npm ci in web/e2e)")
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
