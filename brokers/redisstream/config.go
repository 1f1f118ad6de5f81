package redisstream

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"github.com/syncgate/syncgate/brokers/internal/redisbase"
)

// Defaults for the zero Config.
const (
	DefaultAddr             = "127.0.0.1:6379"
	DefaultPrefix           = "sgs"
	DefaultHistorySize      = 1000
	DefaultHistoryTTL       = 10 * time.Minute
	DefaultMetaTTL          = 24 * time.Hour
	DefaultBlock            = 2 * time.Second
	DefaultReadCount        = 1000
	DefaultTailers          = 4
	DefaultValidateInterval = 5 * time.Second
	DefaultPruneInterval    = 100 * time.Millisecond
	DefaultDialTimeout      = 2 * time.Second
	DefaultReadTimeout      = 3 * time.Second
	DefaultReconnectMin     = 50 * time.Millisecond
	DefaultReconnectMax     = time.Second
)

// Config configures a Broker. The zero value works: one Redis at
// 127.0.0.1:6379, key prefix "sgs", 1000 messages per channel.
type Config struct {
	// Addrs are the Redis servers. Several addresses shard channels over
	// independent servers by jump consistent hashing of the channel name
	// (the same mapping as the redis backend). Default [DefaultAddr].
	Addrs []string
	// Username and Password authenticate to Redis: an ACL user, or
	// Password alone for the "default" user.
	Username string
	Password string
	// TLS, when set, dials every Redis server with it.
	TLS *tls.Config
	// DB is the database number.
	DB int
	// Prefix starts every key. It must not contain '{' or '}'. Default
	// DefaultPrefix.
	Prefix string

	// HistorySize is how many publications each channel's stream keeps
	// (exactly: XADD MAXLEN, not ~). The stream is also how publications
	// reach the nodes, so it cannot be turned off: <= 0 means
	// DefaultHistorySize.
	HistorySize int
	// HistoryTTL is how long a channel's stream is kept after its last
	// publication. Default DefaultHistoryTTL.
	HistoryTTL time.Duration
	// MetaTTL is how long a channel's seq and epoch are kept after its last
	// use; never shorter than HistoryTTL. Default DefaultMetaTTL.
	MetaTTL time.Duration

	// Block is the BLOCK timeout of the tailing XREAD. Changes of the
	// subscribed set interrupt it (CLIENT UNBLOCK), so it only bounds how
	// long an idle read waits. Default DefaultBlock.
	Block time.Duration
	// ReadCount is the XREAD COUNT per stream. Default DefaultReadCount.
	ReadCount int
	// Tailers is how many tailing loops, each with its own connection and
	// blocking XREAD, a node runs per Redis server; channels are spread
	// over them by a hash of the name, so each XREAD carries a share of
	// the node's channels. Default DefaultTailers.
	Tailers int
	// ValidateInterval is how often the tailer checks the epoch and seq of
	// the channels it serves (it also does on every reconnect), to notice
	// a channel whose data Redis lost; a tailer's blocking read ends by the
	// next check, so a changed epoch is noticed within this interval (plus
	// the check's round trip). Default DefaultValidateInterval.
	ValidateInterval time.Duration
	// PruneInterval is how often a node looks for presence members due to
	// expire on the channels it serves. Default DefaultPruneInterval.
	PruneInterval time.Duration

	// DialTimeout and ReadTimeout bound network operations (ReadTimeout
	// also bounds writes). Defaults DefaultDialTimeout, DefaultReadTimeout.
	DialTimeout time.Duration
	ReadTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the backoff of the tailer after
	// a failed read. Defaults DefaultReconnectMin, DefaultReconnectMax.
	ReconnectMin time.Duration
	ReconnectMax time.Duration

	// Logger receives connection state changes; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if len(c.Addrs) == 0 {
		c.Addrs = []string{DefaultAddr}
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.HistorySize <= 0 {
		c.HistorySize = DefaultHistorySize
	}
	if c.HistoryTTL <= 0 {
		c.HistoryTTL = DefaultHistoryTTL
	}
	if c.MetaTTL <= 0 {
		c.MetaTTL = DefaultMetaTTL
	}
	c.MetaTTL = max(c.MetaTTL, c.HistoryTTL)
	if c.Block <= 0 {
		c.Block = DefaultBlock
	}
	if c.ReadCount <= 0 {
		c.ReadCount = DefaultReadCount
	}
	if c.Tailers <= 0 {
		c.Tailers = DefaultTailers
	}
	if c.ValidateInterval <= 0 {
		c.ValidateInterval = DefaultValidateInterval
	}
	if c.PruneInterval <= 0 {
		c.PruneInterval = DefaultPruneInterval
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax <= 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	c.ReconnectMax = max(c.ReconnectMax, c.ReconnectMin)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports a configuration that cannot work, naming the field.
func (c Config) Validate() error {
	return errors.Join(redisbase.ValidateConn("redis-streams", c.Prefix, c.DB, c.Addrs)...)
}
