package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/viper"
)

// Config is the whole gateway configuration. Each field maps onto one key of
// config.yaml, named in its comment. Start from Default or Load; the zero
// value does not pass Validate.
type Config struct {
	// Listen is the TCP address to accept connections on, host:port.
	// Key listen, default ":8080".
	Listen string

	Broker   Broker
	Redis    Redis
	NATS     NATS
	History  History
	Presence Presence
	Client   Client
	Auth     Auth
	Server   Server
	Proxy    Proxy
	Metrics  Metrics
	API      API
	Debug    Debug
	Log      Log
}

// Broker selects the message broker backend.
type Broker struct {
	// Type is the backend name, one of brokerTypes.
	// Key broker.type, default "jetstream" (with nats.url empty: an
	// embedded NATS server, so one node needs no external service).
	Type string
}

// Redis configures the redis and redis-streams brokers.
type Redis struct {
	// Addrs are the Redis servers, host:port. Several addresses shard
	// channels over independent servers; with Cluster they are seed nodes.
	// Key redis.addrs, default ["127.0.0.1:6379"].
	Addrs []string
	// Cluster talks to a Redis Cluster (sharded pub/sub, hash tags).
	// Key redis.cluster, default false.
	Cluster bool
	// SentinelMaster is the master name to ask Sentinel for; when set,
	// SentinelAddrs are the sentinels and Addrs is not used.
	// Key redis.sentinel_master, default "".
	SentinelMaster string
	// SentinelAddrs are the Sentinel servers, host:port.
	// Key redis.sentinel_addrs, default [].
	SentinelAddrs []string
	// Username is the Redis ACL user; empty logs in with Password alone
	// (the "default" user).
	// Key redis.username, default "".
	Username string
	// Password authenticates to Redis (not to Sentinel: see
	// SentinelPassword).
	// Key redis.password, default "".
	Password string
	// SentinelUsername and SentinelPassword authenticate to the Sentinels,
	// which keep their own users; empty sends none.
	// Keys redis.sentinel_username, redis.sentinel_password, default "".
	SentinelUsername string
	SentinelPassword string
	// DB is the database number (not used with Cluster).
	// Key redis.db, default 0, >= 0.
	DB int
	// Prefix starts every key and pub/sub channel syncgate uses.
	// Key redis.prefix, default "sg".
	Prefix string
	// OutboxSize is how many publishes a node holds while Redis is down.
	// Key redis.outbox_size, default 10000, >= 0.
	OutboxSize int
	// WaitReplicas is how many replicas of a channel's master must have a
	// publish before it is acked (WAIT); 0 acks once the master has it
	// (asynchronous replication: a failover can lose the last acked
	// writes). Key redis.wait_replicas, default 0, >= 0.
	WaitReplicas int
	// TLS to Redis (and Sentinel, and every Cluster node).
	TLS RedisTLS
}

// RedisTLS configures TLS to Redis.
type RedisTLS struct {
	// Enabled dials Redis with TLS.
	// Key redis.tls.enabled, default false.
	Enabled bool
	// CAFile (PEM) verifies the servers' certificates; empty uses the
	// system's CAs.
	// Key redis.tls.ca_file, default "".
	CAFile string
	// CertFile and KeyFile (PEM) are a client certificate, for servers
	// that ask for one (tls-auth-clients).
	// Keys redis.tls.cert_file, redis.tls.key_file, default "".
	CertFile string
	KeyFile  string
	// ServerName is the name the certificates must carry; empty uses the
	// host of each address.
	// Key redis.tls.server_name, default "".
	ServerName string
}

// NATS configures the nats and jetstream brokers.
type NATS struct {
	// URL is the NATS server(s) to use, e.g. "nats://10.0.0.5:4222";
	// empty starts an embedded server in this process.
	// Key nats.url, default "".
	URL string
	// Listen is the client address of the embedded server, so other nodes
	// can point nats.url at it.
	// Key nats.listen, default "127.0.0.1:4222".
	Listen string
	// StoreDir is where the embedded server keeps JetStream data.
	// Key nats.store_dir, default "data/nats".
	StoreDir string
	// ClusterListen is the embedded server's cluster (route) address;
	// empty means no clustering.
	// Key nats.cluster_listen, default "".
	ClusterListen string
	// Routes are other embedded servers' cluster addresses, host:port.
	// Key nats.routes, default [].
	Routes []string
	// Storage is the JetStream storage of the history stream: file or
	// memory.
	// Key nats.storage, default "file".
	Storage string
	// Replicas is the history stream's replica count (1, 3 or 5).
	// Key nats.replicas, default 1, >= 1.
	Replicas int
	// OutboxSize is how many publishes a node holds while NATS is down.
	// Key nats.outbox_size, default 10000, >= 0.
	OutboxSize int
	// User and Password, or Token, are this node's NATS credential: the
	// embedded server requires it of every client and route, and it is
	// sent to the servers of URL. With none, an embedded server that
	// listens on loopback only gets a random one held in memory.
	// Keys nats.user, nats.password, nats.token, default "".
	User     string
	Password string
	Token    string
	// NKeySeedFile (an nkey seed) or CredsFile (a user JWT and seed) log
	// in to the servers of URL (not the embedded server).
	// Keys nats.nkey_seed_file, nats.creds_file, default "".
	NKeySeedFile string
	CredsFile    string
	// TLS of the embedded server's ports, or to the servers of URL.
	TLS NATSTLS
}

// NATSTLS configures TLS for NATS.
type NATSTLS struct {
	// CertFile and KeyFile (PEM): the embedded server's certificate on its
	// client and route ports; with URL, a client certificate.
	// Keys nats.tls.cert_file, nats.tls.key_file, default "".
	CertFile string
	KeyFile  string
	// CAFile (PEM): the CA that route peers (embedded cluster) or the
	// servers of URL must chain to.
	// Key nats.tls.ca_file, default "".
	CAFile string
}

// History bounds the per-channel message history used for catch-up.
type History struct {
	// Size is how many messages are kept per channel; 0 disables history.
	// Key history.size, default 1000, >= 0.
	Size int
	// TTL is how long a channel's history is kept after its last message.
	// Key history.ttl, default 10m, > 0.
	TTL time.Duration
	// PageBytes bounds one history read, and so one page of a catch-up:
	// the first read asks for PageBytes / (client.max_message_size + 2048)
	// messages (at least one), the most bytes that many can take; later
	// pages of a streamed catch-up ask for as many of the largest message
	// read so far as fit, at most 16 times that count, so a page exceeds
	// PageBytes only when messages grow, and never 16 x PageBytes.
	// Key history.page_bytes, default 262144, >= 4096.
	PageBytes int
	// MaxReads is how many history reads may run at once on this node;
	// more catch-ups wait their turn. MaxReads * PageBytes bounds the
	// history bytes in flight from the broker to this node while message
	// sizes hold steady, 16 x that when they grow within catch-ups.
	// Key history.max_reads, default 4, >= 1.
	MaxReads int
	// ReadWait is how long a subscribe with since waits for a history read
	// slot before it is answered `unavailable`.
	// Key history.read_wait, default 10s, > 0.
	ReadWait time.Duration
	// SnapshotMaxBytes bounds a channel snapshot (the `snap` op,
	// docs/protocol.md): larger ones are refused, and one loaded from the
	// broker larger than this is rejected as corrupt.
	// Key history.snapshot_max_bytes, default 1048576, >= 1024.
	SnapshotMaxBytes int
}

// Presence controls who-is-here tracking and join/leave events.
type Presence struct {
	// TTL is how long a presence entry lives unless refreshed; members of a
	// node that dies disappear after at most this long.
	// Key presence.ttl, default 60s, >= 1s.
	TTL time.Duration
	// JoinLeave turns join/leave events on.
	// Key presence.join_leave, default true.
	JoinLeave bool
	// JoinLeaveLimit suppresses join/leave events on a channel with more
	// local subscribers than this; 0 means no limit.
	// Key presence.join_leave_limit, default 100, >= 0.
	JoinLeaveLimit int
}

// Client holds per-connection limits.
type Client struct {
	// PingInterval is how often a client must send something; a client
	// silent for twice this long is disconnected.
	// Key client.ping_interval, default 25s, > 0.
	PingInterval time.Duration
	// MaxMessageSize is the largest message a client may send, in bytes.
	// Key client.max_message_size, default 65536, >= 256.
	MaxMessageSize int
	// MaxSubscriptions is how many channels one connection may be
	// subscribed to at once.
	// Key client.max_subscriptions, default 1000, >= 1.
	MaxSubscriptions int
	// HandshakeTimeout is how long a new connection has to complete the
	// WebSocket handshake.
	// Key client.handshake_timeout, default 10s, > 0.
	HandshakeTimeout time.Duration
	// MaxQueueBytes bounds the outbound queue of one connection, in bytes;
	// a client above it is disconnected as a slow consumer.
	// Key client.max_queue_bytes, default 1048576, >= 4096.
	MaxQueueBytes int
	// MaxConnectionsPerUser caps one user's connections on this node;
	// 0 = no cap.
	// Key client.max_connections_per_user, default 100, >= 0.
	MaxConnectionsPerUser int
	// PublishRate is the publishes per second one connection may make
	// (token bucket); 0 = no cap.
	// Key client.publish_rate, default 100, >= 0.
	PublishRate int
	// PublishBurst is the token bucket's size.
	// Key client.publish_burst, default 200, >= 1.
	PublishBurst int
	// FrameTimeout is how long a client has to finish a frame, or a
	// fragmented message, once its first byte arrived; a client that
	// trickles a frame is disconnected instead of holding its partial
	// bytes (and defeating the idle timeout) forever.
	// Key client.frame_timeout, default 10s, > 0.
	FrameTimeout time.Duration
	// ControlFrameRate caps the ping and pong frames one connection may
	// send per second (counted per whole second); a client above it is
	// disconnected with close code 1008. 0 = no cap.
	// Key client.control_frame_rate, default 100, >= 0.
	ControlFrameRate int
}

// Auth configures JWT authentication. Auth is on when any of HMACSecret,
// PublicKeyFile or JWKSURL is set.
type Auth struct {
	// HMACSecret verifies HS256 tokens.
	// Key auth.hmac_secret, default "".
	HMACSecret string
	// PublicKeyFile is a PEM RSA or ECDSA public key verifying RS256/ES256
	// tokens.
	// Key auth.public_key_file, default "".
	PublicKeyFile string
	// JWKSURL is a JSON Web Key Set URL (RS256/ES256 keys by kid),
	// refreshed every 5 minutes and on an unknown kid.
	// Key auth.jwks_url, default "".
	JWKSURL string
	// Issuer, when set, must equal the token's iss.
	// Key auth.issuer, default "".
	Issuer string
	// Audience, when set, must be in the token's aud.
	// Key auth.audience, default "".
	Audience string
	// ChannelsClaim names the claim {"sub": [patterns], "pub": [patterns]}
	// listing the channels the user may subscribe and publish to.
	// Key auth.channels_claim, default "channels".
	ChannelsClaim string
	// PublicNamespaces may be subscribed (not published) by every
	// authenticated user: "lobby" opens every "lobby:..." channel.
	// Key auth.public_namespaces, default [].
	PublicNamespaces []string
}

// On reports whether authentication is configured.
func (a Auth) On() bool { return a.HMACSecret != "" || a.PublicKeyFile != "" || a.JWKSURL != "" }

// Metrics configures the operational listener that serves /metrics. It is
// never the public listener: scrapes reach the node on its own address.
type Metrics struct {
	// Listen is the address /metrics is served on, host:port; "off" (or
	// empty) serves no metrics.
	// Key metrics.listen, default "127.0.0.1:9090" (this host only).
	Listen string
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// /metrics and on pprof (debug.pprof_listen).
	// Key metrics.token, default "", at least 16 bytes when set.
	Token string
}

// On reports whether the metrics listener is enabled.
func (m Metrics) On() bool { return m.Listen != "" && m.Listen != "off" }

// API configures the server API (HTTP JSON, for the application backend)
// and the control messages nodes exchange through the broker for it.
type API struct {
	// Listen is the address of the server API's own listener, host:port;
	// "off" (or empty) serves no API. Setting it requires Keys.
	// Key api.listen, default "off" (an API needs keys; bind it to
	// loopback or a private network, e.g. "127.0.0.1:9091").
	Listen string
	// Keys are the accepted API keys ("Authorization: apikey <key>"),
	// several at once so a key can be rotated without downtime.
	// Key api.keys, default [], each at least 16 bytes.
	Keys []string
	// ClusterSecret signs (HMAC-SHA256) the control messages every node
	// sends and accepts on the broker's internal channel: disconnect,
	// unsubscribe, revoke and node summaries. Empty: this node neither
	// sends nor accepts any (cross-node API actions act on this node
	// only). Must be the same on every node.
	// Key api.cluster_secret, default "", at least 32 bytes when set.
	ClusterSecret string
}

// On reports whether the server API listener is enabled.
func (a API) On() bool { return a.Listen != "" && a.Listen != "off" }

// Debug holds operator tooling.
type Debug struct {
	// PprofListen serves net/http/pprof on this address; empty = off.
	// Key debug.pprof_listen, default "".
	PprofListen string
}

// TLS serves wss:// directly.
type TLS struct {
	// CertFile is the PEM certificate chain; with KeyFile it turns TLS on.
	// Key server.tls.cert_file, default "".
	CertFile string
	// KeyFile is the PEM private key.
	// Key server.tls.key_file, default "".
	KeyFile string
}

// Server selects how connections are read.
type Server struct {
	// IO is "epoll" (one readiness loop, Linux only) or "goroutine" (one
	// reader goroutine per connection).
	// Key server.io, default "epoll".
	IO string
	// Workers is the size of the worker pool; 0 means chosen automatically.
	// Key server.workers, default 0, >= 0.
	Workers int
	// AllowedOrigins lists the browser origins allowed to connect
	// ("https://app.example.com", "https://*.example.com"); empty allows
	// every origin. Requests without an Origin header (non-browsers) pass.
	// Key server.allowed_origins, default [].
	AllowedOrigins []string
	// MaxConnections caps the connections of this node: WebSocket, SSE
	// and plain HTTP (keep-alive included) together; 0 = no cap.
	// Key server.max_connections, default 100000, >= 0.
	MaxConnections int
	// MaxChannels caps the channels this node holds a broker subscription
	// for (every channel one of its clients subscribes to, kept a moment
	// after the last one leaves). A subscribe that needs one more is
	// refused with `unavailable`, so anonymous clients subscribing to
	// ever new channels cannot grow the node's (and its broker's) state
	// without bound. Key server.max_channels, default 100000, >= 1.
	MaxChannels int
	// MaxHTTPConnections caps the plain HTTP connections (not upgraded to
	// WebSocket or SSE; idle keep-alive included), which cost a goroutine
	// and about 20 KiB each; 0 = no cap. At the cap an idle keep-alive
	// connection is closed to make room, if there is one.
	// Key server.max_http_connections, default 10000, >= 0.
	MaxHTTPConnections int
	// HTTPTimeout bounds reading one HTTP request (head and body) and
	// writing its response. SSE streams and WebSocket upgrades are not cut
	// by it once they start.
	// Key server.http_timeout, default 10s, > 0.
	HTTPTimeout time.Duration
	// HTTPIdleTimeout closes a keep-alive HTTP connection that has been
	// idle between requests for this long.
	// Key server.http_idle_timeout, default 75s, > 0.
	HTTPIdleTimeout time.Duration
	// MaxPartialBytes bounds the bytes of unfinished frames and
	// fragmented messages held by all connections of this node together;
	// the connection whose partial frame would pass it is closed (close
	// code 1013), not the others. At least twice client.max_message_size.
	// Key server.max_partial_bytes, default 67108864 (64 MiB), >= 512.
	MaxPartialBytes int
	// AcceptRate caps new connections per second (burst: one second's
	// worth), so a reconnect storm cannot take a node down; 0 = no cap.
	// Key server.accept_rate, default 1000, >= 0.
	AcceptRate int
	// DrainWindow spreads the disconnects of a shutdown over this long.
	// Key server.drain_window, default 30s, > 0.
	DrainWindow time.Duration
	// GCPercent is the Go garbage collector's target (GOGC) for the node
	// process; lower trades GC CPU for less memory per connection. A GOGC
	// environment variable wins over it.
	// Key server.gc_percent, default 50, >= 10.
	GCPercent int
	// TLS serves wss:// directly.
	TLS TLS
}

// Proxy configures the event proxy: HTTP hooks into the application's
// backend, asked on connect, token refresh, subscribe and publish
// (docs/integration.md, "Event proxy"). A hook with an empty URL is off.
type Proxy struct {
	// Connect is asked on `connect` when the client brings no JWT (cookie
	// sessions): the backend answers the user and the channel permissions.
	Connect ProxyHook
	// Refresh is asked every RefreshInterval for connections the connect
	// hook admitted; needs Connect.
	Refresh ProxyHook
	// RefreshInterval is how long a connect (or refresh) answer holds
	// before the refresh hook is asked again.
	// Key proxy.refresh.interval, default 1m, >= 1s.
	RefreshInterval time.Duration
	// Subscribe is asked on `sub` (and for each SSE channel) after the
	// static permission checks pass.
	Subscribe ProxyHook
	// Publish is asked on `pub` (and POST /pub) before the broker publish;
	// it may replace the data.
	Publish ProxyHook
	// MaxConcurrency bounds the backend calls in flight on this node, over
	// all hooks; a call that finds no slot within its hook's timeout fails
	// with `unavailable`.
	// Key proxy.max_concurrency, default 256, >= 1.
	MaxConcurrency int
	// MaxQueuedBytes bounds the bytes of commands waiting in all of this
	// node's connections' proxy queues together (each connection's queue
	// also holds at most 2 x client.max_message_size); a command that
	// would pass it is answered `unavailable` in its turn.
	// Key proxy.max_queued_bytes, default 67108864 (64 MiB), >= 65536.
	MaxQueuedBytes int
	// RemoteAddr adds the client's remote address (ip:port of the TCP
	// peer) to every hook request as "remote_addr".
	// Key proxy.remote_addr, default false.
	RemoteAddr bool
}

// ProxyHook is one event proxy hook. Keys proxy.<hook>.url, .timeout,
// .headers, .cookies.
type ProxyHook struct {
	// URL receives the hook's POST; empty = hook off.
	// Key proxy.<hook>.url, default "".
	URL string
	// Timeout bounds one call (waiting for a concurrency slot included).
	// Key proxy.<hook>.timeout, default 2s, > 0.
	Timeout time.Duration
	// Headers lists request headers of the client's WebSocket upgrade (or
	// SSE / POST /pub request) copied into the hook request ("headers").
	// Cookie cannot be listed: use Cookies.
	// Key proxy.<hook>.headers, default [].
	Headers []string
	// Cookies lists cookies of the client's request copied into the hook
	// request ("cookies"). Needs server.allowed_origins (cross-site
	// WebSocket hijacking).
	// Key proxy.<hook>.cookies, default [].
	Cookies []string
}

// On reports whether the hook is configured.
func (h ProxyHook) On() bool { return h.URL != "" }

// ForwardsCookies reports whether any hook forwards cookies.
func (p Proxy) ForwardsCookies() bool {
	return len(p.Connect.Cookies)+len(p.Refresh.Cookies)+len(p.Subscribe.Cookies)+len(p.Publish.Cookies) > 0
}

// validate checks what spans several proxy keys.
func (p Proxy) validate(origins []string) []error {
	var errs []error
	if p.Refresh.On() && !p.Connect.On() {
		errs = append(errs, errors.New("config: proxy.refresh.url: want empty unless proxy.connect.url is set (refresh renews connections the connect hook admitted)"))
	}
	if p.ForwardsCookies() {
		ok := len(origins) > 0
		for _, o := range origins {
			if strings.TrimSpace(o) == "*" {
				ok = false
			}
		}
		if !ok {
			errs = append(errs, errors.New(`config: proxy.<hook>.cookies: forwarding cookies authenticates browsers by cookie, which any web page could ride (cross-site WebSocket hijacking): want server.allowed_origins set to the app's origins (an allow-list like ["https://app.example.com"], not "*"), or no cookies forwarded`))
		}
	}
	return errs
}

// Log configures the slog logger.
type Log struct {
	// Level is one of debug, info, warn, error.
	// Key log.level, default "info".
	Level string
	// Format is text or json.
	// Key log.format, default "text".
	Format string
}

// Default returns the built-in configuration. It is the single home of every
// default; config.yaml repeats these values and a test keeps the two equal.
func Default() Config {
	return Config{
		Listen: ":8080",
		Broker: Broker{Type: "jetstream"},
		Redis: Redis{
			Addrs:         []string{"127.0.0.1:6379"},
			SentinelAddrs: []string{},
			Prefix:        "sg",
			OutboxSize:    10000,
		},
		NATS: NATS{
			Listen:     "127.0.0.1:4222",
			StoreDir:   "data/nats",
			Routes:     []string{},
			Storage:    "file",
			Replicas:   1,
			OutboxSize: 10000,
		},
		History: History{
			Size:      1000,
			TTL:       10 * time.Minute,
			PageBytes: 256 << 10,
			MaxReads:  4,
			ReadWait:  10 * time.Second,

			SnapshotMaxBytes: 1 << 20,
		},
		Presence: Presence{
			TTL:            60 * time.Second,
			JoinLeave:      true,
			JoinLeaveLimit: 100,
		},
		Client: Client{
			PingInterval:     25 * time.Second,
			MaxMessageSize:   65536,
			MaxSubscriptions: 1000,
			HandshakeTimeout: 10 * time.Second,
			MaxQueueBytes:    1 << 20,

			MaxConnectionsPerUser: 100,
			PublishRate:           100,
			PublishBurst:          200,
			FrameTimeout:          10 * time.Second,
			ControlFrameRate:      100,
		},
		Auth: Auth{
			ChannelsClaim:    "channels",
			PublicNamespaces: []string{},
		},
		Server: Server{
			IO:              "epoll",
			Workers:         0,
			AllowedOrigins:  []string{},
			MaxConnections:  100000,
			MaxChannels:     100000,
			MaxPartialBytes: 64 << 20,
			AcceptRate:      1000,
			DrainWindow:     30 * time.Second,
			GCPercent:       50,

			MaxHTTPConnections: 10000,
			HTTPTimeout:        10 * time.Second,
			HTTPIdleTimeout:    75 * time.Second,
		},
		Proxy: Proxy{
			Connect:         defaultHook(),
			Refresh:         defaultHook(),
			RefreshInterval: time.Minute,
			Subscribe:       defaultHook(),
			Publish:         defaultHook(),
			MaxConcurrency:  256,
			MaxQueuedBytes:  64 << 20,
		},
		Metrics: Metrics{
			Listen: "127.0.0.1:9090",
		},
		API: API{
			Listen: "off",
			Keys:   []string{},
		},
		Log: Log{
			Level:  "info",
			Format: "text",
		},
	}
}

func defaultHook() ProxyHook {
	return ProxyHook{Timeout: 2 * time.Second, Headers: []string{}, Cookies: []string{}}
}

// Load reads the configuration from the YAML file at path and from the
// process environment, on top of Default, and validates it. An empty path
// means no file: defaults and environment only. A path that names a missing
// file is an error (errors.Is(err, fs.ErrNotExist)).
func Load(path string) (Config, error) {
	return LoadFrom(path, os.Environ())
}

// LoadFrom is Load with the environment given as "NAME=value" entries, as
// os.Environ returns them. Entries without the SYNCGATE_ prefix are ignored.
// On error the returned Config is the zero value.
func LoadFrom(path string, environ []string) (Config, error) {
	c := Default()
	var errs []error
	if path != "" {
		fileErrs, err := applyFile(&c, path)
		if err != nil {
			return Config{}, err
		}
		errs = append(errs, fileErrs...)
	}
	errs = append(errs, applyEnv(&c, environ)...)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	// Every key was checked as it was set; this catches rules that span
	// keys, should any be added.
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate reports every field outside its allowed range or set, naming the
// key and the expected form, e.g.
//
//	config: history.size: want a whole number >= 0, got -5
func (c Config) Validate() error {
	var errs []error
	for _, s := range settings {
		if bad := s.check(&c); bad != nil {
			errs = append(errs, bad.at(s.key, ""))
		}
	}
	if (c.Server.TLS.CertFile == "") != (c.Server.TLS.KeyFile == "") {
		errs = append(errs, errors.New("config: server.tls.cert_file and server.tls.key_file: want both set (TLS on) or both empty"))
	}
	errs = append(errs, c.NATS.validate(c.Broker.Type)...)
	errs = append(errs, c.Redis.validate()...)
	errs = append(errs, c.Proxy.validate(c.Server.AllowedOrigins)...)
	errs = append(errs, c.API.validate(c.Broker.Type)...)
	if c.Client.MaxMessageSize > 0 && c.Server.MaxPartialBytes < 2*c.Client.MaxMessageSize {
		errs = append(errs, fmt.Errorf("config: server.max_partial_bytes: want a whole number >= 2 x client.max_message_size (%d), got %d",
			2*c.Client.MaxMessageSize, c.Server.MaxPartialBytes))
	}
	return errors.Join(errs...)
}

// validate checks what no single key can: an API needs keys, and an API
// on a cluster broker needs the secret its control messages are signed
// with (without it, disconnect, unsubscribe and revoke would reach this
// node only).
func (a API) validate(broker string) []error {
	if !a.On() {
		return nil
	}
	var errs []error
	if len(a.Keys) == 0 {
		errs = append(errs, fmt.Errorf("config: api.keys (env SYNCGATE_API_KEYS): want at least one API key (16 bytes or more) when api.listen is set (%q); or set api.listen to \"off\"", a.Listen))
	}
	if broker != "memory" && a.ClusterSecret == "" {
		errs = append(errs, fmt.Errorf("config: api.cluster_secret (env SYNCGATE_API_CLUSTER_SECRET): want a shared secret (at least 32 bytes, the same on every node) when api.listen is set with broker.type %s; it signs the control messages nodes exchange through the broker", broker))
	}
	return errs
}

// applyFile sets c from the YAML file at path. The error is for a file that
// cannot be read or parsed; problems with individual keys are returned as
// the slice.
func applyFile(c *Config, path string) ([]error, error) {
	v := viper.New()
	v.SetConfigFile(path)
	v.SetConfigType("yaml") // whatever the extension
	if err := v.ReadInConfig(); err != nil {
		if _, ok := errors.AsType[*fs.PathError](err); ok {
			return nil, fmt.Errorf("config: %w", err) // already names the path
		}
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	source := "file " + path
	var errs []error
	for _, key := range sortedKeys(v) {
		raw := v.Get(key)
		s, ok := lookupKey(key)
		if !ok {
			if err := unknownFileKey(key, raw, path); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if bad := s.set(c, raw); bad != nil {
			errs = append(errs, bad.at(key, source))
			continue
		}
		if bad := s.check(c); bad != nil {
			errs = append(errs, bad.at(key, source))
		}
	}
	return errs, nil
}

// unknownFileKey explains a file key that is not a setting. A section given
// as an empty mapping ("history:" with everything under it commented out)
// is fine and yields nil.
func unknownFileKey(key string, raw any, path string) error {
	var under []string
	for _, s := range settings {
		if strings.HasPrefix(s.key, key+".") {
			under = append(under, s.key)
		}
	}
	if len(under) > 0 {
		if raw == nil {
			return nil
		}
		return fmt.Errorf("config: %q in %s: want a section with keys %s, got %s",
			key, path, strings.Join(under, ", "), describe(raw))
	}
	return fmt.Errorf("config: unknown key %q in %s%s", key, path, didYouMean(key, allKeys(), "%q"))
}

// applyEnv sets c from the SYNCGATE_* entries of environ. Names are matched
// whole against the known keys, never split on "_", since keys such as
// presence.join_leave contain underscores themselves.
func applyEnv(c *Config, environ []string) []error {
	var errs []error
	seen := make(map[string]bool)
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		if seen[name] {
			continue // the first entry wins, as with os.Getenv
		}
		seen[name] = true
		s, ok := lookupEnv(name)
		if !ok {
			errs = append(errs, fmt.Errorf("config: unknown environment variable %s: it names no config key%s",
				name, didYouMean(name, allEnvNames(), "%s")))
			continue
		}
		if value == "" {
			continue
		}
		source := "env " + name
		if bad := s.set(c, value); bad != nil {
			errs = append(errs, bad.at(s.key, source))
			continue
		}
		if bad := s.check(c); bad != nil {
			errs = append(errs, bad.at(s.key, source))
		}
	}
	return errs
}
