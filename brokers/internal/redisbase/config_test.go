package redisbase

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestWarnPlaintextPassword(t *testing.T) {
	for _, c := range []struct {
		pw, tls bool
		addrs   []string
		warn    string // "" = no warning
	}{
		{true, false, []string{"10.0.0.5:6379"}, "10.0.0.5:6379"},
		{true, false, []string{"127.0.0.1:16379", "redis-2:6379"}, "redis-2:6379"},
		{true, false, []string{"127.0.0.1:16379", "localhost:16380", "[::1]:16381"}, ""},
		{true, true, []string{"10.0.0.5:6379"}, ""},
		{false, false, []string{"10.0.0.5:6379"}, ""},
	} {
		var buf bytes.Buffer
		WarnPlaintextPassword(slog.New(slog.NewTextHandler(&buf, nil)), "redis", c.pw, c.tls, c.addrs...)
		out := buf.String()
		if c.warn == "" && out != "" || c.warn != "" && (!strings.Contains(out, "level=WARN") || !strings.Contains(out, c.warn) || strings.Contains(out, "127.0.0.1")) {
			t.Errorf("%+v: logged %q", c, out)
		}
	}
}
