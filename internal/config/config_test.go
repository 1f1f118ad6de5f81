package config

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
)

// repoConfig is the config.yaml shipped at the repository root.
const repoConfig = "../../config.yaml"

// writeFile writes a config file into a fresh temp dir and returns its path.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// with returns Default() changed by edit.
func with(edit func(c *Config)) Config {
	c := Default()
	edit(&c)
	return c
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

// TestTableCoversConfig proves the key table and the Config struct map one
// to one: every leaf field has exactly one key, and key and env names are
// unique.
func TestTableCoversConfig(t *testing.T) {
	var c Config
	fields := make(map[any]bool) // pointers to leaf fields
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		for i := range v.NumField() {
			f := v.Field(i)
			if f.Kind() == reflect.Struct {
				walk(f)
				continue
			}
			fields[f.Addr().Interface()] = false
		}
	}
	walk(reflect.ValueOf(&c).Elem())

	keys, envs := make(map[string]bool), make(map[string]bool)
	for _, s := range settings {
		if keys[s.key] {
			t.Errorf("key %s listed twice", s.key)
		}
		keys[s.key] = true
		if envs[s.env()] {
			t.Errorf("env %s maps to two keys", s.env())
		}
		envs[s.env()] = true
		if s.key != strings.ToLower(s.key) {
			t.Errorf("key %s is not lower case", s.key)
		}
		p := s.field(&c)
		seen, ok := fields[p]
		switch {
		case !ok:
			t.Errorf("key %s points outside Config", s.key)
		case seen:
			t.Errorf("key %s shares its field with another key", s.key)
		}
		fields[p] = true
	}
	if len(fields) != len(settings) {
		t.Errorf("Config has %d leaf fields, table has %d keys", len(fields), len(settings))
	}
}

func TestRepoConfigEqualsDefault(t *testing.T) {
	got, err := LoadFrom(repoConfig, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Fatalf("config.yaml differs from Default():\n got %+v\nwant %+v", got, Default())
	}
}

// TestRepoConfigListsEveryKey checks config.yaml has every key and no other,
// each introduced by a comment giving its default and its env var.
func TestRepoConfigListsEveryKey(t *testing.T) {
	v := viper.New()
	v.SetConfigFile(repoConfig)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	inFile := make(map[string]bool)
	for _, k := range v.AllKeys() {
		inFile[k] = true
	}
	for _, s := range settings {
		if !inFile[s.key] {
			t.Errorf("config.yaml lacks key %s", s.key)
		}
		delete(inFile, s.key)
	}
	for k := range inFile {
		t.Errorf("config.yaml has key %s that is not in the table", k)
	}

	comments := keyComments(t, repoConfig)
	for _, s := range settings {
		doc, ok := comments[s.key]
		if !ok {
			continue // reported above
		}
		if !strings.Contains(doc, "Default ") {
			t.Errorf("config.yaml: comment on %s does not state its default", s.key)
		}
		if !strings.Contains(doc, "Env "+s.env()+".") {
			t.Errorf("config.yaml: comment on %s does not name %s", s.key, s.env())
		}
	}
}

// keyComments maps each leaf key of a two-level YAML file to the comment
// lines directly above it.
func keyComments(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := make(map[string]string)
	type level struct {
		indent int
		name   string
	}
	var stack []level // open sections, outermost first
	var doc []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			doc = nil
		case strings.HasPrefix(trimmed, "#"):
			doc = append(doc, trimmed)
		default:
			indent := len(line) - len(strings.TrimLeft(line, " "))
			for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
				stack = stack[:len(stack)-1]
			}
			name, value, _ := strings.Cut(trimmed, ":")
			if strings.TrimSpace(value) == "" {
				stack = append(stack, level{indent, name})
			} else {
				var parts []string
				for _, l := range stack {
					parts = append(parts, l.name)
				}
				out[strings.Join(append(parts, name), ".")] = strings.Join(doc, "\n")
			}
			doc = nil
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name string
		file string // "" = no file
		env  []string
		want Config
	}{
		{
			name: "defaults",
			want: Default(),
		},
		{
			name: "unrelated env ignored",
			env:  []string{"PATH=/bin", "HOME=/root", "SYNCGATEX_LISTEN=x", "syncgate_listen=x", "BROKEN"},
			want: Default(),
		},
		{
			name: "empty env value counts as unset",
			env:  []string{"SYNCGATE_LISTEN=", "SYNCGATE_HISTORY_TTL="},
			want: Default(),
		},
		{
			name: "empty file",
			file: "# nothing\n",
			want: Default(),
		},
		{
			name: "empty section",
			file: "history:\n  # size: 5\n",
			want: Default(),
		},
		{
			name: "file overrides",
			file: `
listen: "127.0.0.1:9000"
broker: {type: memory}
history:
  size: 0
  ttl: 6s
presence:
  ttl: 1s
  join_leave: false
  join_leave_limit: 0
client:
  ping_interval: 1m
  max_message_size: 256
  max_subscriptions: 1
  handshake_timeout: 500ms
  max_queue_bytes: 4096
server:
  io: goroutine
  workers: 8
log:
  level: debug
  format: json
`,
			want: with(func(c *Config) {
				c.Listen = "127.0.0.1:9000"
				c.Broker.Type = "memory"
				c.History.Size, c.History.TTL = 0, 6*time.Second
				c.Presence = Presence{TTL: time.Second, JoinLeave: false, JoinLeaveLimit: 0}
				c.Client.PingInterval = time.Minute
				c.Client.MaxMessageSize = 256
				c.Client.MaxSubscriptions = 1
				c.Client.HandshakeTimeout = 500 * time.Millisecond
				c.Client.MaxQueueBytes = 4096
				c.Server.IO = "goroutine"
				c.Server.Workers = 8
				c.Log = Log{Level: "debug", Format: "json"}
			}),
		},
		{
			name: "file number forms",
			file: "history:\n  size: \"42\"\nclient:\n  max_queue_bytes: 2e6\npresence:\n  join_leave: \"false\"\n",
			want: with(func(c *Config) {
				c.History.Size = 42
				c.Client.MaxQueueBytes = 2000000
				c.Presence.JoinLeave = false
			}),
		},
		{
			name: "file keys are case-insensitive",
			file: "History:\n  Size: 7\n",
			want: with(func(c *Config) { c.History.Size = 7 }),
		},
		{
			name: "env overrides every key",
			env: []string{
				"SYNCGATE_LISTEN=:9000",
				"SYNCGATE_BROKER_TYPE=memory",
				"SYNCGATE_REDIS_ADDRS=10.0.0.1:6379, 10.0.0.2:6380",
				"SYNCGATE_REDIS_CLUSTER=true",
				"SYNCGATE_REDIS_SENTINEL_MASTER=mymaster",
				"SYNCGATE_REDIS_SENTINEL_ADDRS=10.0.0.3:26379",
				"SYNCGATE_REDIS_PASSWORD=pw",
				"SYNCGATE_REDIS_DB=2",
				"SYNCGATE_REDIS_PREFIX=x",
				"SYNCGATE_REDIS_OUTBOX_SIZE=7",
				"SYNCGATE_REDIS_WAIT_REPLICAS=1",
				"SYNCGATE_NATS_URL=nats://10.0.0.4:4222",
				"SYNCGATE_NATS_LISTEN=127.0.0.1:4333",
				"SYNCGATE_NATS_STORE_DIR=/tmp/n",
				"SYNCGATE_NATS_CLUSTER_LISTEN=127.0.0.1:6222",
				"SYNCGATE_NATS_ROUTES=127.0.0.1:6223,127.0.0.1:6224",
				"SYNCGATE_NATS_STORAGE=memory",
				"SYNCGATE_NATS_REPLICAS=3",
				"SYNCGATE_NATS_OUTBOX_SIZE=9",
				"SYNCGATE_HISTORY_SIZE=5",
				"SYNCGATE_HISTORY_TTL=6s",
				"SYNCGATE_HISTORY_PAGE_BYTES=8192",
				"SYNCGATE_HISTORY_SNAPSHOT_MAX_BYTES=2048",
				"SYNCGATE_HISTORY_MAX_READS=2",
				"SYNCGATE_HISTORY_READ_WAIT=3s",
				"SYNCGATE_PRESENCE_TTL=2s",
				"SYNCGATE_PRESENCE_JOIN_LEAVE=false",
				"SYNCGATE_PRESENCE_JOIN_LEAVE_LIMIT=10",
				"SYNCGATE_CLIENT_PING_INTERVAL=5s",
				"SYNCGATE_CLIENT_MAX_MESSAGE_SIZE=1024",
				"SYNCGATE_CLIENT_MAX_SUBSCRIPTIONS=3",
				"SYNCGATE_CLIENT_HANDSHAKE_TIMEOUT=1s",
				"SYNCGATE_CLIENT_MAX_QUEUE_BYTES= 8192 ",
				"SYNCGATE_CLIENT_MAX_CONNECTIONS_PER_USER=3",
				"SYNCGATE_CLIENT_PUBLISH_RATE=7",
				"SYNCGATE_CLIENT_PUBLISH_BURST=9",
				"SYNCGATE_CLIENT_FRAME_TIMEOUT=2s",
				"SYNCGATE_CLIENT_CONTROL_FRAME_RATE=5",
				"SYNCGATE_SERVER_MAX_PARTIAL_BYTES=4096",
				"SYNCGATE_AUTH_HMAC_SECRET=" + strings.Repeat("k", 32),
				"SYNCGATE_AUTH_PUBLIC_KEY_FILE=/k.pem",
				"SYNCGATE_AUTH_JWKS_URL=https://id.example.com/jwks",
				"SYNCGATE_AUTH_ISSUER=iss",
				"SYNCGATE_AUTH_AUDIENCE=aud",
				"SYNCGATE_AUTH_CHANNELS_CLAIM=perms",
				"SYNCGATE_AUTH_PUBLIC_NAMESPACES=lobby,news",
				"SYNCGATE_SERVER_ALLOWED_ORIGINS=https://a.example.com,https://*.example.com",
				"SYNCGATE_SERVER_MAX_CONNECTIONS=11",
				"SYNCGATE_SERVER_MAX_CHANNELS=13",
				"SYNCGATE_SERVER_ACCEPT_RATE=12",
				"SYNCGATE_SERVER_DRAIN_WINDOW=3s",
				"SYNCGATE_SERVER_GC_PERCENT=80",
				"SYNCGATE_SERVER_TLS_CERT_FILE=/c.pem",
				"SYNCGATE_SERVER_TLS_KEY_FILE=/k.pem",
				"SYNCGATE_DEBUG_PPROF_LISTEN=127.0.0.1:6060",
				"SYNCGATE_METRICS_LISTEN=127.0.0.1:9191",
				"SYNCGATE_METRICS_TOKEN=0123456789abcdef",
				"SYNCGATE_API_LISTEN=127.0.0.1:9191",
				"SYNCGATE_API_KEYS=key-one-0123456789, key-two-0123456789",
				"SYNCGATE_API_CLUSTER_SECRET=" + strings.Repeat("c", 32),
				"SYNCGATE_SERVER_MAX_HTTP_CONNECTIONS=13",
				"SYNCGATE_SERVER_HTTP_TIMEOUT=4s",
				"SYNCGATE_SERVER_HTTP_IDLE_TIMEOUT=5s",
				"SYNCGATE_SERVER_IO=goroutine",
				"SYNCGATE_SERVER_WORKERS=4",
				"SYNCGATE_LOG_LEVEL=warn",
				"SYNCGATE_LOG_FORMAT=json",
				"SYNCGATE_PROXY_CONNECT_URL=http://127.0.0.1:3000/connect",
				"SYNCGATE_PROXY_CONNECT_TIMEOUT=3s",
				"SYNCGATE_PROXY_CONNECT_HEADERS=X-Request-Id,Authorization",
				"SYNCGATE_PROXY_CONNECT_COOKIES=session",
				"SYNCGATE_PROXY_REFRESH_URL=http://127.0.0.1:3000/refresh",
				"SYNCGATE_PROXY_REFRESH_TIMEOUT=3s",
				"SYNCGATE_PROXY_REFRESH_HEADERS=X-Request-Id,Authorization",
				"SYNCGATE_PROXY_REFRESH_COOKIES=session",
				"SYNCGATE_PROXY_SUBSCRIBE_URL=http://127.0.0.1:3000/subscribe",
				"SYNCGATE_PROXY_SUBSCRIBE_TIMEOUT=3s",
				"SYNCGATE_PROXY_SUBSCRIBE_HEADERS=X-Request-Id,Authorization",
				"SYNCGATE_PROXY_SUBSCRIBE_COOKIES=session",
				"SYNCGATE_PROXY_PUBLISH_URL=http://127.0.0.1:3000/publish",
				"SYNCGATE_PROXY_PUBLISH_TIMEOUT=3s",
				"SYNCGATE_PROXY_PUBLISH_HEADERS=X-Request-Id,Authorization",
				"SYNCGATE_PROXY_PUBLISH_COOKIES=session",
				"SYNCGATE_PROXY_REFRESH_INTERVAL=30s",
				"SYNCGATE_PROXY_MAX_CONCURRENCY=9",
				"SYNCGATE_PROXY_MAX_QUEUED_BYTES=70000",
				"SYNCGATE_PROXY_REMOTE_ADDR=true",
			},
			want: Config{
				Proxy: Proxy{
					Connect:         envHook("connect"),
					Refresh:         envHook("refresh"),
					RefreshInterval: 30 * time.Second,
					Subscribe:       envHook("subscribe"),
					Publish:         envHook("publish"),
					MaxConcurrency:  9,
					MaxQueuedBytes:  70000,
					RemoteAddr:      true,
				},
				Auth:    Auth{HMACSecret: strings.Repeat("k", 32), PublicKeyFile: "/k.pem", JWKSURL: "https://id.example.com/jwks", Issuer: "iss", Audience: "aud", ChannelsClaim: "perms", PublicNamespaces: []string{"lobby", "news"}},
				Debug:   Debug{PprofListen: "127.0.0.1:6060"},
				Metrics: Metrics{Listen: "127.0.0.1:9191", Token: "0123456789abcdef"},
				API:     API{Listen: "127.0.0.1:9191", Keys: []string{"key-one-0123456789", "key-two-0123456789"}, ClusterSecret: strings.Repeat("c", 32)},
				Listen:  ":9000",
				Broker:  Broker{Type: "memory"},
				Redis: Redis{Addrs: []string{"10.0.0.1:6379", "10.0.0.2:6380"}, Cluster: true, SentinelMaster: "mymaster",
					SentinelAddrs: []string{"10.0.0.3:26379"}, Password: "pw", DB: 2, Prefix: "x", OutboxSize: 7, WaitReplicas: 1},
				NATS: NATS{URL: "nats://10.0.0.4:4222", Listen: "127.0.0.1:4333", StoreDir: "/tmp/n", ClusterListen: "127.0.0.1:6222",
					Routes: []string{"127.0.0.1:6223", "127.0.0.1:6224"}, Storage: "memory", Replicas: 3, OutboxSize: 9},
				History:  History{Size: 5, TTL: 6 * time.Second, PageBytes: 8192, MaxReads: 2, ReadWait: 3 * time.Second, SnapshotMaxBytes: 2048},
				Presence: Presence{TTL: 2 * time.Second, JoinLeave: false, JoinLeaveLimit: 10},
				Client: Client{
					PingInterval:     5 * time.Second,
					MaxMessageSize:   1024,
					MaxSubscriptions: 3,
					HandshakeTimeout: time.Second,
					MaxQueueBytes:    8192,

					MaxConnectionsPerUser: 3,
					PublishRate:           7,
					PublishBurst:          9,
					FrameTimeout:          2 * time.Second,
					ControlFrameRate:      5,
				},
				Server: Server{IO: "goroutine", Workers: 4, AllowedOrigins: []string{"https://a.example.com", "https://*.example.com"},
					MaxConnections: 11, MaxChannels: 13, MaxPartialBytes: 4096, AcceptRate: 12, DrainWindow: 3 * time.Second, GCPercent: 80, TLS: TLS{CertFile: "/c.pem", KeyFile: "/k.pem"},
					MaxHTTPConnections: 13, HTTPTimeout: 4 * time.Second, HTTPIdleTimeout: 5 * time.Second},
				Log: Log{Level: "warn", Format: "json"},
			},
		},
		{
			name: "env beats file",
			file: "listen: \":7000\"\nhistory:\n  size: 1\n  ttl: 1m\npresence:\n  join_leave: true\n",
			env:  []string{"SYNCGATE_HISTORY_TTL=6s", "SYNCGATE_PRESENCE_JOIN_LEAVE=0"},
			want: with(func(c *Config) {
				c.Listen = ":7000"              // file
				c.History.Size = 1              // file
				c.History.TTL = 6 * time.Second // env over file
				c.Presence.JoinLeave = false
			}),
		},
		{
			name: "metrics listener off",
			env:  []string{"SYNCGATE_METRICS_LISTEN=off"},
			want: with(func(c *Config) { c.Metrics.Listen = "off" }),
		},
		{
			name: "first duplicate env entry wins",
			env:  []string{"SYNCGATE_SERVER_WORKERS=2", "SYNCGATE_SERVER_WORKERS=3"},
			want: with(func(c *Config) { c.Server.Workers = 2 }),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			got, err := LoadFrom(path, tt.env)
			if err != nil {
				t.Fatalf("LoadFrom: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("LoadFrom:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func envHook(name string) ProxyHook {
	return ProxyHook{URL: "http://127.0.0.1:3000/" + name, Timeout: 3 * time.Second,
		Headers: []string{"X-Request-Id", "Authorization"}, Cookies: []string{"session"}}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  []string
		want []string // substrings of the error, all required
	}{
		{
			name: "unknown file key",
			file: "histroy:\n  size: 5\n",
			want: []string{`config: unknown key "histroy.size" in `, "config.yaml", `did you mean "history.size"?`},
		},
		{
			name: "unknown top-level file key",
			file: "port: 80\n",
			want: []string{`unknown key "port"`},
		},
		{
			name: "unknown key inside a section",
			file: "client:\n  max_message: 5\n",
			want: []string{`unknown key "client.max_message"`},
		},
		{
			name: "section given a scalar",
			file: "history: 5\n",
			want: []string{`"history"`, "want a section with keys history.size, history.ttl, history.page_bytes, history.max_reads, history.read_wait, history.snapshot_max_bytes, got 5"},
		},
		{
			name: "proxy url not http",
			env:  []string{"SYNCGATE_PROXY_PUBLISH_URL=ftp://x/y"},
			want: []string{"config: proxy.publish.url (env SYNCGATE_PROXY_PUBLISH_URL): want an http(s) URL or empty, got \"ftp://x/y\""},
		},
		{
			name: "proxy timeout zero",
			file: "proxy:\n  connect:\n    timeout: 0s\n",
			want: []string{"config: proxy.connect.timeout", "want a Go duration > 0, got 0s"},
		},
		{
			name: "proxy Cookie as a header",
			env:  []string{"SYNCGATE_PROXY_CONNECT_HEADERS=X-A,cookie"},
			want: []string{"config: proxy.connect.headers", "not Cookie: see .cookies", `got "cookie"`},
		},
		{
			name: "proxy refresh without connect",
			env:  []string{"SYNCGATE_PROXY_REFRESH_URL=http://127.0.0.1:1/r"},
			want: []string{"config: proxy.refresh.url: want empty unless proxy.connect.url is set"},
		},
		{
			// Cross-site WebSocket hijacking: a cookie session without an
			// origin allow-list lets any page connect as its visitor.
			name: "proxy cookies without allowed origins",
			env:  []string{"SYNCGATE_PROXY_CONNECT_URL=http://127.0.0.1:1/c", "SYNCGATE_PROXY_CONNECT_COOKIES=session"},
			want: []string{"config: proxy.<hook>.cookies", "cross-site WebSocket hijacking", "want server.allowed_origins"},
		},
		{
			name: "proxy concurrency zero",
			env:  []string{"SYNCGATE_PROXY_MAX_CONCURRENCY=0"},
			want: []string{"config: proxy.max_concurrency (env SYNCGATE_PROXY_MAX_CONCURRENCY): want a whole number >= 1, got 0"},
		},
		{
			name: "proxy queued bytes too small",
			env:  []string{"SYNCGATE_PROXY_MAX_QUEUED_BYTES=100"},
			want: []string{"config: proxy.max_queued_bytes (env SYNCGATE_PROXY_MAX_QUEUED_BYTES): want a whole number >= 65536, got 100"},
		},
		{
			name: "unknown env var",
			env:  []string{"SYNCGATE_HISTROY_SIZE=5"},
			want: []string{"unknown environment variable SYNCGATE_HISTROY_SIZE", "did you mean SYNCGATE_HISTORY_SIZE?"},
		},
		{
			name: "env var split on the wrong underscore",
			env:  []string{"SYNCGATE_PRESENCE_JOIN=true"},
			want: []string{"unknown environment variable SYNCGATE_PRESENCE_JOIN:"},
		},
		{
			name: "bad duration from env",
			env:  []string{"SYNCGATE_HISTORY_TTL=ten"},
			want: []string{`config: history.ttl (env SYNCGATE_HISTORY_TTL): want a Go duration like "10m" or "6s", got "ten"`},
		},
		{
			name: "bare number as duration in file",
			file: "client:\n  ping_interval: 25\n",
			want: []string{"client.ping_interval (file ", `want a Go duration like "10m" or "6s", got 25`},
		},
		{
			name: "duration out of range",
			file: "presence:\n  ttl: 500ms\n",
			want: []string{"presence.ttl (file ", "want a Go duration >= 1s, got 500ms"},
		},
		{
			name: "zero duration",
			env:  []string{"SYNCGATE_CLIENT_HANDSHAKE_TIMEOUT=0s"},
			want: []string{"client.handshake_timeout (env SYNCGATE_CLIENT_HANDSHAKE_TIMEOUT): want a Go duration > 0, got 0s"},
		},
		{
			name: "bad int from env",
			env:  []string{"SYNCGATE_CLIENT_MAX_MESSAGE_SIZE=64k"},
			want: []string{`client.max_message_size (env SYNCGATE_CLIENT_MAX_MESSAGE_SIZE): want a whole number >= 256, got "64k"`},
		},
		{
			name: "fractional int in file",
			file: "server:\n  workers: 1.5\n",
			want: []string{"server.workers (file ", "want a whole number >= 0, got 1.5"},
		},
		{
			name: "int out of range",
			file: "history:\n  size: -5\n",
			want: []string{"history.size (file ", "want a whole number >= 0, got -5"},
		},
		{
			name: "int below minimum from env",
			env:  []string{"SYNCGATE_CLIENT_MAX_QUEUE_BYTES=100"},
			want: []string{"client.max_queue_bytes (env SYNCGATE_CLIENT_MAX_QUEUE_BYTES): want a whole number >= 4096, got 100"},
		},
		{
			name: "bad bool",
			env:  []string{"SYNCGATE_PRESENCE_JOIN_LEAVE=yes"},
			want: []string{`presence.join_leave (env SYNCGATE_PRESENCE_JOIN_LEAVE): want true or false, got "yes"`},
		},
		{
			name: "bad enum",
			file: "broker:\n  type: kafka\n",
			want: []string{"broker.type (file ", "want one of " + strings.Join(brokerTypes, ", ") + `, got "kafka"`},
		},
		{
			name: "enum is case-sensitive",
			env:  []string{"SYNCGATE_LOG_LEVEL=INFO"},
			want: []string{`log.level (env SYNCGATE_LOG_LEVEL): want one of debug, info, warn, error, got "INFO"`},
		},
		{
			name: "enum given a number",
			file: "server:\n  io: 1\n",
			want: []string{"server.io (file ", "want one of epoll, goroutine, got 1"},
		},
		{
			name: "bad listen address",
			env:  []string{"SYNCGATE_LISTEN=8080"},
			want: []string{`listen (env SYNCGATE_LISTEN): want a host:port address like ":8080" or "127.0.0.1:8080", got "8080"`},
		},
		{
			name: "bad metrics address",
			env:  []string{"SYNCGATE_METRICS_LISTEN=yes"},
			want: []string{`metrics.listen (env SYNCGATE_METRICS_LISTEN): want a host:port address like ":8080" or "127.0.0.1:8080", or "off", got "yes"`},
		},
		{
			name: "short metrics token",
			env:  []string{"SYNCGATE_METRICS_TOKEN=abc"},
			want: []string{`metrics.token (env SYNCGATE_METRICS_TOKEN): want a bearer token (at least 16 bytes) or empty, got "abc"`},
		},
		{
			name: "short api key",
			env:  []string{"SYNCGATE_API_KEYS=abc"},
			want: []string{`api.keys (env SYNCGATE_API_KEYS): want a list of API keys (each at least 16 bytes, no comma) (in env: comma-separated), got "abc"`},
		},
		{
			name: "api without keys",
			env:  []string{"SYNCGATE_API_LISTEN=127.0.0.1:9091", "SYNCGATE_BROKER_TYPE=memory"},
			want: []string{`api.keys (env SYNCGATE_API_KEYS): want at least one API key`},
		},
		{
			name: "api on a cluster broker without cluster secret",
			env:  []string{"SYNCGATE_API_LISTEN=127.0.0.1:9091", "SYNCGATE_API_KEYS=key-one-0123456789", "SYNCGATE_BROKER_TYPE=redis"},
			want: []string{`api.cluster_secret (env SYNCGATE_API_CLUSTER_SECRET): want a shared secret (at least 32 bytes`},
		},
		{
			name: "short cluster secret",
			env:  []string{"SYNCGATE_API_CLUSTER_SECRET=abc"},
			want: []string{`api.cluster_secret (env SYNCGATE_API_CLUSTER_SECRET): want a shared secret (at least 32 bytes) or empty, got "abc"`},
		},
		{
			name: "empty leaf in file",
			file: "listen:\n",
			want: []string{"listen (file ", "got an empty value"},
		},
		{
			name: "bad file value not hidden by env",
			file: "history:\n  ttl: ten\n",
			env:  []string{"SYNCGATE_HISTORY_TTL=6s"},
			want: []string{"history.ttl (file "},
		},
		{
			name: "every problem reported",
			file: "history:\n  size: -1\n",
			env:  []string{"SYNCGATE_LOG_FORMAT=xml", "SYNCGATE_NOPE=1"},
			want: []string{"history.size (file ", "log.format (env SYNCGATE_LOG_FORMAT)", "SYNCGATE_NOPE"},
		},
		{
			name: "malformed yaml",
			file: "history: [\n",
			want: []string{"config: ", "config.yaml"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			got, err := LoadFrom(path, tt.env)
			if err == nil {
				t.Fatalf("LoadFrom succeeded with %+v; want an error", got)
			}
			if !reflect.DeepEqual(got, Config{}) {
				t.Errorf("LoadFrom returned %+v with its error; want the zero Config", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\n does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(%q) = %v; want fs.ErrNotExist", path, err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file", err)
	}
}

func TestLoadUsesProcessEnv(t *testing.T) {
	t.Setenv("SYNCGATE_SERVER_WORKERS", "6")
	got, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if got.Server.Workers != 6 {
		t.Fatalf("Server.Workers = %d; want 6 from SYNCGATE_SERVER_WORKERS", got.Server.Workers)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"listen", func(c *Config) { c.Listen = "" }, `config: listen: want a host:port address like ":8080" or "127.0.0.1:8080", got ""`},
		{"listen port", func(c *Config) { c.Listen = ":70000" }, `config: listen: want a host:port address`},
		{"broker type", func(c *Config) { c.Broker.Type = "kafka" }, "config: broker.type: want one of " + strings.Join(brokerTypes, ", ") + `, got "kafka"`},
		{"history size", func(c *Config) { c.History.Size = -5 }, "config: history.size: want a whole number >= 0, got -5"},
		{"history ttl", func(c *Config) { c.History.TTL = 0 }, "config: history.ttl: want a Go duration > 0, got 0s"},
		{"presence ttl", func(c *Config) { c.Presence.TTL = time.Millisecond }, "config: presence.ttl: want a Go duration >= 1s, got 1ms"},
		{"join leave limit", func(c *Config) { c.Presence.JoinLeaveLimit = -1 }, "config: presence.join_leave_limit: want a whole number >= 0, got -1"},
		{"wait replicas", func(c *Config) { c.Redis.WaitReplicas = -1 }, "config: redis.wait_replicas: want a whole number >= 0, got -1"},
		{"ping interval", func(c *Config) { c.Client.PingInterval = -time.Second }, "config: client.ping_interval: want a Go duration > 0, got -1s"},
		{"max message size", func(c *Config) { c.Client.MaxMessageSize = 255 }, "config: client.max_message_size: want a whole number >= 256, got 255"},
		{"max subscriptions", func(c *Config) { c.Client.MaxSubscriptions = 0 }, "config: client.max_subscriptions: want a whole number >= 1, got 0"},
		{"handshake timeout", func(c *Config) { c.Client.HandshakeTimeout = 0 }, "config: client.handshake_timeout: want a Go duration > 0, got 0s"},
		{"max queue bytes", func(c *Config) { c.Client.MaxQueueBytes = 4095 }, "config: client.max_queue_bytes: want a whole number >= 4096, got 4095"},
		{"frame timeout", func(c *Config) { c.Client.FrameTimeout = 0 }, "config: client.frame_timeout: want a Go duration > 0, got 0s"},
		{"control frame rate", func(c *Config) { c.Client.ControlFrameRate = -1 }, "config: client.control_frame_rate: want a whole number >= 0, got -1"},
		{"max partial bytes", func(c *Config) { c.Server.MaxPartialBytes = 100 }, "config: server.max_partial_bytes: want a whole number >= 512, got 100"},
		{"max partial bytes vs message size", func(c *Config) { c.Server.MaxPartialBytes = 65536 },
			"config: server.max_partial_bytes: want a whole number >= 2 x client.max_message_size (131072), got 65536"},
		{"server io", func(c *Config) { c.Server.IO = "poll" }, `config: server.io: want one of epoll, goroutine, got "poll"`},
		{"workers", func(c *Config) { c.Server.Workers = -1 }, "config: server.workers: want a whole number >= 0, got -1"},
		{"max channels", func(c *Config) { c.Server.MaxChannels = 0 }, "config: server.max_channels: want a whole number >= 1, got 0"},
		{"log level", func(c *Config) { c.Log.Level = "trace" }, `config: log.level: want one of debug, info, warn, error, got "trace"`},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, `config: log.format: want one of text, json, got "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := with(tt.edit).Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v\nwant an error containing %q", err, tt.want)
			}
		})
	}

	t.Run("zero value names every bad key", func(t *testing.T) {
		err := Config{}.Validate()
		if err == nil {
			t.Fatal("Config{}.Validate() = nil")
		}
		for _, key := range []string{"listen", "broker.type", "history.ttl", "presence.ttl", "client.max_message_size", "server.io", "log.level"} {
			if !strings.Contains(err.Error(), "config: "+key+":") {
				t.Errorf("error does not name %s:\n%v", key, err)
			}
		}
	})
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "", 3},
		{"histroy", "history", 2},
		{"kitten", "sitting", 3},
	} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d; want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestValidateBrokerSecurity: an embedded NATS server reachable from other
// hosts needs a credential (the error names the keys); credential and TLS
// keys that contradict each other are refused.
func TestValidateBrokerSecurity(t *testing.T) {
	bad := []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"embedded on all interfaces", func(c *Config) { c.NATS.Listen = ":4222" }, `config: nats.user and nats.password (or nats.token): want a credential: nats.listen ":4222" is not a loopback address`},
		{"embedded on a private address", func(c *Config) { c.NATS.Listen = "10.0.0.5:4222" }, `nats.listen "10.0.0.5:4222" is not a loopback address`},
		{"embedded cluster", func(c *Config) { c.NATS.ClusterListen = "127.0.0.1:6222"; c.NATS.Routes = []string{"127.0.0.1:6223"} }, `want a credential: nats.cluster_listen is "127.0.0.1:6222"`},
		{"core nats embedded", func(c *Config) { c.Broker.Type = "nats"; c.NATS.Listen = "0.0.0.0:4222" }, "nats.user and nats.password (or nats.token): want a credential"},
		{"user without password", func(c *Config) { c.NATS.User = "u" }, "config: nats.user and nats.password: want both set or both empty"},
		{"token and user", func(c *Config) { c.NATS.Token = "t"; c.NATS.User = "u"; c.NATS.Password = "p" }, "want at most one"},
		{"nkey with the embedded server", func(c *Config) { c.NATS.NKeySeedFile = "seed.nk" }, "config: nats.nkey_seed_file and nats.creds_file: want them only with nats.url"},
		{"nats cert without key", func(c *Config) { c.NATS.TLS.CertFile = "c.pem" }, "config: nats.tls.cert_file and nats.tls.key_file: want both set or both empty"},
		{"cluster TLS without CA", func(c *Config) {
			c.NATS.Token = "0123456789abcdef"
			c.NATS.ClusterListen = "127.0.0.1:6222"
			c.NATS.TLS.CertFile, c.NATS.TLS.KeyFile = "c.pem", "k.pem"
		}, "config: nats.tls.ca_file: want the CA"},
		{"redis CA without TLS", func(c *Config) { c.Redis.TLS.CAFile = "ca.pem" }, "config: redis.tls.enabled: want true"},
		{"redis cert without key", func(c *Config) { c.Redis.TLS.Enabled = true; c.Redis.TLS.CertFile = "c.pem" }, "config: redis.tls.cert_file and redis.tls.key_file"},
		{"sentinel password without sentinel", func(c *Config) { c.Redis.SentinelPassword = "p" }, "config: redis.sentinel_username and redis.sentinel_password: want them only with redis.sentinel_master"},
		{"short embedded token", func(c *Config) { c.NATS.Token = "secret" }, "config: nats.token: want at least 16 bytes for the embedded NATS server, got 6"},
		{"short embedded password", func(c *Config) { c.NATS.User, c.NATS.Password = "u", "hunter2" }, "config: nats.password: want at least 16 bytes for the embedded NATS server, got 7"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			err := with(tt.edit).Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v\nwant an error containing %q", err, tt.want)
			}
		})
	}
	good := []struct {
		name string
		edit func(c *Config)
	}{
		{"default: loopback, a credential made at start", func(*Config) {}},
		{"localhost", func(c *Config) { c.NATS.Listen = "localhost:14222" }},
		{"IPv6 loopback", func(c *Config) { c.NATS.Listen = "[::1]:14222" }},
		{"exposed with user and password", func(c *Config) { c.NATS.Listen = ":4222"; c.NATS.User, c.NATS.Password = "u", "0123456789abcdef" }},
		{"cluster with a token", func(c *Config) { c.NATS.ClusterListen = ":6222"; c.NATS.Token = "0123456789abcdef" }},
		{"short password for an external server", func(c *Config) { c.NATS.URL = "nats://n:4222"; c.NATS.User, c.NATS.Password = "u", "p" }},
		{"external server needs nothing of us", func(c *Config) { c.NATS.URL = "nats://10.0.0.5:4222"; c.NATS.Listen = ":4222" }},
		{"external server with an nkey", func(c *Config) { c.NATS.URL = "nats://10.0.0.5:4222"; c.NATS.NKeySeedFile = "seed.nk" }},
		{"redis broker ignores nats.listen", func(c *Config) { c.Broker.Type = "redis"; c.NATS.Listen = ":4222" }},
		{"redis TLS", func(c *Config) {
			c.Redis.TLS.Enabled = true
			c.Redis.TLS.CAFile = "ca.pem"
			c.Redis.TLS.ServerName = "redis"
		}},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			if err := with(tt.edit).Validate(); err != nil {
				t.Fatalf("Validate() = %v", err)
			}
		})
	}
	t.Run("from env", func(t *testing.T) {
		_, err := LoadFrom("", []string{"SYNCGATE_NATS_LISTEN=0.0.0.0:4222"})
		if err == nil || !strings.Contains(err.Error(), "nats.user and nats.password (or nats.token)") {
			t.Fatalf("LoadFrom = %v, want the credential error", err)
		}
		c, err := LoadFrom("", []string{"SYNCGATE_NATS_LISTEN=0.0.0.0:4222", "SYNCGATE_NATS_TOKEN=s3cret-0123456789"})
		if err != nil || c.NATS.Token != "s3cret-0123456789" {
			t.Fatalf("LoadFrom = %+v, %v", c.NATS, err)
		}
	})
}

// TestRedisTLSClientConfig: files load into a tls.Config; a bad file is
// an error naming the key.
func TestRedisTLSClientConfig(t *testing.T) {
	if tc, err := (RedisTLS{}).ClientConfig(); tc != nil || err != nil {
		t.Fatalf("TLS off: %v, %v", tc, err)
	}
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		tls  RedisTLS
		want string
	}{
		{RedisTLS{Enabled: true, CAFile: filepath.Join(dir, "missing.pem")}, "config: redis.tls.ca_file: open "},
		{RedisTLS{Enabled: true, CAFile: notPEM}, "config: redis.tls.ca_file: want PEM certificates"},
		{RedisTLS{Enabled: true, CertFile: notPEM, KeyFile: notPEM}, "config: redis.tls.cert_file and redis.tls.key_file: "},
	} {
		if _, err := tt.tls.ClientConfig(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.tls, err, tt.want)
		}
	}
	tc, err := RedisTLS{Enabled: true, ServerName: "redis.internal"}.ClientConfig()
	if err != nil || tc.ServerName != "redis.internal" || tc.MinVersion != tls.VersionTLS12 {
		t.Fatalf("ClientConfig = %+v, %v", tc, err)
	}
}
