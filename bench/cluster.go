//go:build linux

// cluster.go starts the gateway processes of one run: one node on the
// gateway's default broker (the single-process scenarios), or several nodes
// on one broker type. Nodes on redis or redis-streams share a redis-server
// started here; nodes on nats or jetstream share the NATS server embedded in
// node A, which the others connect to; nodes on memory share nothing (each
// is its own broker), which is what the idle-connection scenario needs.
// Each node gets its own loopback port and working directory: the gateway
// does not set SO_REUSEPORT, so several processes cannot share one port.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/syncgate/syncgate/bench/internal/proc"
)

// startNodes starts n gateway nodes on broker (see the file comment) with
// env, and records them (and the broker process) in s.
func (s *session) startNodes(ctx context.Context, bin, dir string, n int, broker string, env []string, p *progress) error {
	nodeEnv, err := s.brokerEnv(ctx, dir, n, broker, p)
	if err != nil {
		return err
	}
	for i := range n {
		nd := filepath.Join(dir, fmt.Sprintf("node%d", i))
		if err := os.MkdirAll(nd, 0o755); err != nil {
			return err
		}
		e := append(append([]string(nil), nodeEnv[i]...), env...)
		g, err := startGateway(ctx, bin, nd, e)
		if err != nil {
			return fmt.Errorf("gateway %s: %w", nodeName(i), err)
		}
		s.gws = append(s.gws, g)
		if i == 0 {
			s.gw = g
		}
		p.printf("gateway %s: pid %d on %s (broker %s)", nodeName(i), g.pid, g.addr, brokerLabel(broker))
	}
	return nil
}

// startIdle starts n nodes (startNodes), gives them a second to settle
// and returns their snapshots before any client.
func (s *session) startIdle(ctx context.Context, bin, dir string, n int, broker string, env []string, p *progress) ([]snapshot, error) {
	if err := s.startNodes(ctx, bin, dir, n, broker, env, p); err != nil {
		return nil, err
	}
	return s.settleIdle(ctx)
}

// settleIdle gives the session's started nodes a second to settle and
// returns their snapshots before any client.
func (s *session) settleIdle(ctx context.Context) ([]snapshot, error) {
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	base, err := s.snapshotAll()
	if err != nil {
		return nil, err
	}
	return base, nil
}

// brokerEnv starts the shared broker process, if any, and returns each
// node's broker settings. The broker settings come before -env, so -env
// can override them.
func (s *session) brokerEnv(ctx context.Context, dir string, n int, broker string, p *progress) ([][]string, error) {
	envs := make([][]string, n)
	if broker == "" {
		if n > 1 {
			return nil, errors.New("several nodes need a named broker")
		}
		return envs, nil
	}
	for i := range envs {
		envs[i] = []string{"SYNCGATE_BROKER_TYPE=" + broker}
	}
	switch broker {
	case "redis", "redis-streams":
		port, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		rd := filepath.Join(dir, "redis")
		if err := os.MkdirAll(rd, 0o755); err != nil {
			return nil, err
		}
		// No persistence: the bench measures fan-out, not the disk.
		b := newRedisProc(rd, port, []string{"--save", "", "--appendonly", "no"})
		p.printf("starting redis-server on %s", b.addr)
		s.brokers = append(s.brokers, b) // stopped by s.close, even half-started
		if err := b.start(ctx); err != nil {
			return nil, err
		}
		p.printf("redis-server ready, pid %d", b.pid)
		for i := range envs {
			envs[i] = append(envs[i], "SYNCGATE_REDIS_ADDRS="+b.addr)
		}
		return envs, nil
	case "nats", "jetstream":
		port, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		envs[0] = append(envs[0], "SYNCGATE_NATS_LISTEN="+addr, "SYNCGATE_NATS_STORE_DIR="+filepath.Join(dir, "node0-nats"))
		for i := 1; i < n; i++ {
			envs[i] = append(envs[i], "SYNCGATE_NATS_URL=nats://"+addr)
		}
		return envs, nil
	}
	return envs, nil
}

// nodeName is A, B, C...
func nodeName(i int) string { return string(rune('A' + i)) }

func brokerLabel(b string) string {
	if b == "" {
		return "default"
	}
	return b
}

// aliveAll returns the first gateway exit.
func (s *session) aliveAll() error {
	for _, g := range s.gws {
		if err := g.alive(); err != nil {
			return err
		}
	}
	return nil
}

// snapshotAll takes a snapshot of every gateway.
func (s *session) snapshotAll() ([]snapshot, error) {
	out := make([]snapshot, len(s.gws))
	errs := make([]error, len(s.gws))
	var wg sync.WaitGroup
	for i, g := range s.gws {
		wg.Go(func() { out[i], errs[i] = g.snapshot() })
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// sourcesFor are the loopback source addresses of gateway g's connections:
// each gateway gets its own block of addresses after the blocks of the
// gateways before it, about 4,000 connections per address, so that no
// address runs short of ephemeral ports. (A socket bound to an address
// takes a port on that address whatever it connects to, so connections
// to different gateway ports still share one address's port range.)
func sourcesFor(g, perGateway int) []string {
	k := sourcesPer(perGateway)
	out := make([]string, k)
	for i := range out {
		out[i] = sourceAddr(g*k + i)
	}
	return out
}

// sourcesPer is how many source addresses conns connections use.
func sourcesPer(conns int) int { return min(max(2, (conns+3999)/4000), 200) }

// sourceAddr is the i-th source address: 127.0.0.2, 127.0.0.3, ...,
// 127.0.0.254, 127.0.1.2, ... (never 127.0.0.1, where the gateways listen,
// and no .0, .1 or .255 last byte).
func sourceAddr(i int) string {
	return fmt.Sprintf("127.0.%d.%d", i/253, i%253+2)
}
