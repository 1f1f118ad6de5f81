package gateway_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestReadyzDuringShutdown: while a node drains its clients, /readyz
// answers 503 "shutting down" (so a load balancer stops sending it new
// clients), asked on an HTTP connection opened before the drain (the
// listener is already closed then).
func TestReadyzDuringShutdown(t *testing.T) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Server.DrainWindow = time.Second // one client: told to leave ~1 s in
	b := memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL})
	srv, err := gateway.New(cfg.Gateway(), b, nil)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	addr, done := wstest.Serve(t, srv, cfg.Listen)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	get := func() (int, string, error) {
		resp, err := hc.Get("http://" + addr + "/readyz")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	if code, body, err := get(); err != nil || code != 200 {
		t.Fatalf("readyz before shutdown: %d %q %v", code, body, err)
	}
	c := wstest.Dial(t, "ws://"+addr+"/ws")
	c.Connect("alice")

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	deadline := time.Now().Add(900 * time.Millisecond)
	for {
		code, body, err := get()
		if err != nil {
			t.Fatalf("readyz during drain: %v", err)
		}
		if code == http.StatusServiceUnavailable {
			if !strings.Contains(body, "shutting down") {
				t.Fatalf("readyz during drain: 503 %q, want shutting down", body)
			}
			break
		}
		if code != 200 || time.Now().After(deadline) {
			t.Fatalf("readyz during drain: %d %q, want 503", code, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-shut:
		t.Fatalf("shutdown returned %v before the drain was observed to end", err)
	default:
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-done; err != gateway.ErrServerClosed {
		t.Fatalf("serve returned %v", err)
	}
}
