package config

import (
	"fmt"
	"log/slog"

	jsbroker "github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/brokers/memory"
	natsbroker "github.com/syncgate/syncgate/brokers/nats"
	redisbroker "github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/gateway/serverapi"
)

// The file's keys mapped onto the Config of each package that uses them:
// this file is the only place that knows both, so a key means the same
// everywhere. The packages' zero values mean "default" and their negative
// counts "none"; a key whose 0 means "none" or "no cap" is translated here.

// noneIfZero maps a key where 0 means none (or no cap) onto a field where
// 0 means the default and a negative value none.
func noneIfZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// Gateway is the gateway's part of the configuration.
func (c Config) Gateway() gateway.Config {
	return gateway.Config{
		Client: gateway.ClientConfig{
			PingInterval:          c.Client.PingInterval,
			MaxMessageSize:        c.Client.MaxMessageSize,
			MaxSubscriptions:      c.Client.MaxSubscriptions,
			HandshakeTimeout:      c.Client.HandshakeTimeout,
			MaxQueueBytes:         c.Client.MaxQueueBytes,
			MaxConnectionsPerUser: noneIfZero(c.Client.MaxConnectionsPerUser),
			PublishRate:           noneIfZero(c.Client.PublishRate),
			PublishBurst:          c.Client.PublishBurst,
			FrameTimeout:          c.Client.FrameTimeout,
			ControlFrameRate:      noneIfZero(c.Client.ControlFrameRate),
		},
		Server: gateway.ServerConfig{
			IO:                 c.Server.IO,
			Workers:            c.Server.Workers, // 0: chosen by the gateway
			AllowedOrigins:     append([]string(nil), c.Server.AllowedOrigins...),
			MaxConnections:     noneIfZero(c.Server.MaxConnections),
			MaxChannels:        c.Server.MaxChannels,
			MaxHTTPConnections: noneIfZero(c.Server.MaxHTTPConnections),
			HTTPTimeout:        c.Server.HTTPTimeout,
			HTTPIdleTimeout:    c.Server.HTTPIdleTimeout,
			MaxPartialBytes:    c.Server.MaxPartialBytes,
			AcceptRate:         noneIfZero(c.Server.AcceptRate),
			DrainWindow:        c.Server.DrainWindow,
			TLSCertFile:        c.Server.TLS.CertFile,
			TLSKeyFile:         c.Server.TLS.KeyFile,
		},
		History: gateway.HistoryConfig{
			PageBytes:        c.History.PageBytes,
			MaxReads:         c.History.MaxReads,
			ReadWait:         c.History.ReadWait,
			SnapshotMaxBytes: c.History.SnapshotMaxBytes,
		},
		Presence: gateway.PresenceConfig{
			TTL:            c.Presence.TTL,
			NoJoinLeave:    !c.Presence.JoinLeave,
			JoinLeaveLimit: noneIfZero(c.Presence.JoinLeaveLimit),
		},
		Auth: gateway.AuthConfig{
			HMACSecret:       c.Auth.HMACSecret,
			PublicKeyFile:    c.Auth.PublicKeyFile,
			JWKSURL:          c.Auth.JWKSURL,
			Issuer:           c.Auth.Issuer,
			Audience:         c.Auth.Audience,
			ChannelsClaim:    c.Auth.ChannelsClaim,
			PublicNamespaces: append([]string(nil), c.Auth.PublicNamespaces...),
		},
		Metrics: gateway.MetricsConfig{Token: c.Metrics.Token},
		Debug:   gateway.DebugConfig{PprofListen: c.Debug.PprofListen},
		Proxy: gateway.ProxyConfig{
			Connect:         proxyHook(c.Proxy.Connect),
			Refresh:         proxyHook(c.Proxy.Refresh),
			Subscribe:       proxyHook(c.Proxy.Subscribe),
			Publish:         proxyHook(c.Proxy.Publish),
			RefreshInterval: c.Proxy.RefreshInterval,
			MaxConcurrency:  c.Proxy.MaxConcurrency,
			RemoteAddr:      c.Proxy.RemoteAddr,
			MaxQueuedBytes:  c.Proxy.MaxQueuedBytes,
		},
		ClusterSecret: c.API.ClusterSecret,
	}
}

func proxyHook(h ProxyHook) gateway.ProxyHook {
	return gateway.ProxyHook{
		URL:     h.URL,
		Timeout: h.Timeout,
		Headers: append([]string(nil), h.Headers...),
		Cookies: append([]string(nil), h.Cookies...),
	}
}

// ServerAPI is the server API's configuration: a request body holds at
// most one client.max_message_size of data, plus room for a broadcast's
// channels.
func (c Config) ServerAPI() serverapi.Config {
	return serverapi.Config{
		Keys:         c.API.Keys,
		MaxBodyBytes: int64(c.Client.MaxMessageSize) + 512<<10,
	}
}

// Memory is the memory backend's configuration. (history.size 0 keeps the
// backend's default here: the memory backend has no "none".)
func (c Config) Memory() memory.Config {
	return memory.Config{HistorySize: c.History.Size, HistoryTTL: c.History.TTL}
}

// NATSBroker is the nats backend's configuration; log is its logger.
func (c Config) NATSBroker(log *slog.Logger) natsbroker.Config {
	return natsbroker.Config{
		URL:              c.NATS.URL,
		Auth:             c.natsAuth(),
		Embedded:         c.embeddedNATS(log),
		OutboxSize:       noneIfZero(c.NATS.OutboxSize),
		PresenceStorage:  c.natsStorage(),
		PresenceReplicas: c.NATS.Replicas,
		Log:              log,
	}
}

// JetStream is the jetstream backend's configuration; log is its logger.
func (c Config) JetStream(log *slog.Logger) jsbroker.Config {
	return jsbroker.Config{
		URL:      c.NATS.URL,
		Auth:     c.natsAuth(),
		Embedded: c.embeddedNATS(log),
		Storage:  c.natsStorage(),
		Replicas: c.NATS.Replicas,
		// history.size 0: keep no history (the last message still
		// carries the seq).
		HistorySize: noneIfZero(c.History.Size),
		HistoryTTL:  c.History.TTL,
		OutboxSize:  noneIfZero(c.NATS.OutboxSize),
		Log:         log,
	}
}

// RedisBroker is the redis backend's configuration; log is its logger. The
// error is for TLS files that cannot be loaded.
func (c Config) RedisBroker(log *slog.Logger) (redisbroker.Config, error) {
	tlsConf, err := c.Redis.TLS.ClientConfig()
	if err != nil {
		return redisbroker.Config{}, err
	}
	return redisbroker.Config{
		Addrs:            c.Redis.Addrs,
		Cluster:          c.Redis.Cluster,
		SentinelMaster:   c.Redis.SentinelMaster,
		SentinelAddrs:    c.Redis.SentinelAddrs,
		Username:         c.Redis.Username,
		Password:         c.Redis.Password,
		TLS:              tlsConf,
		SentinelUsername: c.Redis.SentinelUsername,
		SentinelPassword: c.Redis.SentinelPassword,
		DB:               c.Redis.DB,
		Prefix:           c.Redis.Prefix,
		// history.size 0: keep no history (seqs and epochs still work).
		HistorySize:  noneIfZero(c.History.Size),
		HistoryTTL:   c.History.TTL,
		OutboxSize:   noneIfZero(c.Redis.OutboxSize),
		WaitReplicas: c.Redis.WaitReplicas,
		Logger:       log,
	}, nil
}

// RedisStream is the redis-streams backend's configuration; log is its
// logger. The error is for a topology it does not support or TLS files
// that cannot be loaded.
func (c Config) RedisStream(log *slog.Logger) (redisstream.Config, error) {
	if c.Redis.Cluster || c.Redis.SentinelMaster != "" {
		return redisstream.Config{}, fmt.Errorf("broker.type redis-streams: redis.cluster and redis.sentinel_master are not supported")
	}
	tlsConf, err := c.Redis.TLS.ClientConfig()
	if err != nil {
		return redisstream.Config{}, err
	}
	return redisstream.Config{
		Addrs:    c.Redis.Addrs,
		Username: c.Redis.Username,
		Password: c.Redis.Password,
		TLS:      tlsConf,
		DB:       c.Redis.DB,
		Prefix:   c.Redis.Prefix,
		// The streams are the transport: history.size 0 keeps the
		// backend's default.
		HistorySize: c.History.Size,
		HistoryTTL:  c.History.TTL,
		Logger:      log,
	}, nil
}

// embeddedNATS configures the in-process NATS server started when
// nats.url is empty.
func (c Config) embeddedNATS(log *slog.Logger) natsbroker.EmbeddedConfig {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return natsbroker.EmbeddedConfig{
		Listen:        c.NATS.Listen,
		StoreDir:      c.NATS.StoreDir,
		ClusterListen: c.NATS.ClusterListen,
		Routes:        c.NATS.Routes,
		Log:           log.With("component", "nats-server"),
		User:          c.NATS.User,
		Password:      c.NATS.Password,
		Token:         c.NATS.Token,
		TLSCertFile:   c.NATS.TLS.CertFile,
		TLSKeyFile:    c.NATS.TLS.KeyFile,
		TLSCAFile:     c.NATS.TLS.CAFile,
	}
}

// natsAuth is the credential and TLS used with nats.url.
func (c Config) natsAuth() natsbroker.ClientAuth {
	n := c.NATS
	return natsbroker.ClientAuth{
		User: n.User, Password: n.Password, Token: n.Token,
		NKeySeedFile: n.NKeySeedFile, CredsFile: n.CredsFile,
		CAFile: n.TLS.CAFile, CertFile: n.TLS.CertFile, KeyFile: n.TLS.KeyFile,
	}
}

func (c Config) natsStorage() jsbroker.StorageType {
	if c.NATS.Storage == "memory" {
		return jsbroker.MemoryStorage
	}
	return jsbroker.FileStorage
}
