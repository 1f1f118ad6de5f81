//go:build linux

// faults.go is the "faults" scenario: a fault campaign in the spirit of
// Jepsen, bounded in time. For each topology (a Redis Cluster of 3 masters
// and 3 replicas with AOF, a 3-server NATS cluster with JetStream R3 file
// storage) it starts the servers behind loopback proxies, two gateway
// nodes on them, publishers and subscribers on both nodes, and a nemesis
// that injects one fault after another for -duration: kill -9 a master or
// the stream leader (down for -fault-for, then restarted in place),
// restart one in place at once, force a failover (CLUSTER FAILOVER, or a
// JetStream leader stepdown), migrate the hot channel's slot (Redis),
// pause one with SIGSTOP for -fault-for, and partition one away at the
// proxies for -fault-for; -quiet passes between faults. Then the checker
// (package bench/internal/faults) accounts for every acked publication at
// every subscriber and reports, per fault kind, what was lost, duplicated
// or reordered and how long delivery took to resume.
//
//	go run ./bench faults [-topologies redis-cluster,jetstream-r3] [-duration 3m] [-fault-for 4s] [-quiet 6s]
//	                      [-kinds kill,restart,...] [-rounds n] [-redis-fsync always|everysec] [-redis-wait-replicas 1] [-history dir] [-docs]
//
// It prints one table per topology, writes the raw results to
// bench/results/faults-<timestamp>.json and, with -docs, the section
// <!-- bench:faults --> of docs/brokers.md. Everything stays on
// 127.0.0.0/8, every phase has a deadline, and only the processes started
// here are signalled, by PID.
//
// Files: faults.go (options, the campaign), faults_load.go (publishers and
// subscribers), faults_redis.go and faults_nats.go (the clusters and their
// faults), faults_proc.go (their processes), faults_report.go (tables,
// JSON, docs).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/syncgate/syncgate/bench/internal/faults"
	"github.com/syncgate/syncgate/bench/internal/proc"
	"github.com/syncgate/syncgate/bench/internal/report"
)

// faultsOptions are the faults scenario's command line.
type faultsOptions struct {
	Args        []string
	Topologies  []string
	Kinds       []string // subset of fault kinds; empty = every kind the topology has
	Duration    time.Duration
	Rounds      int // stop after this many rounds of every kind (0: -duration alone)
	FaultFor    time.Duration
	Quiet       time.Duration
	Warmup      time.Duration
	Drain       time.Duration
	Channels    int
	SubsPerNode int
	Rate        float64 // per channel
	Fsync       string  // Redis appendfsync
	RedisWait   int     // the gateways' redis.wait_replicas
	Gateway     string
	Out         string
	Docs        bool
	DocsFile    string // "" = docs/brokers.md in the repo
	// History, if set, is a directory where each topology's whole
	// history (every publication, every event at every subscriber, the
	// faults) is written as JSON, the evidence behind an anomaly.
	History string
}

var faultTopologies = []string{"redis-cluster", "jetstream-r3"}

// faultKinds are every kind the nemesis knows (migrate: Redis only).
var faultKinds = []string{"kill", "restart", "failover", "migrate", "pause", "partition"}

const maxFaultsDuration = 30 * time.Minute

// maxFaultsDeliveries bounds the deliveries a run records (about 40 bytes
// each).
const maxFaultsDeliveries = 20_000_000

func parseFaultsArgs(args []string) (faultsOptions, error) {
	o := faultsOptions{Args: append([]string{"faults"}, args...)}
	fs := flag.NewFlagSet("faults", flag.ContinueOnError)
	topos := fs.String("topologies", strings.Join(faultTopologies, ","), "comma-separated: "+strings.Join(faultTopologies, ", "))
	kinds := fs.String("kinds", "", "comma-separated subset of the fault kinds "+strings.Join(faultKinds, ", ")+" (default: all a topology has)")
	fs.DurationVar(&o.Duration, "duration", 3*time.Minute, "campaign time per topology: faults are injected in turn until it has passed")
	fs.IntVar(&o.Rounds, "rounds", 0, "stop after this many rounds of every fault kind, or at -duration if sooner (0: -duration alone)")
	fs.DurationVar(&o.FaultFor, "fault-for", 4*time.Second, "how long a kill, pause or partition lasts (a migration holds the slot in transit this long)")
	fs.DurationVar(&o.Quiet, "quiet", 6*time.Second, "time between the end of one fault and the start of the next")
	fs.DurationVar(&o.Warmup, "warmup", 3*time.Second, "publishing before the first fault")
	fs.DurationVar(&o.Drain, "drain", 20*time.Second, "longest wait, after publishing stops, for the acked messages to arrive")
	fs.IntVar(&o.Channels, "channels", 8, "channels, one publisher each (on node A and B in turn)")
	fs.IntVar(&o.SubsPerNode, "subs", 2, "subscribers per channel on each of the two gateway nodes")
	fs.Float64Var(&o.Rate, "rate", 20, "messages per second published on each channel")
	fs.StringVar(&o.Fsync, "redis-fsync", "always", "Redis appendfsync: always or everysec")
	fs.IntVar(&o.RedisWait, "redis-wait-replicas", 1, "the gateways' redis.wait_replicas (0: not set, for a gateway without the key)")
	fs.StringVar(&o.Gateway, "gateway", "", "use this gateway binary instead of building one")
	fs.StringVar(&o.Out, "out", "", "directory for the JSON results (default bench/results in the repo)")
	fs.StringVar(&o.History, "history", "", "write each topology's whole history as JSON into this directory (the evidence behind an anomaly)")
	fs.BoolVar(&o.Docs, "docs", false, "rewrite the section <!-- bench:faults --> of docs/brokers.md with the tables")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, t := range splitList(*topos) {
		if !slices.Contains(faultTopologies, t) {
			bad("-topologies: want %s, got %q", strings.Join(faultTopologies, " or "), t)
		}
		o.Topologies = append(o.Topologies, t)
	}
	if len(o.Topologies) == 0 {
		bad("-topologies: name at least one")
	}
	for _, k := range splitList(*kinds) {
		if !slices.Contains(faultKinds, k) {
			bad("-kinds: want some of %s, got %q", strings.Join(faultKinds, ", "), k)
		}
		o.Kinds = append(o.Kinds, k)
	}
	if o.Duration < 5*time.Second || o.Duration > maxFaultsDuration {
		bad("-duration: want 5s to %s, got %s", maxFaultsDuration, o.Duration)
	}
	if o.Rounds < 0 || o.Rounds > 1000 {
		bad("-rounds: want 0 to 1000, got %d", o.Rounds)
	}
	if o.FaultFor < 100*time.Millisecond || o.FaultFor > time.Minute {
		bad("-fault-for: want 100ms to 1m, got %s", o.FaultFor)
	}
	if o.Quiet < 0 || o.Quiet > 5*time.Minute || o.Warmup < 0 || o.Warmup > time.Minute {
		bad("-quiet: want 0 to 5m, -warmup 0 to 1m")
	}
	if o.Drain < time.Second || o.Drain > 5*time.Minute {
		bad("-drain: want 1s to 5m, got %s", o.Drain)
	}
	if o.Channels < 1 || o.Channels > 100 || o.SubsPerNode < 1 || o.SubsPerNode > 10 {
		bad("-channels: want 1 to 100, -subs 1 to 10")
	}
	if o.Rate <= 0 || o.Rate > 500 {
		bad("-rate: want > 0 and at most 500 msg/s per channel, got %g", o.Rate)
	}
	// The history holds every delivery in memory: bound it.
	if d := o.Rate * float64(o.Channels) * o.Duration.Seconds() * float64(2*o.SubsPerNode); d > maxFaultsDeliveries {
		bad("-rate x -channels x -duration x 2 -subs: at most %d deliveries recorded, got %.0f", maxFaultsDeliveries, d)
	}
	if o.Fsync != "always" && o.Fsync != "everysec" {
		bad("-redis-fsync: want always or everysec, got %q", o.Fsync)
	}
	if o.RedisWait < 0 || o.RedisWait > 1 {
		bad("-redis-wait-replicas: want 0 or 1 (one replica per master), got %d", o.RedisWait)
	}
	return o, errors.Join(errs...)
}

// faultsMain runs the faults scenario from the command line.
func faultsMain(args []string) int {
	o, err := parseFaultsArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench faults:", err)
		return 2
	}
	ctx, stop := signalContext()
	defer stop()
	if _, err := runFaults(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench faults:", err)
		return 1
	}
	return 0
}

// topology is one cluster under test and its nemesis.
type topology interface {
	name() string
	describe() string
	env() []string // the gateways' broker settings
	kinds() []string
	procs() []*serverProc
	// inject runs one fault of kind, lasting about d, and heals it.
	inject(ctx context.Context, kind string, d time.Duration) (faults.Fault, error)
	close()
}

// faultsResults are the raw results of a run.
type faultsResults struct {
	Scenario      string         `json:"scenario"`
	Command       string         `json:"command"`
	Started       time.Time      `json:"started"`
	Finished      time.Time      `json:"finished"`
	Machine       proc.Machine   `json:"machine"`
	GatewaySource string         `json:"gateway_source"`
	Options       map[string]any `json:"options"`
	Topologies    []topoResult   `json:"topologies"`
}

// topoResult is one topology's campaign.
type topoResult struct {
	Name      string        `json:"name"`
	Describe  string        `json:"describe"`
	Faults    []faultRecord `json:"faults"`
	Published int           `json:"published"`
	Acked     int           `json:"acked"`
	// Drained: every acked message had reached every subscriber (by
	// count) when the drain ended.
	Drained    bool          `json:"drained"`
	Reconnects int64         `json:"client_reconnects"`
	Report     faults.Report `json:"report"`
	Error      string        `json:"error,omitempty"`
	// Logs: the tails of the gateways' stderr (warnings and errors).
	Logs []string `json:"gateway_logs,omitempty"`
}

// faultRecord is one injected fault, times in seconds from the start of
// publishing.
type faultRecord struct {
	Kind   string  `json:"kind"`
	Target string  `json:"target"`
	StartS float64 `json:"start_s"`
	EndS   float64 `json:"end_s"`
	Error  string  `json:"error,omitempty"`
}

// runFaults builds what it needs, runs the campaign on each topology in
// turn, prints the tables and writes the results (and the docs with -docs).
func runFaults(ctx context.Context, o faultsOptions, out, logw io.Writer) (*faultsResults, error) {
	root, err := proc.FindRepoRoot()
	if err != nil {
		return nil, err
	}
	p := newProgress(logw)
	rs := &faultsResults{Scenario: "faults", Command: commandLine(o.Args), Started: time.Now().UTC(), Machine: proc.ReadMachine(), Options: o.summary()}
	tmp, err := os.MkdirTemp("", "syncgate-faults-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := o.Gateway
	rs.GatewaySource = "prebuilt binary " + filepath.Base(bin)
	if bin == "" {
		rs.GatewaySource = sourceVersion(ctx, root)
		p.printf("building the gateway")
		if bin, err = proc.BuildGateway(ctx, root, tmp); err != nil {
			return nil, err
		}
	}
	var natsBin string
	if slices.Contains(o.Topologies, "jetstream-r3") {
		p.printf("building natsnode")
		if natsBin, err = buildNATSNode(ctx, root, tmp); err != nil {
			return nil, err
		}
	}
	var errs []error
	for i, name := range o.Topologies {
		if ctx.Err() != nil {
			break
		}
		dir := filepath.Join(tmp, fmt.Sprintf("%d-%s", i, name))
		r, err := runCampaign(ctx, o, name, bin, natsBin, dir, p)
		if err != nil {
			r.Error = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			p.printf("%s failed: %v", name, err)
		}
		rs.Topologies = append(rs.Topologies, r)
	}
	rs.Finished = time.Now().UTC()
	printFaults(out, rs)
	if o.Docs {
		path := o.DocsFile
		if path == "" {
			path = filepath.Join(root, "docs", "brokers.md")
		}
		if err := report.RewriteSection(path, "faults", faultsMarkdown(rs)); err != nil {
			errs = append(errs, fmt.Errorf("-docs: %w", err))
		} else {
			fmt.Fprintf(out, "\nrewrote section \"faults\" of %s\n", path)
		}
	}
	dir := o.Out
	if dir == "" {
		dir = filepath.Join(root, "bench", "results")
	}
	if path, err := writeFaultsJSON(dir, rs); err != nil {
		errs = append(errs, err)
	} else {
		fmt.Fprintf(out, "\nraw results: %s\n", path)
	}
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("interrupted: %w", ctx.Err()))
	}
	return rs, errors.Join(errs...)
}

func (o faultsOptions) summary() map[string]any {
	return map[string]any{
		"topologies": o.Topologies, "kinds": o.Kinds, "duration_s": o.Duration.Seconds(), "rounds": o.Rounds, "fault_for_s": o.FaultFor.Seconds(),
		"quiet_s": o.Quiet.Seconds(), "warmup_s": o.Warmup.Seconds(), "drain_s": o.Drain.Seconds(),
		"channels": o.Channels, "subs_per_node": o.SubsPerNode, "rate_per_channel": o.Rate, "redis_fsync": o.Fsync,
		"redis_wait_replicas": o.RedisWait,
	}
}

// startTopology starts the named cluster in dir.
func startTopology(ctx context.Context, o faultsOptions, name, natsBin, dir, hot string, p *progress) (topology, error) {
	switch name {
	case "redis-cluster":
		return startRedisCluster(ctx, dir, hot, o.Fsync, o.RedisWait, p)
	case "jetstream-r3":
		return startNATSCluster(ctx, natsBin, dir, p)
	}
	return nil, fmt.Errorf("unknown topology %q", name)
}

// runCampaign runs the campaign on one topology: the cluster, two gateway
// nodes, the load, the nemesis for o.Duration, the drain and the check.
func runCampaign(ctx context.Context, o faultsOptions, name, bin, natsBin, dir string, p *progress) (r topoResult, err error) {
	r.Name = name
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	prefix := "faults-"
	topo, err := startTopology(ctx, o, name, natsBin, filepath.Join(dir, "servers"), prefix+"0", p)
	if err != nil {
		return r, err
	}
	defer topo.close()
	r.Describe = topo.describe()
	env := append(append(studyEnv(), "SYNCGATE_LOG_LEVEL=warn"), topo.env()...)
	var gws []*gatewayProc
	defer func() {
		for _, g := range gws {
			g.stop(5 * time.Second)
			if s := strings.TrimSpace(g.stderr.String()); s != "" {
				r.Logs = append(r.Logs, report.Clip(s, 4000))
			}
		}
	}()
	var urls []string
	for i := range 2 {
		nd := filepath.Join(dir, fmt.Sprintf("node%d", i))
		if err := os.MkdirAll(nd, 0o755); err != nil {
			return r, err
		}
		g, err := startGateway(ctx, bin, nd, env)
		if err != nil {
			return r, fmt.Errorf("gateway %s: %w", nodeName(i), err)
		}
		gws = append(gws, g)
		urls = append(urls, "ws://"+g.addr+"/ws")
		p.printf("%s: gateway %s on %s, pid %d", name, nodeName(i), g.addr, g.pid)
	}
	l := &campaignLoad{urls: urls, prefix: prefix, channels: o.Channels, subsPerNode: o.SubsPerNode, rate: o.Rate, timeout: 10 * time.Second}
	defer l.close()
	if err := l.subscribe(ctx); err != nil {
		return r, err
	}
	if err := l.publish(ctx); err != nil {
		return r, err
	}
	start := time.Now()
	p.printf("%s: %d channels, %d subscribers, publishing %g msg/s per channel", name, o.Channels, len(l.subs), o.Rate)
	_ = sleepCtx(ctx, o.Warmup)
	var fs []faults.Fault
	kinds := topo.kinds()
	if len(o.Kinds) > 0 {
		kinds = slices.DeleteFunc(slices.Clone(kinds), func(k string) bool { return !slices.Contains(o.Kinds, k) })
	}
	if len(kinds) == 0 {
		return r, fmt.Errorf("none of -kinds applies to %s", name)
	}
	deadline := time.Now().Add(o.Duration)
	for i := 0; ctx.Err() == nil && time.Now().Before(deadline) && (o.Rounds == 0 || i < o.Rounds*len(kinds)); i++ {
		kind := kinds[i%len(kinds)]
		f, ierr := topo.inject(ctx, kind, o.FaultFor)
		rec := faultRecord{Kind: kind, Target: f.Target, StartS: f.Start.Sub(start).Seconds(), EndS: f.End.Sub(start).Seconds()}
		if ierr != nil {
			rec.Error = ierr.Error()
			p.printf("%s: fault %s on %s: %v", name, kind, f.Target, ierr)
		}
		if !f.Start.IsZero() {
			fs = append(fs, f)
		}
		r.Faults = append(r.Faults, rec)
		p.printf("%s: %s %s, %.1fs to %.1fs; acked %d, received %d", name, kind, f.Target, rec.StartS, rec.EndS, l.acked.Load(), l.distinct.Load())
		_ = sleepCtx(ctx, o.Quiet)
	}
	l.stopPublishing()
	p.printf("%s: publishing stopped; draining (at most %s)", name, o.Drain)
	r.Drained = l.drain(ctx, o.Drain)
	h := l.history(fs)
	for _, pb := range h.Pubs {
		r.Published++
		if pb.OK {
			r.Acked++
		}
	}
	r.Reconnects = l.reconnects.Load()
	if o.History != "" {
		path, err := writeFaultsHistory(o.History, name, h)
		if err != nil {
			return r, err
		}
		p.printf("%s: history in %s", name, path)
	}
	r.Report = faults.Check(h)
	t := r.Report.Total
	p.printf("%s: %d faults, %d acked, %d lost (%d messages), %d covered by a reset, %d duplicated, %d reordered",
		name, t.Injected, t.Acked, t.Lost, t.LostMsgs, t.Covered, t.Duplicated, t.Reordered)
	for _, s := range topo.procs() {
		if s.pid() == 0 {
			p.printf("%s: %s is not running at the end:\n%s", name, s.name, proc.Indent(report.Clip(s.log(), 2000)))
		}
	}
	return r, ctx.Err()
}

// serverFault injects the faults every topology has on server s (index i
// behind net), each held for d: kill (kill -9, down for d, restarted in
// place), restart (kill -9 and restarted at once), pause (SIGSTOP, then
// SIGCONT) and partition (its proxy holds every byte). It reports false,
// doing nothing, for a kind that is the topology's own.
func serverFault(ctx context.Context, kind string, s *serverProc, net *faults.Net, i int, d time.Duration) (bool, error) {
	switch kind {
	case "kill":
		s.kill()
		_ = sleepCtx(ctx, d)
		return true, s.start(context.WithoutCancel(ctx))
	case "restart":
		s.kill()
		return true, s.start(context.WithoutCancel(ctx))
	case "pause":
		if err := s.pause(); err != nil {
			return true, err
		}
		_ = sleepCtx(ctx, d)
		return true, s.resume()
	case "partition":
		net.Isolate(i)
		_ = sleepCtx(ctx, d)
		net.Heal(i)
		return true, nil
	}
	return false, nil
}
