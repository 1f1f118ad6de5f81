package gateway_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
)

// logBuf is a goroutine-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// farListener is a loopback listener that reports a non-loopback address
// (192.0.2.1, TEST-NET-1), so the node treats it as reachable beyond this
// host without the test exposing a port.
type farListener struct{ net.Listener }

func (farListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9090} }

// TestOpsExposureWarning: the node logs a warning when /metrics is served
// beyond loopback without metrics.token, and not when it is on loopback or
// has a token; pprof on loopback does not warn either.
func TestOpsExposureWarning(t *testing.T) {
	const metricsWarn = "metrics are served beyond this host without a token"
	const pprofWarn = "pprof is served beyond this host without a token"
	for _, tc := range []struct {
		name  string
		far   bool
		token string
		warn  bool
	}{
		{"beyond loopback, no token", true, "", true},
		{"beyond loopback, token", true, "s3cret-token-of-some-length", false},
		{"loopback, no token", false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Listen = "127.0.0.1:0"
			cfg.Metrics.Token = tc.token
			cfg.Debug.PprofListen = "127.0.0.1:0"
			var logs logBuf
			log := slog.New(slog.NewTextHandler(&logs, nil))
			srv, err := gateway.New(cfg.Gateway(), memory.New(memory.Config{HistorySize: 10}), log)
			if err != nil {
				t.Fatalf("gateway.New: %v", err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var mln net.Listener = ln
			if tc.far {
				mln = farListener{ln}
			}
			done := make(chan error, 1)
			go func() { done <- srv.ServeMetrics(mln) }()
			// ServeMetrics logs before it serves: once a request is
			// answered, the warning (if any) is written.
			deadline := time.Now().Add(2 * time.Second)
			for {
				c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
				if err == nil {
					c.SetDeadline(time.Now().Add(time.Second))
					c.Write([]byte("GET /metrics HTTP/1.0\r\n\r\n"))
					n, _ := c.Read(make([]byte, 16))
					c.Close()
					if n > 0 {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("metrics listener never answered: %v", err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			<-done
			out := logs.String()
			if got := strings.Contains(out, metricsWarn); got != tc.warn {
				t.Fatalf("metrics warning logged %v, want %v; log:\n%s", got, tc.warn, out)
			}
			if strings.Contains(out, pprofWarn) {
				t.Fatalf("pprof on loopback warned; log:\n%s", out)
			}
		})
	}
}
