package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ioModes are the two connection paths; every end-to-end test runs on both.
var ioModes = []string{"epoll", "goroutine"}

type testServer struct {
	srv         *gateway.Server
	addr        string
	metricsAddr string // the operational listener (/metrics)
	cfg         config.Config
	broker      *memory.Broker // for tests that write to the broker directly
}

func (ts *testServer) url() string { return "ws://" + ts.addr + "/ws" }

// startServer runs a gateway on a random loopback port with the memory
// broker, and its metrics listener on another; it is shut down when the test
// ends.
func startServer(t testing.TB, mode string, edit func(*config.Config)) *testServer {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Server.IO = mode
	cfg.Client.PublishRate = 0 // tests publish in bursts; the limit has its own test
	cfg.Server.DrainWindow = 50 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	b := memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL})
	srv, err := gateway.New(cfg.Gateway(), b, nil)
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
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != gateway.ErrServerClosed {
			t.Errorf("serve returned %v", err)
		}
		if err := <-mdone; err != gateway.ErrServerClosed {
			t.Errorf("serve metrics returned %v", err)
		}
	})
	return &testServer{srv: srv, addr: addr, metricsAddr: mln.Addr().String(), cfg: cfg, broker: b}
}

func dial(t testing.TB, ts *testServer) *wstest.Client {
	t.Helper()
	return wstest.Dial(t, ts.url())
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func forModes(t *testing.T, f func(t *testing.T, mode string)) {
	for _, m := range ioModes {
		t.Run(m, func(t *testing.T) { f(t, m) })
	}
}

func jsonStr(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func mustJSON(s string) any {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		panic(err)
	}
	return v
}
