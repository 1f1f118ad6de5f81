package natsserver

import (
	"fmt"
	"github.com/syncgate/syncgate/internal/testlog"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

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

// rogueServer starts a nats-server outside the cluster that routes to
// route (a nats-route:// URL, with or without a credential).
func rogueServer(t *testing.T, route string) *server.Server {
	t.Helper()
	u, err := url.Parse(route)
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		Cluster: server.ClusterOpts{Name: "syncgate", Host: "127.0.0.1", Port: server.RANDOM_PORT},
		Routes:  []*url.URL{u},
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("rogue server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// TestRouteNeedsCredential: a server that routes to the embedded server's
// cluster port without the credential (to receive every message, or to
// inject some) is refused; with the credential it is let in, which shows
// the refusal is the credential's doing.
func TestRouteNeedsCredential(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clusterAddr := ln.Addr().String()
	ln.Close()
	var logs testlog.Buffer
	srv, err := StartServer(ServerConfig{
		Listen: "127.0.0.1:0", StoreDir: t.TempDir(),
		ClusterListen: clusterAddr, Routes: []string{clusterAddr},
		Token: "route-token-0123456789",
		Log:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()

	rogueServer(t, "nats-route://"+clusterAddr)
	waitFor(t, 20*time.Second, "the anonymous route to be refused or let in", func() bool {
		return srv.NumRoutes() > 0 || strings.Contains(logs.String(), "authentication error")
	})
	if n := srv.NumRoutes(); n != 0 {
		t.Fatalf("a route without the credential joined the embedded server's cluster (%d routes)", n)
	}

	rogueServer(t, fmt.Sprintf("nats-route://%s:%s@%s", tokenRouteUser, "route-token-0123456789", clusterAddr))
	waitFor(t, 20*time.Second, "the route with the credential", func() bool { return srv.NumRoutes() > 0 })
	if strings.Contains(logs.String(), "route-token-0123456789") {
		t.Error("the server logged the credential")
	}
}

// TestServerNoticesAtDebug: the embedded server's banner and routine
// notices stay out of a node's log at info level and show at debug.
func TestServerNoticesAtDebug(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var logs testlog.Buffer
		srv, err := StartServer(ServerConfig{
			Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Token: "notice-token-0123456789",
			Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level})),
		})
		if err != nil {
			t.Fatal(err)
		}
		srv.Shutdown()
		srv.WaitForShutdown()
		out := logs.String()
		banner := strings.Contains(out, "Starting nats-server")
		switch {
		case level == slog.LevelInfo && out != "":
			t.Errorf("at info the embedded server logged:\n%s", out)
		case level == slog.LevelDebug && !banner:
			t.Errorf("at debug the embedded server's banner is missing:\n%s", out)
		}
	}
}

func TestStartServerBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	_, err = StartServer(ServerConfig{Listen: ln.Addr().String(), StoreDir: t.TempDir(), Token: "t"})
	if err == nil || !strings.Contains(err.Error(), "address already in use") || time.Since(start) > 2*time.Second {
		t.Fatalf("StartServer on a busy port: %v after %v, want a quick address-in-use error", err, time.Since(start))
	}
}

// TestServerOptionsCredential: the embedded server never runs without a
// credential; half-set or conflicting ones are refused; routes carry it.
func TestServerOptionsCredential(t *testing.T) {
	base := ServerConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}
	for name, edit := range map[string]func(c *ServerConfig){
		"none":             func(*ServerConfig) {},
		"user only":        func(c *ServerConfig) { c.User = "u" },
		"password only":    func(c *ServerConfig) { c.Password = "p" },
		"token and user":   func(c *ServerConfig) { c.Token, c.User, c.Password = "t", "u", "p" },
		"cert without key": func(c *ServerConfig) { c.Token, c.TLSCertFile = "t", "c.pem" },
		"cluster TLS, no CA": func(c *ServerConfig) {
			c.Token, c.TLSCertFile, c.TLSKeyFile, c.ClusterListen, c.Routes = "t", "c", "k", "127.0.0.1:0", []string{"127.0.0.1:1"}
		},
	} {
		c := base
		edit(&c)
		if _, err := ServerOptions(c); err == nil {
			t.Errorf("%s: ServerOptions accepted it", name)
		}
	}
	c := base
	c.Token, c.ClusterListen, c.Routes = "tok", "127.0.0.1:0", []string{"127.0.0.1:6222"}
	opts, err := ServerOptions(c)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Authorization != "tok" || opts.Cluster.Username == "" || opts.Cluster.Password != "tok" {
		t.Fatalf("token %q, cluster user %q password %q", opts.Authorization, opts.Cluster.Username, opts.Cluster.Password)
	}
	if p, _ := opts.Routes[0].User.Password(); p != "tok" {
		t.Fatalf("route URL %v does not carry the credential", opts.Routes[0])
	}
}
