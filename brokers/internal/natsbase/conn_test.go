package natsbase

import (
	"github.com/syncgate/syncgate/internal/natsserver"
	"github.com/syncgate/syncgate/internal/testlog"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestCloseIsNotADisconnect: the node closing its own connection (every
// stop) logs no warning; a server that goes away still does.
func TestCloseIsNotADisconnect(t *testing.T) {
	srv, err := natsserver.StartServer(natsserver.ServerConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Token: "close-token-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	connect := func(logs *testlog.Buffer) *Conn {
		c, err := Connect(t.Context(), ConnConfig{
			URL:  srv.ClientURL(),
			Auth: ClientAuth{Token: "close-token-0123456789"},
			Log:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var closed testlog.Buffer
	connect(&closed).Close()
	if strings.Contains(closed.String(), "level=WARN") {
		t.Errorf("closing the connection logged a warning:\n%s", closed.String())
	}
	var lost testlog.Buffer
	c := connect(&lost)
	defer c.Close()
	srv.Shutdown()
	srv.WaitForShutdown()
	waitFor(t, 10*time.Second, "a disconnect warning", func() bool { return strings.Contains(lost.String(), "nats: disconnected") })
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
