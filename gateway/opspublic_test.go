package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/syncgate/syncgate/internal/config"
)

// TestOpsNotOnPublicListener proves docs/security.md's "/metrics and
// pprof ... are never on the public listener": with both served on their
// own listeners, the public one answers 404 to /metrics and to every
// pprof path, and shows no metric.
func TestOpsNotOnPublicListener(t *testing.T) {
	ts := startServer(t, "epoll", func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		c.Debug.PprofListen = "127.0.0.1:0"
	})
	for _, path := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
		resp, err := http.Get("http://" + ts.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "syncgate_") || strings.Contains(string(body), "goroutine") {
			t.Errorf("GET %s on the public listener: %d %.80q, want 404 and nothing of it", path, resp.StatusCode, body)
		}
	}
}
