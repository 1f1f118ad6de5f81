// Command syncgate runs one syncgate gateway node.
//
//	syncgate [--config config.yaml]
//	syncgate check [--config config.yaml]
//	syncgate health [--ready] [--config config.yaml]
//	syncgate --version
//
// Every config key can be overridden by an environment variable
// SYNCGATE_<KEY> (dots become underscores), e.g. SYNCGATE_LISTEN=:9000.
// cli.go holds the command line; this file runs the node.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/syncgate/syncgate/brokers"
	jsbroker "github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/brokers/memory"
	natsbroker "github.com/syncgate/syncgate/brokers/nats"
	redisbroker "github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/gateway/serverapi"
	"github.com/syncgate/syncgate/internal/config"
)

func main() {
	cmd, err := parseArgs(os.Args[1:], os.Stderr)
	switch {
	case err != nil:
	case cmd.help:
		fmt.Print(usage)
		return
	case cmd.version:
		fmt.Print(versionText())
		return
	case cmd.check:
		err = check(cmd.config, os.Environ(), os.Stdout)
	case cmd.health:
		err = health(cmd.config, cmd.ready)
	default:
		err = run(cmd.config)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "syncgate:", err)
		os.Exit(1)
	}
}

// run runs a node on the config at path ("" for none) until SIGTERM or
// SIGINT, then drains it.
func run(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.Server.GCPercent)
	}

	b, err := newBroker(cfg)
	if err != nil {
		return err
	}
	srv, err := gateway.New(cfg, b, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	// /metrics has a listener of its own, never the public one.
	var mln net.Listener
	if cfg.Metrics.On() {
		if mln, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
			return fmt.Errorf("metrics.listen %s: %w (set another address, or off)", cfg.Metrics.Listen, err)
		}
	}
	// The server API has a listener of its own too, and needs keys.
	var api *serverapi.Server
	var aln net.Listener
	if cfg.API.On() {
		if api, err = serverapi.New(apiConfig(cfg), srv, log); err != nil {
			return err
		}
		if aln, err = net.Listen("tcp", cfg.API.Listen); err != nil {
			return fmt.Errorf("api.listen %s: %w (set another address, or off)", cfg.API.Listen, err)
		}
	}
	log.Info("syncgate serving", startupAttrs(cfg, srv.NodeID(), ln, mln, aln)...)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 3)
	go func() { errc <- srv.Serve(ln) }()
	if mln != nil {
		go func() { errc <- srv.ServeMetrics(mln) }()
	}
	if api != nil {
		go func() { errc <- api.Serve(aln) }()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	// The drain spreads disconnects over server.drain_window; leave room to
	// flush, leave presence and close the broker after it.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.DrainWindow+10*time.Second)
	defer cancel()
	if api != nil {
		_ = api.Shutdown(sctx)
	}
	return srv.Shutdown(sctx)
}

// apiConfig is the server API's config: a request body holds at most one
// client.max_message_size of data, plus room for a broadcast's channels.
func apiConfig(cfg config.Config) serverapi.Config {
	return serverapi.Config{
		Keys:         cfg.API.Keys,
		MaxBodyBytes: int64(cfg.Client.MaxMessageSize) + 512<<10,
	}
}

func newBroker(cfg config.Config) (brokers.Broker, error) {
	switch cfg.Broker.Type {
	case "memory":
		return memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL}), nil
	case "nats":
		return natsbroker.New(natsbroker.Config{
			URL:              cfg.NATS.URL,
			Auth:             natsAuth(cfg.NATS),
			Embedded:         embeddedNATS(cfg),
			OutboxSize:       outboxSize(cfg.NATS.OutboxSize),
			PresenceStorage:  natsStorage(cfg.NATS.Storage),
			PresenceReplicas: cfg.NATS.Replicas,
			Log:              newLogger(cfg.Log),
		}), nil
	case "jetstream":
		size := cfg.History.Size
		if size == 0 {
			size = -1 // history.size 0: keep no history (the last message still carries the seq)
		}
		return jsbroker.New(jsbroker.Config{
			URL:         cfg.NATS.URL,
			Auth:        natsAuth(cfg.NATS),
			Embedded:    embeddedNATS(cfg),
			Storage:     natsStorage(cfg.NATS.Storage),
			Replicas:    cfg.NATS.Replicas,
			HistorySize: size,
			HistoryTTL:  cfg.History.TTL,
			OutboxSize:  outboxSize(cfg.NATS.OutboxSize),
			Log:         newLogger(cfg.Log),
		}), nil
	case "redis":
		tlsConf, err := cfg.Redis.TLS.ClientConfig()
		if err != nil {
			return nil, err
		}
		size := cfg.History.Size
		if size == 0 {
			size = -1 // history.size 0: keep no history (seqs and epochs still work)
		}
		return redisbroker.New(redisbroker.Config{
			Addrs:          cfg.Redis.Addrs,
			Cluster:        cfg.Redis.Cluster,
			SentinelMaster: cfg.Redis.SentinelMaster,
			SentinelAddrs:  cfg.Redis.SentinelAddrs,
			Username:       cfg.Redis.Username,
			Password:       cfg.Redis.Password,
			TLS:            tlsConf,

			SentinelUsername: cfg.Redis.SentinelUsername,
			SentinelPassword: cfg.Redis.SentinelPassword,
			DB:               cfg.Redis.DB,
			Prefix:           cfg.Redis.Prefix,
			HistorySize:      size,
			HistoryTTL:       cfg.History.TTL,
			OutboxSize:       outboxSize(cfg.Redis.OutboxSize),
			Logger:           newLogger(cfg.Log),
		}), nil
	case "redis-streams":
		if cfg.Redis.Cluster || cfg.Redis.SentinelMaster != "" {
			return nil, fmt.Errorf("broker.type redis-streams: redis.cluster and redis.sentinel_master are not supported")
		}
		tlsConf, err := cfg.Redis.TLS.ClientConfig()
		if err != nil {
			return nil, err
		}
		// The streams are the transport: history.size 0 keeps the default.
		return redisstream.New(redisstream.Config{
			Addrs:       cfg.Redis.Addrs,
			Username:    cfg.Redis.Username,
			Password:    cfg.Redis.Password,
			TLS:         tlsConf,
			DB:          cfg.Redis.DB,
			Prefix:      cfg.Redis.Prefix,
			HistorySize: cfg.History.Size,
			HistoryTTL:  cfg.History.TTL,
			Logger:      newLogger(cfg.Log),
		}), nil
	}
	return nil, fmt.Errorf("broker.type %q is not built into this binary", cfg.Broker.Type)
}

// embeddedNATS configures the in-process NATS server started when
// nats.url is empty.
func embeddedNATS(cfg config.Config) natsbroker.EmbeddedConfig {
	return natsbroker.EmbeddedConfig{
		Listen:        cfg.NATS.Listen,
		StoreDir:      cfg.NATS.StoreDir,
		ClusterListen: cfg.NATS.ClusterListen,
		Routes:        cfg.NATS.Routes,
		Log:           newLogger(cfg.Log).With("component", "nats-server"),
		User:          cfg.NATS.User,
		Password:      cfg.NATS.Password,
		Token:         cfg.NATS.Token,
		TLSCertFile:   cfg.NATS.TLS.CertFile,
		TLSKeyFile:    cfg.NATS.TLS.KeyFile,
		TLSCAFile:     cfg.NATS.TLS.CAFile,
	}
}

// natsAuth is the credential and TLS used with nats.url.
func natsAuth(c config.NATS) natsbroker.ClientAuth {
	return natsbroker.ClientAuth{
		User: c.User, Password: c.Password, Token: c.Token,
		NKeySeedFile: c.NKeySeedFile, CredsFile: c.CredsFile,
		CAFile: c.TLS.CAFile, CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile,
	}
}

// outboxSize maps nats.outbox_size (0: no outbox) onto the brokers' field
// (0: default, negative: none).
func outboxSize(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

func natsStorage(s string) jsbroker.StorageType {
	if s == "memory" {
		return jsbroker.MemoryStorage
	}
	return jsbroker.FileStorage
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
