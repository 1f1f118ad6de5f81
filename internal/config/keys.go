package config

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
)

// Allowed values of the enum keys. A new broker backend is one more entry in
// brokerTypes; error messages are built from these slices.
var (
	brokerTypes = []string{"memory", "nats", "jetstream", "redis", "redis-streams"}
	serverIOs   = []string{"epoll", "goroutine"}
	natsStorage = []string{"file", "memory"}
	logLevels   = []string{"debug", "info", "warn", "error"}
	logFormats  = []string{"text", "json"}
)

// envPrefix starts the name of every environment override.
const envPrefix = "SYNCGATE_"

// settings is the key table: one row per config key, in config.yaml order,
// saying which Config field it fills, how a raw value is parsed and which
// values are allowed. Defaults live in Default, not here.
var settings = []setting{
	stringKey("listen", addrWant, checkAddr, func(c *Config) *string { return &c.Listen }),

	enumKey("broker.type", brokerTypes, func(c *Config) *string { return &c.Broker.Type }),

	listKey("redis.addrs", addrWant, checkAddr, func(c *Config) *[]string { return &c.Redis.Addrs }),
	boolKey("redis.cluster", func(c *Config) *bool { return &c.Redis.Cluster }),
	stringKey("redis.sentinel_master", "a Sentinel master name", anyString, func(c *Config) *string { return &c.Redis.SentinelMaster }),
	listKey("redis.sentinel_addrs", addrWant, checkAddr, func(c *Config) *[]string { return &c.Redis.SentinelAddrs }),
	stringKey("redis.username", "an ACL user name or empty", anyString, func(c *Config) *string { return &c.Redis.Username }),
	stringKey("redis.password", "a password", anyString, func(c *Config) *string { return &c.Redis.Password }),
	stringKey("redis.sentinel_username", "a Sentinel ACL user name or empty", anyString, func(c *Config) *string { return &c.Redis.SentinelUsername }),
	stringKey("redis.sentinel_password", "a Sentinel password or empty", anyString, func(c *Config) *string { return &c.Redis.SentinelPassword }),
	intKey("redis.db", 0, func(c *Config) *int { return &c.Redis.DB }),
	stringKey("redis.prefix", "a key prefix", anyString, func(c *Config) *string { return &c.Redis.Prefix }),
	intKey("redis.outbox_size", 0, func(c *Config) *int { return &c.Redis.OutboxSize }),
	intKey("redis.wait_replicas", 0, func(c *Config) *int { return &c.Redis.WaitReplicas }),
	boolKey("redis.tls.enabled", func(c *Config) *bool { return &c.Redis.TLS.Enabled }),
	stringKey("redis.tls.ca_file", "a PEM CA certificate file path or empty", anyString, func(c *Config) *string { return &c.Redis.TLS.CAFile }),
	stringKey("redis.tls.cert_file", "a PEM certificate file path or empty", anyString, func(c *Config) *string { return &c.Redis.TLS.CertFile }),
	stringKey("redis.tls.key_file", "a PEM key file path or empty", anyString, func(c *Config) *string { return &c.Redis.TLS.KeyFile }),
	stringKey("redis.tls.server_name", "a host name or empty", anyString, func(c *Config) *string { return &c.Redis.TLS.ServerName }),

	stringKey("nats.url", `a NATS URL like "nats://host:4222" (several comma-separated), or empty for the embedded server`, anyString, func(c *Config) *string { return &c.NATS.URL }),
	stringKey("nats.listen", addrWant, checkAddr, func(c *Config) *string { return &c.NATS.Listen }),
	stringKey("nats.store_dir", "a directory path", nonEmpty, func(c *Config) *string { return &c.NATS.StoreDir }),
	stringKey("nats.cluster_listen", addrWant+" or empty", emptyOr(checkAddr), func(c *Config) *string { return &c.NATS.ClusterListen }),
	listKey("nats.routes", addrWant, checkAddr, func(c *Config) *[]string { return &c.NATS.Routes }),
	enumKey("nats.storage", natsStorage, func(c *Config) *string { return &c.NATS.Storage }),
	intKey("nats.replicas", 1, func(c *Config) *int { return &c.NATS.Replicas }),
	intKey("nats.outbox_size", 0, func(c *Config) *int { return &c.NATS.OutboxSize }),
	stringKey("nats.user", "a user name or empty", anyString, func(c *Config) *string { return &c.NATS.User }),
	stringKey("nats.password", "a password or empty", anyString, func(c *Config) *string { return &c.NATS.Password }),
	stringKey("nats.token", "a token or empty", anyString, func(c *Config) *string { return &c.NATS.Token }),
	stringKey("nats.nkey_seed_file", "an nkey seed file path or empty", anyString, func(c *Config) *string { return &c.NATS.NKeySeedFile }),
	stringKey("nats.creds_file", "a NATS credentials file path or empty", anyString, func(c *Config) *string { return &c.NATS.CredsFile }),
	stringKey("nats.tls.cert_file", "a PEM certificate file path or empty", anyString, func(c *Config) *string { return &c.NATS.TLS.CertFile }),
	stringKey("nats.tls.key_file", "a PEM key file path or empty", anyString, func(c *Config) *string { return &c.NATS.TLS.KeyFile }),
	stringKey("nats.tls.ca_file", "a PEM CA certificate file path or empty", anyString, func(c *Config) *string { return &c.NATS.TLS.CAFile }),

	intKey("history.size", 0, func(c *Config) *int { return &c.History.Size }),
	durationKey("history.ttl", 0, func(c *Config) *time.Duration { return &c.History.TTL }),
	intKey("history.page_bytes", 4096, func(c *Config) *int { return &c.History.PageBytes }),
	intKey("history.max_reads", 1, func(c *Config) *int { return &c.History.MaxReads }),
	durationKey("history.read_wait", 0, func(c *Config) *time.Duration { return &c.History.ReadWait }),
	intKey("history.snapshot_max_bytes", 1024, func(c *Config) *int { return &c.History.SnapshotMaxBytes }),

	durationKey("presence.ttl", time.Second, func(c *Config) *time.Duration { return &c.Presence.TTL }),
	boolKey("presence.join_leave", func(c *Config) *bool { return &c.Presence.JoinLeave }),
	intKey("presence.join_leave_limit", 0, func(c *Config) *int { return &c.Presence.JoinLeaveLimit }),

	durationKey("client.ping_interval", 0, func(c *Config) *time.Duration { return &c.Client.PingInterval }),
	intKey("client.max_message_size", 256, func(c *Config) *int { return &c.Client.MaxMessageSize }),
	intKey("client.max_subscriptions", 1, func(c *Config) *int { return &c.Client.MaxSubscriptions }),
	durationKey("client.handshake_timeout", 0, func(c *Config) *time.Duration { return &c.Client.HandshakeTimeout }),
	intKey("client.max_queue_bytes", 4096, func(c *Config) *int { return &c.Client.MaxQueueBytes }),
	intKey("client.max_connections_per_user", 0, func(c *Config) *int { return &c.Client.MaxConnectionsPerUser }),
	intKey("client.publish_rate", 0, func(c *Config) *int { return &c.Client.PublishRate }),
	intKey("client.publish_burst", 1, func(c *Config) *int { return &c.Client.PublishBurst }),
	durationKey("client.frame_timeout", 0, func(c *Config) *time.Duration { return &c.Client.FrameTimeout }),
	intKey("client.control_frame_rate", 0, func(c *Config) *int { return &c.Client.ControlFrameRate }),

	stringKey("auth.hmac_secret", "a shared secret (at least 32 bytes) or empty", emptyOr(minLen(32)), func(c *Config) *string { return &c.Auth.HMACSecret }),
	stringKey("auth.public_key_file", "a PEM public key file path or empty", anyString, func(c *Config) *string { return &c.Auth.PublicKeyFile }),
	stringKey("auth.jwks_url", `an http(s) URL or empty`, emptyOr(isHTTPURL), func(c *Config) *string { return &c.Auth.JWKSURL }),
	stringKey("auth.issuer", "a token issuer or empty", anyString, func(c *Config) *string { return &c.Auth.Issuer }),
	stringKey("auth.audience", "a token audience or empty", anyString, func(c *Config) *string { return &c.Auth.Audience }),
	stringKey("auth.channels_claim", "a claim name", nonEmpty, func(c *Config) *string { return &c.Auth.ChannelsClaim }),
	listKey("auth.public_namespaces", "namespace names (the part of a channel before ':')", isNamespace, func(c *Config) *[]string { return &c.Auth.PublicNamespaces }),

	enumKey("server.io", serverIOs, func(c *Config) *string { return &c.Server.IO }),
	intKey("server.workers", 0, func(c *Config) *int { return &c.Server.Workers }),
	listKey("server.allowed_origins", `origins like "https://app.example.com" or "https://*.example.com"`, isOrigin, func(c *Config) *[]string { return &c.Server.AllowedOrigins }),
	intKey("server.max_connections", 0, func(c *Config) *int { return &c.Server.MaxConnections }),
	intKey("server.max_channels", 1, func(c *Config) *int { return &c.Server.MaxChannels }),
	intKey("server.accept_rate", 0, func(c *Config) *int { return &c.Server.AcceptRate }),
	intKey("server.max_http_connections", 0, func(c *Config) *int { return &c.Server.MaxHTTPConnections }),
	durationKey("server.http_timeout", 0, func(c *Config) *time.Duration { return &c.Server.HTTPTimeout }),
	durationKey("server.http_idle_timeout", 0, func(c *Config) *time.Duration { return &c.Server.HTTPIdleTimeout }),
	intKey("server.max_partial_bytes", 512, func(c *Config) *int { return &c.Server.MaxPartialBytes }),
	durationKey("server.drain_window", 0, func(c *Config) *time.Duration { return &c.Server.DrainWindow }),
	intKey("server.gc_percent", 10, func(c *Config) *int { return &c.Server.GCPercent }),
	stringKey("server.tls.cert_file", "a PEM certificate file path or empty", anyString, func(c *Config) *string { return &c.Server.TLS.CertFile }),
	stringKey("server.tls.key_file", "a PEM key file path or empty", anyString, func(c *Config) *string { return &c.Server.TLS.KeyFile }),

	hookURL("connect", func(c *Config) *ProxyHook { return &c.Proxy.Connect }),
	hookTimeout("connect", func(c *Config) *ProxyHook { return &c.Proxy.Connect }),
	hookHeaders("connect", func(c *Config) *ProxyHook { return &c.Proxy.Connect }),
	hookCookies("connect", func(c *Config) *ProxyHook { return &c.Proxy.Connect }),
	hookURL("refresh", func(c *Config) *ProxyHook { return &c.Proxy.Refresh }),
	hookTimeout("refresh", func(c *Config) *ProxyHook { return &c.Proxy.Refresh }),
	hookHeaders("refresh", func(c *Config) *ProxyHook { return &c.Proxy.Refresh }),
	hookCookies("refresh", func(c *Config) *ProxyHook { return &c.Proxy.Refresh }),
	durationKey("proxy.refresh.interval", time.Second, func(c *Config) *time.Duration { return &c.Proxy.RefreshInterval }),
	hookURL("subscribe", func(c *Config) *ProxyHook { return &c.Proxy.Subscribe }),
	hookTimeout("subscribe", func(c *Config) *ProxyHook { return &c.Proxy.Subscribe }),
	hookHeaders("subscribe", func(c *Config) *ProxyHook { return &c.Proxy.Subscribe }),
	hookCookies("subscribe", func(c *Config) *ProxyHook { return &c.Proxy.Subscribe }),
	hookURL("publish", func(c *Config) *ProxyHook { return &c.Proxy.Publish }),
	hookTimeout("publish", func(c *Config) *ProxyHook { return &c.Proxy.Publish }),
	hookHeaders("publish", func(c *Config) *ProxyHook { return &c.Proxy.Publish }),
	hookCookies("publish", func(c *Config) *ProxyHook { return &c.Proxy.Publish }),
	intKey("proxy.max_concurrency", 1, func(c *Config) *int { return &c.Proxy.MaxConcurrency }),
	intKey("proxy.max_queued_bytes", 65536, func(c *Config) *int { return &c.Proxy.MaxQueuedBytes }),
	boolKey("proxy.remote_addr", func(c *Config) *bool { return &c.Proxy.RemoteAddr }),

	stringKey("metrics.listen", addrWant+`, or "off"`, offOr(checkAddr), func(c *Config) *string { return &c.Metrics.Listen }),
	stringKey("metrics.token", "a bearer token (at least 16 bytes) or empty", emptyOr(minLen(16)), func(c *Config) *string { return &c.Metrics.Token }),

	stringKey("api.listen", addrWant+`, or "off"`, offOr(checkAddr), func(c *Config) *string { return &c.API.Listen }),
	listKey("api.keys", "API keys (each at least 16 bytes, no comma)", minLen(16), func(c *Config) *[]string { return &c.API.Keys }),
	stringKey("api.cluster_secret", "a shared secret (at least 32 bytes) or empty", emptyOr(minLen(32)), func(c *Config) *string { return &c.API.ClusterSecret }),

	stringKey("debug.pprof_listen", addrWant+" or empty", emptyOr(checkAddr), func(c *Config) *string { return &c.Debug.PprofListen }),

	enumKey("log.level", logLevels, func(c *Config) *string { return &c.Log.Level }),
	enumKey("log.format", logFormats, func(c *Config) *string { return &c.Log.Format }),
}

// The four keys of an event proxy hook (proxy.<hook>.url, .timeout,
// .headers, .cookies).
func hookURL(hook string, h func(*Config) *ProxyHook) setting {
	return stringKey("proxy."+hook+".url", "an http(s) URL or empty", emptyOr(isHTTPURL), func(c *Config) *string { return &h(c).URL })
}

func hookTimeout(hook string, h func(*Config) *ProxyHook) setting {
	return durationKey("proxy."+hook+".timeout", 0, func(c *Config) *time.Duration { return &h(c).Timeout })
}

func hookHeaders(hook string, h func(*Config) *ProxyHook) setting {
	return listKey("proxy."+hook+".headers", `HTTP header names like "X-Request-Id" (not Cookie: see .cookies)`, isForwardHeader, func(c *Config) *[]string { return &h(c).Headers })
}

func hookCookies(hook string, h func(*Config) *ProxyHook) setting {
	return listKey("proxy."+hook+".cookies", `cookie names like "session"`, isToken, func(c *Config) *[]string { return &h(c).Cookies })
}

// isToken accepts an RFC 7230 token: what header and cookie names are made of.
func isToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}

// isForwardHeader is a header name other than Cookie, which is forwarded
// only by name through proxy.<hook>.cookies (and only with an origin
// allow-list).
func isForwardHeader(s string) bool { return isToken(s) && !strings.EqualFold(s, "Cookie") }

// setting ties one config key to one Config field.
type setting struct {
	key string
	// field returns a pointer to the field in c (used by tests to prove the
	// table covers every field exactly once).
	field func(c *Config) any
	// set parses raw, a YAML value or an environment string, into the
	// field, or reports the form it wanted.
	set func(c *Config, raw any) *badValue
	// check reports a field value outside the allowed range or set.
	check func(c *Config) *badValue
}

// env is the environment variable that overrides the key.
func (s setting) env() string { return envName(s.key) }

func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// badValue is a value of the wrong form or out of range, before the key and
// source are known.
type badValue struct {
	want string // the expected form: `a whole number >= 0`
	got  string // the value as the user wrote it, quoted if it was a string
}

// at names the key and, if not empty, the source ("file config.yaml",
// "env SYNCGATE_HISTORY_TTL").
func (b *badValue) at(key, source string) error {
	if source == "" {
		return fmt.Errorf("config: %s: want %s, got %s", key, b.want, b.got)
	}
	return fmt.Errorf("config: %s (%s): want %s, got %s", key, source, b.want, b.got)
}

// newSetting builds a row from a parser of raw values and a checker of
// typed ones; check may be nil when every parsed value is allowed.
func newSetting[T any](key string, field func(*Config) *T,
	parse func(raw any) (T, *badValue), check func(T) *badValue) setting {
	return setting{
		key:   key,
		field: func(c *Config) any { return field(c) },
		set: func(c *Config, raw any) *badValue {
			v, bad := parse(raw)
			if bad != nil {
				return bad
			}
			*field(c) = v
			return nil
		},
		check: func(c *Config) *badValue {
			if check == nil {
				return nil
			}
			return check(*field(c))
		},
	}
}

// intKey is a whole number >= least. YAML numbers and decimal strings (as
// environment values always are) are accepted.
func intKey(key string, least int, field func(*Config) *int) setting {
	want := "a whole number >= " + strconv.Itoa(least)
	return newSetting(key, field,
		func(raw any) (int, *badValue) {
			n, ok := toInt(raw)
			if !ok {
				return 0, &badValue{want, describe(raw)}
			}
			return n, nil
		},
		func(n int) *badValue {
			if n < least {
				return &badValue{want, strconv.Itoa(n)}
			}
			return nil
		})
}

func toInt(raw any) (int, bool) {
	switch v := raw.(type) {
	case int:
		return v, true
	case int64:
		return int(v), int64(int(v)) == v
	case uint64:
		return int(v), v <= math.MaxInt
	case float64: // YAML 1e6
		if v != math.Trunc(v) || v < math.MinInt || v >= math.MaxInt {
			return 0, false
		}
		return int(v), true
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		return n, err == nil
	}
	return 0, false
}

// durationKey is a Go duration string, > 0 and >= least. A bare
// number is refused: "600" could mean seconds or nanoseconds.
func durationKey(key string, least time.Duration, field func(*Config) *time.Duration) setting {
	const form = `a Go duration like "10m" or "6s"`
	rng := "a Go duration > 0"
	if least > 0 {
		rng = "a Go duration >= " + least.String()
	}
	return newSetting(key, field,
		func(raw any) (time.Duration, *badValue) {
			s, ok := raw.(string)
			if !ok {
				return 0, &badValue{form, describe(raw)}
			}
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return 0, &badValue{form, describe(raw)}
			}
			return d, nil
		},
		func(d time.Duration) *badValue {
			if d <= 0 || d < least {
				return &badValue{rng, d.String()}
			}
			return nil
		})
}

// boolKey is true or false; strconv.ParseBool's spellings (1, 0, TRUE, ...)
// are accepted too.
func boolKey(key string, field func(*Config) *bool) setting {
	const want = "true or false"
	return newSetting(key, field,
		func(raw any) (bool, *badValue) {
			switch v := raw.(type) {
			case bool:
				return v, nil
			case string:
				if b, err := strconv.ParseBool(strings.TrimSpace(v)); err == nil {
					return b, nil
				}
			}
			return false, &badValue{want, describe(raw)}
		},
		nil)
}

// enumKey is one of allowed, matched exactly.
func enumKey(key string, allowed []string, field func(*Config) *string) setting {
	want := "one of " + strings.Join(allowed, ", ")
	return stringKey(key, want, func(s string) bool { return slices.Contains(allowed, s) }, field)
}

// stringKey is a string for which ok returns true; want describes such a
// string.
func stringKey(key, want string, ok func(string) bool, field func(*Config) *string) setting {
	return newSetting(key, field,
		func(raw any) (string, *badValue) {
			s, isString := raw.(string)
			if !isString {
				return "", &badValue{want, describe(raw)}
			}
			return s, nil
		},
		func(s string) *badValue {
			if !ok(s) {
				return &badValue{want, strconv.Quote(s)}
			}
			return nil
		})
}

func anyString(string) bool { return true }

func minLen(n int) func(string) bool { return func(s string) bool { return len(s) >= n } }

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func isOrigin(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && (u.Path == "" || u.Path == "/")
}

func isNamespace(s string) bool {
	if s == "" || len(s) > 254 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_-.=@", c)) {
			return false
		}
	}
	return true
}

func nonEmpty(s string) bool { return s != "" }

func emptyOr(ok func(string) bool) func(string) bool {
	return func(s string) bool { return s == "" || ok(s) }
}

// offOr accepts "off" (or empty, which env cannot express) besides what ok
// accepts.
func offOr(ok func(string) bool) func(string) bool {
	return func(s string) bool { return s == "" || s == "off" || ok(s) }
}

// listKey is a list of strings each accepted by ok: a YAML list, or one
// comma-separated string (as environment values are: "a:1,b:2"). An empty
// string is an empty list.
func listKey(key, itemWant string, ok func(string) bool, field func(*Config) *[]string) setting {
	want := "a list of " + itemWant + " (in env: comma-separated)"
	return newSetting(key, field,
		func(raw any) ([]string, *badValue) {
			switch v := raw.(type) {
			case nil:
				return []string{}, nil
			case string:
				out := []string{}
				for _, item := range strings.Split(v, ",") {
					if item = strings.TrimSpace(item); item != "" {
						out = append(out, item)
					}
				}
				return out, nil
			case []any:
				out := make([]string, 0, len(v))
				for _, item := range v {
					s, isString := item.(string)
					if !isString {
						return nil, &badValue{want, describe(item)}
					}
					out = append(out, s)
				}
				return out, nil
			case []string:
				return append([]string{}, v...), nil
			}
			return nil, &badValue{want, describe(raw)}
		},
		func(items []string) *badValue {
			for _, s := range items {
				if !ok(s) {
					return &badValue{want, strconv.Quote(s)}
				}
			}
			return nil
		})
}

const addrWant = `a host:port address like ":8080" or "127.0.0.1:8080"`

// checkAddr accepts host:port with a numeric port (0 picks a free one) and
// a possibly empty host.
func checkAddr(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

// describe renders a raw value for a message: strings quoted, YAML null as
// "an empty value".
func describe(raw any) string {
	switch v := raw.(type) {
	case nil:
		return "an empty value"
	case string:
		return strconv.Quote(v)
	}
	return fmt.Sprint(raw)
}

func lookupKey(key string) (setting, bool) {
	for _, s := range settings {
		if s.key == key {
			return s, true
		}
	}
	return setting{}, false
}

func lookupEnv(name string) (setting, bool) {
	for _, s := range settings {
		if s.env() == name {
			return s, true
		}
	}
	return setting{}, false
}

func allKeys() []string {
	keys := make([]string, len(settings))
	for i, s := range settings {
		keys[i] = s.key
	}
	return keys
}

func allEnvNames() []string {
	names := make([]string, len(settings))
	for i, s := range settings {
		names[i] = s.env()
	}
	return names
}

// sortedKeys lists the file's keys (lower-cased by viper, dotted) in a
// stable order so errors come out the same way every run.
func sortedKeys(v *viper.Viper) []string {
	keys := v.AllKeys()
	slices.Sort(keys)
	return keys
}

// didYouMean suggests the nearest candidate to a misspelt name, formatted
// with verb, or returns "" when none is close.
func didYouMean(name string, candidates []string, verb string) string {
	best, bestDist := "", 4 // suggest only within 3 edits
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean "+verb+"?)", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
