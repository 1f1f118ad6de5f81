package main

import (
	"net"
	"strings"

	"github.com/syncgate/syncgate/internal/config"
)

// startupAttrs are the fields of the one line that says what the node
// serves where: its listeners, broker, auth and drain window. No secret is
// among them (URLs are masked).
func startupAttrs(cfg config.Config, node string, ln, mln, aln net.Listener) []any {
	scheme := "http"
	if cfg.Server.TLS.CertFile != "" {
		scheme = "https"
	}
	metrics := "off"
	if mln != nil {
		metrics = "http://" + mln.Addr().String() + "/metrics"
		if cfg.Metrics.Token != "" {
			metrics += " (token)"
		}
	}
	api := "off"
	if aln != nil {
		api = "http://" + aln.Addr().String() + "/api/<method> (apikey)"
	}
	control := "off: server API actions reach this node only"
	if cfg.API.ClusterSecret != "" {
		control = "on, signed"
	}
	auth := "off"
	if cfg.Auth.On() {
		auth = "on"
	}
	var at string
	switch cfg.Broker.Type {
	case "nats", "jetstream":
		at = config.MaskURLs(cfg.NATS.URL)
		if at == "" {
			at = "embedded NATS server on " + cfg.NATS.Listen + ", store " + cfg.NATS.StoreDir
		}
	case "redis", "redis-streams":
		at = strings.Join(cfg.Redis.Addrs, ",")
		if cfg.Redis.SentinelMaster != "" {
			at = "sentinel master " + cfg.Redis.SentinelMaster + " via " + strings.Join(cfg.Redis.SentinelAddrs, ",")
		}
	case "memory":
		at = "this process (no other node shares it)"
	}
	attrs := []any{
		"version", strings.TrimPrefix(strings.SplitN(versionText(), "\n", 2)[0], "syncgate "),
		"node", node,
		"listen", scheme + "://" + ln.Addr().String() + " (/ws /sse /pub /healthz /readyz)",
		"metrics", metrics,
		"api", api,
		"control", control,
		"broker", cfg.Broker.Type,
		"broker_at", at,
		"auth", auth,
		"io", cfg.Server.IO,
		"max_connections", cfg.Server.MaxConnections,
		"drain_window", cfg.Server.DrainWindow.String(),
	}
	if cfg.Debug.PprofListen != "" {
		attrs = append(attrs, "pprof", "http://"+cfg.Debug.PprofListen+"/debug/pprof/")
	}
	return attrs
}
