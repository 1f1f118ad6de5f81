//go:build linux

// capacity_test.go tests the logic behind the multi-gateway conns run and
// the bigroom scenario without starting processes: argument validation,
// source address allocation, the split of connections, medians, and the
// docs section rewriting; and a smoke run of both on a real gateway.
package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/redistest"
)

func TestParseArgsGateways(t *testing.T) {
	good := []struct {
		args     []string
		gateways int
		brokers  string
	}{
		{[]string{"conns", "-n", "2000"}, 1, ""},
		{[]string{"conns", "-gateways", "3", "-n", "55000"}, 3, "memory"},
		{[]string{"conns", "-gateways", "6", "-n", "100000", "-broker", "redis"}, 6, "redis"},
		{[]string{"bigroom"}, 2, "memory"},
		{[]string{"bigroom", "-compare"}, 2, "memory,redis,jetstream"},
		{[]string{"bigroom", "-broker", "redis,jetstream", "-runs", "3"}, 2, "redis,jetstream"},
		{[]string{"bigroom", "-broker", "memory", "-subs", "19000"}, 2, "memory"}, // memory is one node
		{[]string{"fanout", "-subs", "50", "-broker", "memory"}, 1, "memory"},
	}
	for _, g := range good {
		o, err := parseArgs(g.args)
		if err != nil {
			t.Errorf("%q: %v", g.args, err)
			continue
		}
		if o.Gateways != g.gateways || strings.Join(o.Brokers, ",") != g.brokers {
			t.Errorf("%q: gateways %d, brokers %q; want %d, %q", g.args, o.Gateways, o.Brokers, g.gateways, g.brokers)
		}
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"conns", "-n", "55000"}, "use -gateways"},
		{[]string{"conns", "-gateways", "2", "-n", "50000"}, "add gateways"},
		{[]string{"conns", "-gateways", "9", "-n", "1000"}, "-gateways: want 1 to 8"},
		{[]string{"conns", "-gateways", "8", "-n", "120000"}, "want 1 to 100000"},
		{[]string{"conns", "-gateways", "2", "-broker", "kafka"}, "-broker: want"},
		{[]string{"conns", "-gateways", "2", "-env", "SYNCGATE_BROKER_TYPE=redis"}, "use -broker"},
		{[]string{"conns", "-broker", "memory,redis"}, "a list is for bigroom only"},
		{[]string{"fanout", "-gateways", "2"}, "for conns and bigroom only"},
		{[]string{"bigroom", "-compare", "-broker", "redis"}, "not both"},
		{[]string{"bigroom", "-broker", "redis", "-subs", "40000"}, "per gateway"},
		{[]string{"bigroom", "-runs", "9"}, "-runs: want 1 to 5"},
		{[]string{"conns", "-docs", "-runs", "2"}, "for bigroom only"},
		{[]string{"conns", "-gateways", "8", "-n", "100000", "-per-proc", "5000"}, "loadgen processes"},
	}
	for _, b := range bad {
		_, err := parseArgs(b.args)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%q: error %v, want one containing %q", b.args, err, b.want)
		}
	}
}

func TestNodes(t *testing.T) {
	o, err := parseArgs([]string{"bigroom", "-compare"})
	if err != nil {
		t.Fatal(err)
	}
	for b, want := range map[string]int{"memory": 1, "redis": 2, "jetstream": 2} {
		if got := o.nodes(b); got != want {
			t.Errorf("bigroom nodes(%s) = %d, want %d", b, got, want)
		}
	}
	o, _ = parseArgs([]string{"conns", "-gateways", "3", "-n", "30000"})
	if got := o.nodes("memory"); got != 3 {
		t.Errorf("conns nodes(memory) = %d, want 3", got)
	}
}

func TestSourcesForGateways(t *testing.T) {
	seen := map[string]int{}
	const gateways, per = 6, 16667
	for g := range gateways {
		srcs := sourcesFor(g, per)
		if len(srcs)*4000 < per {
			t.Errorf("gateway %d: %d addresses for %d connections; want at most 4,000 each", g, len(srcs), per)
		}
		for _, s := range srcs {
			if !isLoopback(s) || s == "127.0.0.1" {
				t.Errorf("gateway %d: source %s: want 127.0.0.0/8 and not 127.0.0.1", g, s)
			}
			if other, ok := seen[s]; ok {
				t.Errorf("source %s given to gateways %d and %d", s, other, g)
			}
			seen[s] = g
		}
	}
	if got := sources(15000); strings.Join(got, ",") != "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5" {
		t.Errorf("sources(15000) = %v: the single-gateway addresses changed", got)
	}
	if got := sources(10); len(got) != 2 {
		t.Errorf("sources(10) = %v, want 2 addresses", got)
	}
	for i, want := range map[int]string{0: "127.0.0.2", 252: "127.0.0.254", 253: "127.0.1.2", 600: "127.0.2.96"} {
		got := sourceAddr(i)
		if got != want {
			t.Errorf("sourceAddr(%d) = %s, want %s", i, got, want)
		}
		ip := net.ParseIP(got).To4()
		if ip == nil || ip[3] < 2 || ip[3] > 254 {
			t.Errorf("sourceAddr(%d) = %s: last byte out of 2..254", i, got)
		}
	}
}

func TestSplitEven(t *testing.T) {
	for _, c := range []struct{ total, n int }{{55000, 3}, {100000, 6}, {10000, 2}, {7, 3}, {2, 5}} {
		parts := splitEven(c.total, c.n)
		sum, lo, hi := 0, parts[0], parts[0]
		for _, p := range parts {
			sum, lo, hi = sum+p, min(lo, p), max(hi, p)
		}
		if len(parts) != c.n || sum != c.total || hi-lo > 1 {
			t.Errorf("splitEven(%d, %d) = %v", c.total, c.n, parts)
		}
	}
}

func TestMedianFanout(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median odd = %g", got)
	}
	if got := median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("median even = %g", got)
	}
	rs := []*fanoutResult{
		{DeliveriesPerSec: 100, Lost: 1, ToLast: latencyStats{P50: 30}, Nodes: []nodeStats{{Node: "A", CPUMicrosPerDlv: 10}}},
		{DeliveriesPerSec: 300, Lost: 0, ToLast: latencyStats{P50: 10}, Nodes: []nodeStats{{Node: "A", CPUMicrosPerDlv: 30}}},
		{DeliveriesPerSec: 200, Lost: 2, Duplicates: 5, ToLast: latencyStats{P50: 20}, Nodes: []nodeStats{{Node: "A", CPUMicrosPerDlv: 20}}},
	}
	m := medianFanout(rs)
	if m.DeliveriesPerSec != 200 || m.ToLast.P50 != 20 || m.Nodes[0].CPUMicrosPerDlv != 20 {
		t.Errorf("medians: %g deliveries/s, to-last p50 %g, node A %g µs; want 200, 20, 20", m.DeliveriesPerSec, m.ToLast.P50, m.Nodes[0].CPUMicrosPerDlv)
	}
	if m.Lost != 3 || m.Duplicates != 5 {
		t.Errorf("lost %d, dups %d; want the sums 3, 5", m.Lost, m.Duplicates)
	}
	if rs[0].Nodes[0].CPUMicrosPerDlv != 10 {
		t.Error("medianFanout changed its input")
	}
	cols := medianColumns([]runResult{
		{IO: "epoll", Broker: "redis", Run: 1, Fanout: rs[0]},
		{IO: "epoll", Broker: "redis", Run: 2, Fanout: rs[1], Error: "boom"},
		{IO: "epoll", Broker: "jetstream", Run: 1, Fanout: rs[2]},
	})
	if len(cols) != 2 || cols[0].label != "redis" || cols[0].run.Run != 2 || cols[0].run.problems != 1 || cols[1].label != "jetstream" {
		t.Errorf("columns: %+v", cols)
	}
}

func TestDocsSection(t *testing.T) {
	o, _ := parseArgs([]string{"conns", "-gateways", "3", "-n", "3000"})
	if docsSection(o) != "conns-gateways" {
		t.Errorf("section %q", docsSection(o))
	}
	o, _ = parseArgs([]string{"bigroom"})
	if docsSection(o) != "bigroom" {
		t.Errorf("section %q", docsSection(o))
	}
}

// TestSmokeGateways runs conns on two gateway processes and bigroom on
// two nodes sharing a redis-server (skipped without redis-server), with a
// few hundred connections.
func TestSmokeGateways(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	bin := testGateway(ctx, t)
	t.Run("conns", func(t *testing.T) {
		rf := runBench(ctx, t, "conns", "-gateways", "2", "-n", "300", "-settle", "300ms", "-window", "1s", "-gateway", bin, "-out", dir,
			"-env", "SYNCGATE_SERVER_ACCEPT_RATE=0")
		c := rf.Runs[0].Conns
		if c.Dial.OK != 300 || c.HealthConns != 300 || c.Open != 300 || c.Lost != 0 || len(c.PerGateway) != 2 {
			t.Fatalf("subscribed %d, gateways counted %d, open %d, lost %d, %d gateways; want 300, 300, 300, 0, 2",
				c.Dial.OK, c.HealthConns, c.Open, c.Lost, len(c.PerGateway))
		}
		for _, g := range c.PerGateway {
			if g.HealthConns != 150 || g.RSSLaterKiB <= 0 {
				t.Errorf("gateway %s: %d connections, RSS %d KiB; want 150, > 0", g.Node, g.HealthConns, g.RSSLaterKiB)
			}
		}
		if len(rf.Runs[0].Gateways) != 2 || rf.Runs[0].Gateways[1].ConnsAfterClose != 0 {
			t.Errorf("gateway infos %+v; want 2, each at 0 connections after close", rf.Runs[0].Gateways)
		}
	})
	t.Run("bigroom", func(t *testing.T) {
		redistest.Require(t)
		rf := runBench(ctx, t, "bigroom", "-broker", "redis", "-subs", "100", "-duration", "2s", "-settle", "200ms", "-gateway", bin, "-out", dir,
			"-env", "SYNCGATE_SERVER_ACCEPT_RATE=0")
		f := rf.Runs[0].Fanout
		if f.Published != 10 || f.Expected != 1000 || f.Received != 1000 || f.Lost != 0 || f.Duplicates != 0 || len(f.Nodes) != 2 {
			t.Fatalf("published %d, expected %d, received %d, lost %d, dups %d, %d nodes; want 10, 1000, 1000, 0, 0, 2",
				f.Published, f.Expected, f.Received, f.Lost, f.Duplicates, len(f.Nodes))
		}
		for _, n := range f.Nodes {
			if n.Subs != 50 || n.Deliveries != 500 || n.CPUS < 0 {
				t.Errorf("node %s: %d subscribers, %d deliveries; want 50, 500", n.Node, n.Subs, n.Deliveries)
			}
		}
		if f.ToLast.Count != 10 {
			t.Errorf("to-last samples %d, want 10", f.ToLast.Count)
		}
		// Per-node latency (the study's probe judges node B's p99).
		if len(f.NodeLatency) != 2 || f.NodeLatency[0].Count+f.NodeLatency[1].Count != f.Latency.Count || f.NodeLatency[1].Count != 500 {
			t.Errorf("node latency %+v, all %d samples; want 2 nodes of 500", f.NodeLatency, f.Latency.Count)
		}
		if f.PubLagP99Ms < 0 || f.PubLagP99Ms > f.MaxPubLagMs {
			t.Errorf("publisher lag p99 %.2f ms, max %.2f ms", f.PubLagP99Ms, f.MaxPubLagMs)
		}
	})
}
