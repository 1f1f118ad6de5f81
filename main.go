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

	b, err := newBroker(cfg, log)
	if err != nil {
		return err
	}
	srv, err := gateway.New(cfg.Gateway(), b, log)
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
		if api, err = serverapi.New(cfg.ServerAPI(), srv, log); err != nil {
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

// newBroker builds the backend broker.type names, from its part of cfg.
func newBroker(cfg config.Config, log *slog.Logger) (brokers.Broker, error) {
	switch cfg.Broker.Type {
	case "memory":
		return memory.New(cfg.Memory()), nil
	case "nats":
		return natsbroker.New(cfg.NATSBroker(log)), nil
	case "jetstream":
		return jsbroker.New(cfg.JetStream(log)), nil
	case "redis":
		c, err := cfg.RedisBroker(log)
		if err != nil {
			return nil, err
		}
		return redisbroker.New(c), nil
	case "redis-streams":
		c, err := cfg.RedisStream(log)
		if err != nil {
			return nil, err
		}
		return redisstream.New(c), nil
	}
	return nil, fmt.Errorf("broker.type %q is not built into this binary", cfg.Broker.Type)
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
