package redis

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/syncgate/syncgate/brokers/internal/redisbase"
)

// Defaults for the zero Config, in one place.
const (
	DefaultAddr          = "127.0.0.1:6379"
	DefaultPrefix        = "sg"
	DefaultHistorySize   = 1000
	DefaultHistoryTTL    = 10 * time.Minute
	DefaultMetaTTL       = 24 * time.Hour
	DefaultOutboxSize    = 10000
	DefaultDialTimeout   = 2 * time.Second
	DefaultReadTimeout   = 3 * time.Second
	DefaultProbeInterval = 2 * time.Second
	DefaultProbeTimeout  = 2 * time.Second
	DefaultReconnectMin  = 50 * time.Millisecond
	DefaultReconnectMax  = 2 * time.Second
	DefaultWaitTimeout   = time.Second
)

// Config configures a Broker. The zero value works: one Redis at
// 127.0.0.1:6379, key prefix "sg", 1000 messages of history per channel.
type Config struct {
	// Addrs are the Redis servers. Several addresses shard channels over
	// independent servers by consistent (jump) hashing of the channel
	// name; with Cluster they are seed nodes of one Redis Cluster. Unused
	// with SentinelMaster. Default [DefaultAddr].
	Addrs []string
	// Cluster talks to a Redis Cluster: keys of one channel share a hash
	// slot ({channel} hash tags) and pub/sub is sharded (SSUBSCRIBE,
	// SPUBLISH; Redis 7 or later).
	Cluster bool
	// SentinelMaster, when set, finds the Redis master through the
	// Sentinels at SentinelAddrs (and follows failovers).
	SentinelMaster string
	SentinelAddrs  []string
	// Username and Password authenticate to Redis (every shard, Cluster
	// node and the Sentinel-found master): an ACL user, or Password alone
	// for the "default" user.
	Username string
	Password string
	// SentinelUsername and SentinelPassword authenticate to the Sentinels,
	// which keep their own users; empty sends none.
	SentinelUsername string
	SentinelPassword string
	// TLS, when set, dials every Redis server (and Sentinel) with it. An
	// empty ServerName is filled from each address's host.
	TLS *tls.Config
	// DB is the database number (not with Cluster).
	DB int
	// Prefix starts every key and pub/sub channel. It must not contain
	// '{' or '}' (they would break the per-channel hash tag). Default
	// DefaultPrefix.
	Prefix string

	// HistorySize is how many publications each channel keeps (exactly:
	// the stream is trimmed with MAXLEN, not ~). 0 means
	// DefaultHistorySize; negative keeps no history (seqs and epochs
	// still work, Since returns only the position).
	HistorySize int
	// HistoryTTL is how long a channel's history is kept after its last
	// publication. Default DefaultHistoryTTL.
	HistoryTTL time.Duration
	// MetaTTL is how long a channel's seq and epoch are kept after its
	// last use. When they expire, the next publication starts a new epoch
	// at seq 1. Default DefaultMetaTTL; never shorter than HistoryTTL.
	MetaTTL time.Duration

	// OutboxSize is how many publications a node holds, in order, while
	// Redis is unreachable; past it Publish fails with
	// brokers.ErrUnavailable. 0 means DefaultOutboxSize; negative means
	// no outbox (Publish fails at once while Redis is down).
	OutboxSize int

	// WaitReplicas, when > 0, makes every publication wait until that
	// many replicas of its master have it (WAIT, pipelined after the
	// publish script) before it is acked: a failover then cannot lose
	// what was acked. A WAIT that times out (WaitTimeout) or counts fewer
	// replicas leaves the outcome unknown: the shard goes down and the
	// publications are kept in the outbox and replayed (exactly once,
	// the per-node counter) until their master has them replicated. So
	// with fewer healthy replicas than WaitReplicas, publishing goes
	// through the outbox until it is full. 0 (the default) acks once the
	// master has it (asynchronous replication: see docs/brokers.md).
	WaitReplicas int
	// WaitTimeout bounds WaitReplicas' WAIT. Default DefaultWaitTimeout;
	// at most half of ReadTimeout.
	WaitTimeout time.Duration

	// DialTimeout, ReadTimeout bound network operations. Defaults
	// DefaultDialTimeout, DefaultReadTimeout; writes use ReadTimeout.
	DialTimeout time.Duration
	ReadTimeout time.Duration
	// ProbeInterval is how often a node publishes a probe to itself on
	// each shard to prove its pub/sub connection still receives (a
	// connection to a demoted master stays open but hears nothing).
	// ProbeTimeout is how long it waits for the probe before it drops the
	// connection and reconnects. Defaults DefaultProbeInterval,
	// DefaultProbeTimeout.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// ReconnectMin and ReconnectMax bound the jittered exponential
	// backoff between reconnection attempts. Defaults DefaultReconnectMin,
	// DefaultReconnectMax.
	ReconnectMin time.Duration
	ReconnectMax time.Duration

	// Logger receives connection state changes; nil discards them.
	Logger *slog.Logger
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if len(c.Addrs) == 0 && c.SentinelMaster == "" {
		c.Addrs = []string{DefaultAddr}
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.HistorySize == 0 {
		c.HistorySize = DefaultHistorySize
	}
	if c.HistoryTTL <= 0 {
		c.HistoryTTL = DefaultHistoryTTL
	}
	if c.MetaTTL <= 0 {
		c.MetaTTL = DefaultMetaTTL
	}
	c.MetaTTL = max(c.MetaTTL, c.HistoryTTL)
	if c.OutboxSize == 0 {
		c.OutboxSize = DefaultOutboxSize
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax <= 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	c.ReconnectMax = max(c.ReconnectMax, c.ReconnectMin)
	if c.WaitTimeout <= 0 {
		c.WaitTimeout = DefaultWaitTimeout
	}
	c.WaitTimeout = max(min(c.WaitTimeout, c.ReadTimeout/2), time.Millisecond)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports a configuration that cannot work, naming the field.
func (c Config) Validate() error {
	errs := redisbase.ValidateConn("redis", c.Prefix, c.DB, c.Addrs)
	if c.SentinelMaster != "" && len(c.SentinelAddrs) == 0 {
		errs = append(errs, errors.New("redis: SentinelMaster is set but SentinelAddrs is empty"))
	}
	if c.SentinelMaster != "" && c.Cluster {
		errs = append(errs, errors.New("redis: SentinelMaster and Cluster are exclusive"))
	}
	if c.WaitReplicas < 0 {
		errs = append(errs, fmt.Errorf("redis: WaitReplicas %d: want 0 (no WAIT) or more", c.WaitReplicas))
	}
	if c.Cluster && c.DB != 0 {
		errs = append(errs, fmt.Errorf("redis: DB %d: Redis Cluster has only database 0", c.DB))
	}
	return errors.Join(errs...)
}
