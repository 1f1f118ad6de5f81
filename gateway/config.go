package gateway

import (
	"errors"
	"fmt"
	"time"
)

// Config configures a Server. Its zero value works: every zero field takes
// the default named in its comment (the defaults of config.yaml, which
// internal/config maps onto this type). A count or rate whose comment says
// "-1: no cap" has no limit when negative; 0 always means the default.
type Config struct {
	Client   ClientConfig
	Server   ServerConfig
	History  HistoryConfig
	Presence PresenceConfig
	Auth     AuthConfig
	Metrics  MetricsConfig
	Debug    DebugConfig
	Proxy    ProxyConfig
	// ClusterSecret signs the control messages nodes exchange on the
	// broker (key api.cluster_secret); empty: none sent or accepted.
	ClusterSecret string
}

// ClientConfig holds per-connection limits (keys client.*).
type ClientConfig struct {
	// PingInterval is how often a client must send something; a client
	// silent for twice this long is disconnected. Default 25s.
	PingInterval time.Duration
	// MaxMessageSize is the largest message a client may send, in bytes.
	// Default 65536, at least 256.
	MaxMessageSize int
	// MaxSubscriptions is how many channels one connection may be
	// subscribed to at once. Default 1000.
	MaxSubscriptions int
	// HandshakeTimeout is how long a new connection has to complete the
	// WebSocket handshake. Default 10s.
	HandshakeTimeout time.Duration
	// MaxQueueBytes bounds one connection's outbound queue; a client
	// above it is disconnected as a slow consumer. Default 1 MiB, at
	// least 4096.
	MaxQueueBytes int
	// MaxConnectionsPerUser caps one user's connections on this node.
	// Default 100; -1: no cap.
	MaxConnectionsPerUser int
	// PublishRate is the publishes per second one connection (or one
	// user's POST /pub) may make, a token bucket of PublishBurst.
	// Default 100; -1: no cap.
	PublishRate int
	// PublishBurst is the token bucket's size. Default 200.
	PublishBurst int
	// FrameTimeout is how long a client has to finish a frame, or a
	// fragmented message, once its first byte arrived. Default 10s.
	FrameTimeout time.Duration
	// ControlFrameRate caps the ping and pong frames one connection may
	// send per second. Default 100; -1: no cap.
	ControlFrameRate int
}

// ServerConfig is the node's own behaviour (keys server.*).
type ServerConfig struct {
	// IO is "epoll" (one readiness loop, Linux only) or "goroutine" (one
	// reader goroutine per connection). Default "epoll".
	IO string
	// Workers is the size of the read worker pool. Default: chosen from
	// GOMAXPROCS.
	Workers int
	// AllowedOrigins lists the browser origins allowed to connect; empty
	// allows every origin.
	AllowedOrigins []string
	// MaxConnections caps the connections of this node (WebSocket, SSE
	// and plain HTTP). Default 100000; -1: no cap.
	MaxConnections int
	// MaxChannels caps the channels this node holds a broker
	// subscription for. Default 100000.
	MaxChannels int
	// MaxHTTPConnections caps the plain HTTP connections. Default 10000;
	// -1: no cap.
	MaxHTTPConnections int
	// HTTPTimeout bounds reading one HTTP request and writing its
	// response. Default 10s.
	HTTPTimeout time.Duration
	// HTTPIdleTimeout closes an idle keep-alive HTTP connection. Default
	// 75s.
	HTTPIdleTimeout time.Duration
	// MaxPartialBytes bounds the bytes of unfinished frames held by all
	// connections together. Default 64 MiB, at least twice
	// Client.MaxMessageSize.
	MaxPartialBytes int
	// AcceptRate caps new connections per second (burst: one second's
	// worth). Default 1000; -1: no cap.
	AcceptRate int
	// DrainWindow spreads the disconnects of a shutdown over this long.
	// Default 30s.
	DrainWindow time.Duration
	// TLSCertFile and TLSKeyFile (PEM) serve wss:// directly; both or
	// neither.
	TLSCertFile, TLSKeyFile string
	// BrokerTimeout bounds one broker call made for a client (publish,
	// history read, presence). Default 5s; no config key.
	BrokerTimeout time.Duration
	// WriteTimeout bounds one write to a client's socket. Default 10s; no
	// config key.
	WriteTimeout time.Duration
}

// HistoryConfig bounds catch-up reads (keys history.*; how much history a
// channel keeps is the broker's).
type HistoryConfig struct {
	// PageBytes bounds one history read, and so one page of a catch-up,
	// at most pageGrowth x PageBytes when messages grow (nextPageMsgs).
	// Default 256 KiB, at least 4096.
	PageBytes int
	// MaxReads is how many history reads may run at once. Default 4.
	MaxReads int
	// ReadWait is how long a subscribe with since waits for a read slot.
	// Default 10s.
	ReadWait time.Duration
	// SnapshotMaxBytes bounds a channel snapshot's data (the snap op).
	// Default 1 MiB, at least 1024.
	SnapshotMaxBytes int
}

// PresenceConfig controls presence (keys presence.*).
type PresenceConfig struct {
	// TTL is how long a presence entry lives unless refreshed. Default
	// 60s, at least 1s.
	TTL time.Duration
	// NoJoinLeave turns join/leave events off (they are on by default).
	NoJoinLeave bool
	// JoinLeaveLimit suppresses join/leave events on a channel with more
	// local subscribers than this. Default 100; -1: no limit.
	JoinLeaveLimit int
}

// AuthConfig configures JWT authentication (keys auth.*). Auth is on when
// any of HMACSecret, PublicKeyFile or JWKSURL is set.
type AuthConfig struct {
	HMACSecret    string // verifies HS256 tokens
	PublicKeyFile string // PEM RSA or ECDSA public key: RS256/ES256
	JWKSURL       string // JSON Web Key Set URL: RS256/ES256 by kid
	Issuer        string // when set, must equal the token's iss
	Audience      string // when set, must be in the token's aud
	// ChannelsClaim names the claim listing the channels the user may
	// subscribe and publish to. Default "channels".
	ChannelsClaim string
	// PublicNamespaces may be subscribed by every authenticated user.
	PublicNamespaces []string
}

// On reports whether authentication is configured.
func (a AuthConfig) On() bool { return a.HMACSecret != "" || a.PublicKeyFile != "" || a.JWKSURL != "" }

// MetricsConfig guards the operational listener (key metrics.token).
type MetricsConfig struct {
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// /metrics and pprof; required off loopback.
	Token string
}

// DebugConfig holds operator tooling (key debug.pprof_listen).
type DebugConfig struct {
	// PprofListen serves net/http/pprof on this address; empty = off.
	PprofListen string
}

// ProxyConfig is the event proxy (keys proxy.*): backend hooks asked on
// connect, refresh, subscribe and publish.
type ProxyConfig struct {
	Connect   ProxyHook
	Refresh   ProxyHook // needs Connect
	Subscribe ProxyHook
	Publish   ProxyHook
	// RefreshInterval is how long a connect (or refresh) answer holds.
	// Default 1m.
	RefreshInterval time.Duration
	// MaxConcurrency bounds the backend calls in flight on this node.
	// Default 256.
	MaxConcurrency int
	// RemoteAddr adds the client's remote address to every hook request.
	RemoteAddr bool
	// MaxQueuedBytes bounds the bytes of commands waiting in all of this
	// node's connections' proxy queues. Default 64 MiB, at least 65536.
	MaxQueuedBytes int
}

// ProxyHook is one event proxy hook (keys proxy.<hook>.*).
type ProxyHook struct {
	URL     string        // receives the hook's POST; empty = hook off
	Timeout time.Duration // bounds one call; default 2s
	Headers []string      // request headers of the client copied into the call
	Cookies []string      // cookies of the client copied into the call
}

// On reports whether the hook is configured.
func (h ProxyHook) On() bool { return h.URL != "" }

// WithDefaults is the configuration a Server built from c runs with: every
// zero field filled with its default, and the negative "no cap" values
// turned into 0, which is how the server reads a cap it must not apply.
func (c Config) WithDefaults() Config {
	def := func(v *int, d int) {
		switch {
		case *v == 0:
			*v = d
		case *v < 0:
			*v = 0 // no cap
		}
	}
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	cl := &c.Client
	dur(&cl.PingInterval, 25*time.Second)
	def(&cl.MaxMessageSize, 65536)
	def(&cl.MaxSubscriptions, 1000)
	dur(&cl.HandshakeTimeout, 10*time.Second)
	def(&cl.MaxQueueBytes, 1<<20)
	def(&cl.MaxConnectionsPerUser, 100)
	def(&cl.PublishRate, 100)
	def(&cl.PublishBurst, 200)
	dur(&cl.FrameTimeout, 10*time.Second)
	def(&cl.ControlFrameRate, 100)
	sv := &c.Server
	if sv.IO == "" {
		sv.IO = "epoll"
	}
	def(&sv.MaxConnections, 100000)
	def(&sv.MaxChannels, 100000)
	def(&sv.MaxHTTPConnections, 10000)
	dur(&sv.HTTPTimeout, 10*time.Second)
	dur(&sv.HTTPIdleTimeout, 75*time.Second)
	def(&sv.MaxPartialBytes, 64<<20)
	def(&sv.AcceptRate, 1000)
	dur(&sv.DrainWindow, 30*time.Second)
	dur(&sv.BrokerTimeout, 5*time.Second)
	dur(&sv.WriteTimeout, 10*time.Second)
	def(&c.History.PageBytes, 256<<10)
	def(&c.History.MaxReads, 4)
	dur(&c.History.ReadWait, 10*time.Second)
	def(&c.History.SnapshotMaxBytes, 1<<20)
	dur(&c.Presence.TTL, 60*time.Second)
	def(&c.Presence.JoinLeaveLimit, 100)
	for _, h := range []*ProxyHook{&c.Proxy.Connect, &c.Proxy.Refresh, &c.Proxy.Subscribe, &c.Proxy.Publish} {
		dur(&h.Timeout, 2*time.Second)
	}
	dur(&c.Proxy.RefreshInterval, time.Minute)
	def(&c.Proxy.MaxConcurrency, 256)
	def(&c.Proxy.MaxQueuedBytes, 64<<20)
	if c.Auth.ChannelsClaim == "" {
		c.Auth.ChannelsClaim = "channels"
	}
	return c
}

// Validate reports every field out of range once defaults are applied,
// naming the field and the config key it comes from.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(cond bool, field, key, want string, got any) {
		if cond {
			errs = append(errs, fmt.Errorf("gateway: %s (%s): want %s, got %v", field, key, want, got))
		}
	}
	neg := func(d time.Duration, field, key string) { bad(d < 0, field, key, "a duration > 0", d) }
	neg(c.Client.PingInterval, "Client.PingInterval", "client.ping_interval")
	neg(c.Client.HandshakeTimeout, "Client.HandshakeTimeout", "client.handshake_timeout")
	neg(c.Client.FrameTimeout, "Client.FrameTimeout", "client.frame_timeout")
	neg(c.Server.HTTPTimeout, "Server.HTTPTimeout", "server.http_timeout")
	neg(c.Server.HTTPIdleTimeout, "Server.HTTPIdleTimeout", "server.http_idle_timeout")
	neg(c.Server.DrainWindow, "Server.DrainWindow", "server.drain_window")
	neg(c.Server.BrokerTimeout, "Server.BrokerTimeout", "(none)")
	neg(c.Server.WriteTimeout, "Server.WriteTimeout", "(none)")
	neg(c.History.ReadWait, "History.ReadWait", "history.read_wait")
	bad(c.Client.MaxMessageSize < 256, "Client.MaxMessageSize", "client.max_message_size", "a whole number >= 256", c.Client.MaxMessageSize)
	bad(c.Client.MaxQueueBytes < 4096, "Client.MaxQueueBytes", "client.max_queue_bytes", "a whole number >= 4096", c.Client.MaxQueueBytes)
	bad(c.Client.MaxSubscriptions < 1, "Client.MaxSubscriptions", "client.max_subscriptions", "a whole number >= 1", c.Client.MaxSubscriptions)
	bad(c.Client.PublishBurst < 1, "Client.PublishBurst", "client.publish_burst", "a whole number >= 1", c.Client.PublishBurst)
	bad(c.Server.IO != "epoll" && c.Server.IO != "goroutine", "Server.IO", "server.io", "epoll or goroutine", fmt.Sprintf("%q", c.Server.IO))
	bad(c.Server.Workers < 0, "Server.Workers", "server.workers", "a whole number >= 0", c.Server.Workers)
	bad(c.Server.MaxChannels < 1, "Server.MaxChannels", "server.max_channels", "a whole number >= 1", c.Server.MaxChannels)
	bad(c.Server.MaxPartialBytes < 2*c.Client.MaxMessageSize, "Server.MaxPartialBytes", "server.max_partial_bytes",
		fmt.Sprintf("a whole number >= 2 x Client.MaxMessageSize (%d)", 2*c.Client.MaxMessageSize), c.Server.MaxPartialBytes)
	bad((c.Server.TLSCertFile == "") != (c.Server.TLSKeyFile == ""), "Server.TLSCertFile and TLSKeyFile", "server.tls.cert_file, server.tls.key_file",
		"both set (TLS on) or both empty", "one of them")
	bad(c.History.PageBytes < 4096, "History.PageBytes", "history.page_bytes", "a whole number >= 4096", c.History.PageBytes)
	bad(c.History.SnapshotMaxBytes < 1024, "History.SnapshotMaxBytes", "history.snapshot_max_bytes", "a whole number >= 1024", c.History.SnapshotMaxBytes)
	bad(c.Proxy.MaxQueuedBytes < 65536, "Proxy.MaxQueuedBytes", "proxy.max_queued_bytes", "a whole number >= 65536", c.Proxy.MaxQueuedBytes)
	bad(c.History.MaxReads < 1, "History.MaxReads", "history.max_reads", "a whole number >= 1", c.History.MaxReads)
	bad(c.Proxy.Refresh.On() && !c.Proxy.Connect.On(), "Proxy.Refresh", "proxy.refresh.url", "empty unless Proxy.Connect is set", c.Proxy.Refresh.URL)
	bad(c.Presence.TTL < time.Second, "Presence.TTL", "presence.ttl", "a duration >= 1s", c.Presence.TTL)
	return errors.Join(errs...)
}
