package natsserver

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"
)

// ServerConfig configures an embedded nats-server. The zero value does not
// work: Listen and StoreDir are required (the config package supplies
// "127.0.0.1:4222" and "data/nats").
type ServerConfig struct {
	// Listen is the client address, host:port. Port 0 picks a free port
	// (ask the server for it with ClientURL).
	Listen string
	// StoreDir is where JetStream keeps its data.
	StoreDir string
	// ClusterListen is the route address, host:port; empty runs a single
	// server. Port 0 picks a free port.
	ClusterListen string
	// Routes are the route addresses of the other servers of the cluster,
	// host:port. Listing this server's own address is harmless.
	Routes []string
	// ClusterName names the cluster; all its servers must agree. Default
	// "syncgate".
	ClusterName string
	// ServerName must be unique in a cluster and stable across restarts
	// (JetStream identifies its replicas by it). Default: derived from
	// ClusterListen (or Listen), which is both when ports are fixed.
	ServerName string
	// Log receives the server's log lines; nil discards them.
	Log *slog.Logger

	// User and Password, or Token, are the credential every client and
	// every route of the server must present: the server never runs
	// without one (see natsbase.Node.Open for the generated one). Routes log in
	// as User with Password, or as "syncgate" with Token.
	User, Password string
	Token          string
	// TLSCertFile and TLSKeyFile (PEM) turn TLS on for the client port
	// and, with a cluster, the route port. TLSCAFile (PEM) is the CA that
	// route peers' certificates must chain to; required with a cluster.
	// In-process connections do not use TLS.
	TLSCertFile, TLSKeyFile, TLSCAFile string
}

// HasCredential reports whether a user/password or a token is set.
func (c ServerConfig) HasCredential() bool {
	return c.User != "" || c.Password != "" || c.Token != ""
}

// Exposed reports whether other hosts may reach the server: its client
// address is not loopback, or it has a cluster (routes).
func (c ServerConfig) Exposed() bool {
	if c.ClusterListen != "" || len(c.Routes) > 0 {
		return true
	}
	host, _, err := net.SplitHostPort(c.Listen)
	return err != nil || !IsLoopback(host)
}

// IsLoopback reports whether host is "localhost" or a loopback IP. An
// empty host (all interfaces) is not.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ErrNoCredential: the embedded server was configured without a
// credential; it never accepts anonymous clients.
var ErrNoCredential = errors.New("nats: embedded server: no credential (set User and Password, or Token)")

// routeUser is the user routes log in as when the credential is a token
// (route authentication takes a user and a password).
const tokenRouteUser = "syncgate"

// checkCredential reports a credential that is missing or half set.
func (c ServerConfig) checkCredential() error {
	switch {
	case !c.HasCredential():
		return ErrNoCredential
	case c.Token != "" && (c.User != "" || c.Password != ""):
		return errors.New("nats: embedded server: set User and Password, or Token, not both")
	case c.Token == "" && (c.User == "" || c.Password == ""):
		return errors.New("nats: embedded server: User and Password must both be set")
	}
	return nil
}

// tlsTimeout bounds a TLS handshake on the client and route ports
// (generous: the machine may be loaded).
const tlsTimeout = 5 * time.Second

// ServerMaxPending is the embedded server's limit on bytes waiting to be
// written to one client connection (nats-server max_pending); past it the
// server closes the connection as a slow consumer, which for a gateway
// node means every channel on it. Set here rather than left to the
// server's default so it is a decision: the gateway keeps the history it
// reads far below it (history.max_reads x history.page_bytes, 1 MiB by
// default, 16 MiB when messages grow within catch-ups), and live delivery is drained by the shard goroutines.
const ServerMaxPending = 64 << 20

// serverReadyTimeout bounds how long StartServer waits for the listeners.
const serverReadyTimeout = 10 * time.Second

// StartServer starts an in-process nats-server with JetStream on and waits
// until it accepts connections. The caller owns it: Shutdown, then
// WaitForShutdown.
func StartServer(cfg ServerConfig) (*server.Server, error) {
	opts, err := ServerOptions(cfg)
	if err != nil {
		return nil, err
	}
	// The server would only log a busy port and never become ready: try
	// the address first for a clear, quick error.
	for _, a := range []struct {
		host string
		port int
	}{{opts.Host, opts.Port}, {opts.Cluster.Host, opts.Cluster.Port}} {
		if a.port <= 0 {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(a.host, strconv.Itoa(a.port)))
		if err != nil {
			return nil, fmt.Errorf("nats: embedded server: %w", err)
		}
		ln.Close()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats: embedded server: %w", err)
	}
	if cfg.Log != nil {
		s.SetLoggerV2(slogLogger{cfg.Log}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(serverReadyTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("nats: embedded server on %s not ready after %v", cfg.Listen, serverReadyTimeout)
	}
	return s, nil
}

// ServerOptions turns cfg into nats-server options (JetStream on, signals
// and the server's own logging off).
func ServerOptions(cfg ServerConfig) (*server.Options, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("nats: embedded server: empty store dir")
	}
	host, port, err := splitAddr(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats: embedded server: listen %q: %w", cfg.Listen, err)
	}
	if err := cfg.checkCredential(); err != nil {
		return nil, err
	}
	opts := &server.Options{
		Host:      host,
		Port:      port,
		NoSigs:    true,
		NoLog:     cfg.Log == nil,
		JetStream: true,
		StoreDir:  cfg.StoreDir,

		MaxPending: ServerMaxPending,
	}
	routeUser, routePass := cfg.User, cfg.Password
	if cfg.Token != "" {
		opts.Authorization = cfg.Token
		routeUser, routePass = tokenRouteUser, cfg.Token
	} else {
		// The server keeps a bcrypt hash, so it does not warn about a
		// plaintext password the operator cannot avoid giving us. The
		// lowest cost: the plaintext lives in this process anyway, and
		// every login (in the server's read loop, within the client's
		// connect timeout) pays for it.
		hash, err := bcrypt.GenerateFromPassword([]byte(cfg.Password), bcrypt.MinCost)
		if err != nil {
			return nil, fmt.Errorf("nats: embedded server: password: %w", err)
		}
		opts.Username, opts.Password = cfg.User, string(hash)
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return nil, errors.New("nats: embedded server: TLS needs both a certificate and a key file")
	}
	if cfg.TLSCertFile != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, CaFile: cfg.TLSCAFile})
		if err != nil {
			return nil, fmt.Errorf("nats: embedded server: TLS: %w", err)
		}
		opts.TLSConfig = tc
		opts.TLSTimeout = tlsTimeout.Seconds()
	}
	name := cfg.ServerName
	if cfg.ClusterListen != "" {
		if len(cfg.Routes) == 0 {
			// JetStream refuses to start clustered without them.
			return nil, errors.New("nats: embedded server: a cluster listen address needs routes (the route addresses of the cluster's servers)")
		}
		chost, cport, err := splitAddr(cfg.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("nats: embedded server: cluster listen %q: %w", cfg.ClusterListen, err)
		}
		opts.Cluster.Host = chost
		opts.Cluster.Port = cport
		opts.Cluster.Name = cfg.ClusterName
		if opts.Cluster.Name == "" {
			opts.Cluster.Name = "syncgate"
		}
		// Routes authenticate both ways: this server asks its peers for
		// the credential and presents it to them.
		opts.Cluster.Username, opts.Cluster.Password = routeUser, routePass
		if cfg.TLSCertFile != "" {
			if cfg.TLSCAFile == "" {
				return nil, errors.New("nats: embedded server: TLS with a cluster needs a CA file (to verify the route peers)")
			}
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, CaFile: cfg.TLSCAFile, Verify: true})
			if err != nil {
				return nil, fmt.Errorf("nats: embedded server: route TLS: %w", err)
			}
			// Routes are dialled too: the CA verifies the peer as a server
			// (as nats-server's own config parser sets it).
			tc.RootCAs = tc.ClientCAs
			opts.Cluster.TLSConfig = tc
			opts.Cluster.TLSTimeout = tlsTimeout.Seconds()
		}
		for _, r := range cfg.Routes {
			if _, _, err := net.SplitHostPort(r); err != nil {
				return nil, fmt.Errorf("nats: embedded server: route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats-route", User: url.UserPassword(routeUser, routePass), Host: r})
		}
		if name == "" {
			name = "syncgate-" + cfg.ClusterListen
		}
	}
	if name == "" {
		name = "syncgate-" + cfg.Listen
	}
	opts.ServerName = strings.NewReplacer(":", "-", "[", "", "]", "").Replace(name)
	return opts, nil
}

// splitAddr splits host:port; port 0 becomes server.RANDOM_PORT (nats-server
// reads 0 as "the default port").
func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// slogLogger adapts slog to the server's Logger. Its notices (the startup
// banner, listening ports, JetStream's settings: a dozen lines every start)
// are routine inside a gateway node and go to debug; warnings and errors
// surface as such. Fatal lines are logged as errors: the process is not
// ours to exit.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Noticef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s slogLogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s slogLogger) Fatalf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s slogLogger) Errorf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s slogLogger) Debugf(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s slogLogger) Tracef(string, ...any)           {}

// RandomToken returns a fresh 256-bit token, for an embedded server that
// only this process talks to.
func RandomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics instead)
	return base64.RawURLEncoding.EncodeToString(b[:])
}
