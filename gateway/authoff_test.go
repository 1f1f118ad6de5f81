package gateway_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
)

// TestAuthOffWarns proves docs/security.md's "With no auth.* key set, the
// node logs a warning at startup": gateway.New logs the warning at WARN
// with auth off, and not with an HMAC secret set.
func TestAuthOffWarns(t *testing.T) {
	const warn = "authentication is OFF"
	for _, tc := range []struct {
		name string
		set  func(*config.Config)
		want bool
	}{
		{"auth off", func(*config.Config) {}, true},
		{"hmac secret", withHMAC, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			tc.set(&cfg)
			var logs logBuf
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			srv, err := gateway.New(cfg.Gateway(), memory.New(memory.Config{}), log)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			got := logs.String()
			if has := strings.Contains(got, "level=WARN") && strings.Contains(got, warn); has != tc.want {
				t.Fatalf("%s: warning logged %v, want %v; log:\n%s", tc.name, has, tc.want, got)
			}
		})
	}
}
