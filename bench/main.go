//go:build linux

// Command bench is syncgate's load generator. It builds the gateway once,
// runs it as a separate process on a random loopback port, drives it from
// child load processes (this binary re-executed as "bench loadgen") and
// reports what the gateway process cost: memory, goroutines, CPU, delivery
// and latency.
//
//	go run ./bench conns  [-n 15000] [-channels n/10] [-io epoll|goroutine] [-compare]
//	go run ./bench conns  -gateways 6 -n 100000 [-broker memory|redis]
//	go run ./bench fanout [-subs 10000] [-channels 1] [-rate 5] [-duration 20s]
//	go run ./bench rooms  (fanout preset: -subs 10000 -channels 100 -rate 5)
//	go run ./bench bigroom [-broker redis,jetstream,memory | -compare] [-runs 3]
//	go run ./bench study  [-quick|-full] [-backends memory,redis,...]  (study.go)
//
// A table goes to stdout, progress to stderr, and the raw results to
// bench/results/<scenario>-<timestamp>.json.
//
// Files: main.go parses the command line and runs the scenarios; proc.go
// holds the scenarios' gateway and loadgen processes; loadgen.go is the load process;
// conns.go, fanout.go and bigroom.go are the scenarios; cluster.go starts
// several gateway nodes and their broker; report.go prints the table and
// writes the JSON; mdsection.go rewrites a section of docs/benchmarks.md
// with the table (-docs). The study: study.go (options, backends, broker
// processes), studyrun.go (the study's phases and time budget),
// studyrig.go (its latency runs and throughput steps, on the fanout
// scenario's loadgen processes), studyload.go (its crash run, on the Go
// client), studyprobe.go (the agreement probe);
// natsserver.go is the NATS server of its crash runs; all.go runs every
// scenario in turn. internal/proc starts, stops and measures every child
// process (by PID, SIGTERM then SIGKILL); internal/load holds the payload
// codec; internal/study the study's result types and the pure functions
// that judge them (a step's verdict, the median of repeated runs, the
// agreement check); internal/report the tables, plots, the study's JSON,
// its document and its reading.
//
// bench is a module of its own (bench/go.mod, github.com/syncgate/syncgate
// replaced by the directory above), so that its dependencies (gonum/plot
// and what it pulls in) stay out of the gateway's go.mod; the repository's
// go.work joins the two, so `go run ./bench` works from the root, and
// `make test` names ./bench/... beside ./... (which stops at a module's
// edge).
//
// Everything is bounded: connection counts, rates and durations have upper
// limits, every phase has a timeout, all traffic stays on 127.0.0.0/8, and
// only processes started here are stopped, by PID.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/syncgate/syncgate/bench/internal/proc"
	"github.com/syncgate/syncgate/bench/internal/report"
)

// Limits that keep every run bounded. One gateway process can hold about
// 19,900 connections under the machine's 20,000 open-file cap; several
// gateway processes (-gateways) hold at most maxTotalConns between them.
const (
	maxConns        = 19500 // per gateway process
	maxTotalConns   = 100000
	maxGateways     = 8
	maxRuns         = 5
	maxChannels     = maxConns
	maxDuration     = 10 * time.Minute
	maxTotalRate    = 100000 // published messages per second, all channels
	maxLoadgenProcs = 16
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == loadgenArg {
		os.Exit(loadgenMain(os.Stdin, os.Stdout))
	}
	if len(os.Args) > 1 && os.Args[1] == natsServerArg {
		os.Exit(natsServerMain(os.Args[2:]))
	}
	if rest, ok := isAllArgs(os.Args[1:]); ok {
		os.Exit(allMain(rest, os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "faults" {
		os.Exit(faultsMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "study" {
		os.Exit(studyMain(os.Args[2:]))
	}
	os.Exit(cliMain(os.Args[1:]))
}

func cliMain(args []string) int {
	o, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		fmt.Fprintln(os.Stderr, "usage: go run ./bench conns|fanout|rooms|study [flags]   (-h for flags)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

// options are the parsed command line.
type options struct {
	Scenario string   // conns, fanout, rooms or bigroom
	Args     []string // as given, for the report
	IO       string   // epoll or goroutine
	Compare  bool     // run both io modes (bigroom: every broker)
	Gateways int      // conns: gateway processes; bigroom: nodes per shared broker
	Brokers  []string // broker.type per run; "" = the gateway's default
	Runs     int      // repetitions of each configuration
	Docs     bool     // rewrite the scenario's section of docs/benchmarks.md
	DocsFile string   // the file -docs rewrites ("" = docs/benchmarks.md in the repo)
	// DocsSection overrides the section -docs rewrites ("": see docsSection).
	DocsSection string

	N            int // conns: connections
	Subs         int // fanout: subscribers
	Channels     int
	Rate         float64 // fanout: messages per second per channel
	Duration     time.Duration
	Payload      int // fanout: padding bytes added to each message
	PingInterval time.Duration
	Settle       time.Duration
	Window       time.Duration // conns: idle CPU window
	// Overrun: publishers still behind their schedule this long after its
	// end stop (0: never; the study sets it, no flag does).
	Overrun time.Duration
	// Warmup: before the measured window, the publishers publish at the
	// run's rate this long on the same connections, and every count and
	// latency of it is forgotten (0: none; the study's probe sets it, no
	// flag does): fresh processes are measured warm, as the study's are.
	Warmup time.Duration
	// Backend, when set, starts the run's gateway nodes and broker
	// processes in place of the scenario's own (startNodes: its brokers
	// unpersisted, its gateways on -env) and records them in the session,
	// which stops them: the study's probe runs the fanout scenario on the
	// very backend (persistence, shards, storage, gateway settings) its
	// row measures. No flag sets it.
	Backend func(ctx context.Context, s *session, dir string, p *progress) error

	Procs       int // loadgen processes; 0 = automatic
	PerProc     int // most connections per loadgen process
	Concurrency int // dials in flight per loadgen process
	Env         []string
	Gateway     string // a prebuilt gateway binary; "" = build one
	Out         string // results directory; "" = bench/results in the repo
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func parseArgs(args []string) (options, error) {
	var o options
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return o, errors.New("missing scenario")
	}
	o.Scenario, o.Args = args[0], args
	switch o.Scenario {
	case "conns", "fanout", "rooms", "bigroom":
	default:
		return o, fmt.Errorf("unknown scenario %q (want conns, fanout, rooms or bigroom)", o.Scenario)
	}
	fs := flag.NewFlagSet(o.Scenario, flag.ContinueOnError)
	fs.StringVar(&o.IO, "io", "epoll", "gateway read mode, passed as SYNCGATE_SERVER_IO: epoll or goroutine")
	fs.BoolVar(&o.Compare, "compare", false, "run the scenario with -io epoll, then goroutine, and print both (bigroom: -broker memory,redis,jetstream)")
	fs.IntVar(&o.Gateways, "gateways", 1, "conns: gateway processes, one port each, sharing the connections evenly; bigroom: nodes on a shared broker (memory: 1)")
	var brokers string
	fs.StringVar(&brokers, "broker", "", "broker.type (memory, redis, redis-streams, nats, jetstream); bigroom takes a comma-separated list; empty = gateway default (conns with -gateways > 1 and bigroom: memory)")
	fs.IntVar(&o.Runs, "runs", 1, "run each configuration this many times; the table shows medians")
	fs.BoolVar(&o.Docs, "docs", false, "rewrite the scenario's section <!-- bench:NAME --> of docs/benchmarks.md with the table")
	fs.StringVar(&o.DocsSection, "docs-section", "", "with -docs: the section NAME to rewrite (default: the scenario's; conns-gateways for conns on several gateways)")
	fs.IntVar(&o.N, "n", 15000, "conns: idle connections")
	defSubs, defChannels, defRate := 10000, 1, 5.0
	if o.Scenario == "rooms" {
		defChannels = 100
	}
	fs.IntVar(&o.Subs, "subs", defSubs, "fanout: subscriber connections, spread evenly over the channels")
	fs.IntVar(&o.Channels, "channels", defChannels, "channels (conns: default n/10)")
	fs.Float64Var(&o.Rate, "rate", defRate, "fanout: messages per second published on each channel")
	fs.DurationVar(&o.Duration, "duration", 20*time.Second, "fanout: publishing time")
	fs.IntVar(&o.Payload, "payload", 0, "fanout: extra bytes of padding in each message")
	fs.DurationVar(&o.PingInterval, "ping", 25*time.Second, "client ping interval (SYNCGATE_CLIENT_PING_INTERVAL); each connection pings this often")
	fs.DurationVar(&o.Settle, "settle", 0, "wait after connecting before measuring (default: conns 5s, fanout 2s)")
	fs.DurationVar(&o.Window, "window", 10*time.Second, "conns: idle window over which gateway CPU is measured; RSS is read again at its end")
	fs.IntVar(&o.Procs, "procs", 0, "loadgen processes holding connections (0 = max(2, ceil(conns/per-proc)))")
	fs.IntVar(&o.PerProc, "per-proc", 15000, "most connections per loadgen process (open files are capped at 20,000)")
	fs.IntVar(&o.Concurrency, "dial-concurrency", 32, "connection setups in flight per loadgen process")
	fs.Var((*multiFlag)(&o.Env), "env", "extra gateway environment, SYNCGATE_KEY=value (repeatable)")
	fs.StringVar(&o.Gateway, "gateway", "", "use this gateway binary instead of building one")
	fs.StringVar(&o.Out, "out", "", "directory for the JSON results (default bench/results in the repo)")
	if err := fs.Parse(args[1:]); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.Brokers = splitList(brokers)
	if o.Scenario == "bigroom" {
		if !set["gateways"] {
			o.Gateways = 2
		}
		if o.Compare {
			if set["broker"] {
				return o, errors.New("bigroom: -compare runs every broker; give -broker or -compare, not both")
			}
			o.Brokers = []string{"memory", "redis", "jetstream"}
		}
		if len(o.Brokers) == 0 {
			o.Brokers = []string{"memory"}
		}
	} else {
		if len(o.Brokers) > 1 {
			return o, errors.New("-broker: a list is for bigroom only")
		}
		if len(o.Brokers) == 0 {
			o.Brokers = []string{""}
			if o.Gateways > 1 {
				o.Brokers = []string{"memory"}
			}
		}
	}
	if o.Scenario == "conns" && !set["channels"] {
		o.Channels = max(1, o.N/10)
	}
	if !set["settle"] {
		o.Settle = 2 * time.Second
		if o.Scenario == "conns" {
			o.Settle = 5 * time.Second
		}
	}
	return o, o.validate()
}

func (o *options) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if o.IO != "epoll" && o.IO != "goroutine" {
		bad("-io: want epoll or goroutine, got %q", o.IO)
	}
	if o.Gateways < 1 || o.Gateways > maxGateways {
		bad("-gateways: want 1 to %d, got %d", maxGateways, o.Gateways)
	}
	if o.Gateways > 1 && o.Scenario != "conns" && o.Scenario != "bigroom" {
		bad("-gateways: for conns and bigroom only")
	}
	for _, b := range o.Brokers {
		switch b {
		case "", "memory", "redis", "redis-streams", "nats", "jetstream":
		default:
			bad("-broker: want memory, redis, redis-streams, nats or jetstream, got %q", b)
		}
		if b == "" && o.Gateways > 1 {
			bad("-broker: name the broker when running %d gateways", o.Gateways)
		}
	}
	if o.Runs < 1 || o.Runs > maxRuns {
		bad("-runs: want 1 to %d, got %d", maxRuns, o.Runs)
	}
	if o.Compare && o.Scenario != "bigroom" && o.Runs > 1 {
		bad("-runs with -compare: for bigroom only")
	}
	conns := o.connections()
	nodes := max(1, o.Gateways)
	for _, b := range o.Brokers {
		nodes = min(nodes, o.nodes(b))
	}
	perGW := (conns + nodes - 1) / nodes
	switch {
	case conns < 1 || conns > maxTotalConns:
		bad("connections: want 1 to %d, got %d", maxTotalConns, conns)
	case perGW > maxConns && nodes == 1:
		bad("connections: want 1 to %d per gateway process (one process holds at most ~19,900; use -gateways), got %d", maxConns, conns)
	case perGW > maxConns:
		bad("connections: %d over %d gateways is %d per process; want at most %d (add gateways)", conns, nodes, perGW, maxConns)
	}
	if need := (conns + o.PerProc - 1) / max(1, o.PerProc); need > maxLoadgenProcs-1 {
		bad("connections: %d need %d loadgen processes of -per-proc %d; at most %d", conns, need, o.PerProc, maxLoadgenProcs-1)
	}
	if o.Channels < 1 || o.Channels > min(maxChannels, max(conns, 1)) {
		bad("-channels: want 1 to the number of connections (%d), got %d", conns, o.Channels)
	}
	if o.Scenario != "conns" {
		if o.Rate <= 0 || o.Rate*float64(o.Channels) > maxTotalRate {
			bad("-rate: want > 0 and rate x channels <= %d msg/s, got %g x %d", maxTotalRate, o.Rate, o.Channels)
		}
		if o.Duration < time.Second || o.Duration > maxDuration {
			bad("-duration: want 1s to %s, got %s", maxDuration, o.Duration)
		}
		if o.Payload < 0 || o.Payload > 32<<10 {
			bad("-payload: want 0 to 32768 bytes, got %d", o.Payload)
		}
		if (o.Subs+o.Channels+nodes-1)/nodes > maxConns {
			bad("-subs + publishers: want at most %d connections per gateway, got %d", maxConns, o.Subs+o.Channels)
		}
	}
	if o.PingInterval < time.Second || o.PingInterval > 10*time.Minute {
		bad("-ping: want 1s to 10m, got %s", o.PingInterval)
	}
	if o.Settle < 0 || o.Settle > maxDuration || o.Window < time.Second || o.Window > maxDuration {
		bad("-settle / -window: want up to %s (window at least 1s)", maxDuration)
	}
	if o.PerProc < 1 || o.PerProc > 15000 {
		bad("-per-proc: want 1 to 15000, got %d", o.PerProc)
	}
	if o.Procs < 0 || o.Procs > maxLoadgenProcs {
		bad("-procs: want 0 to %d, got %d", maxLoadgenProcs, o.Procs)
	}
	if o.Concurrency < 1 || o.Concurrency > 512 {
		bad("-dial-concurrency: want 1 to 512, got %d", o.Concurrency)
	}
	for _, e := range o.Env {
		if !strings.HasPrefix(e, "SYNCGATE_") || !strings.Contains(e, "=") {
			bad("-env: want SYNCGATE_KEY=value, got %q", e)
		}
		if strings.HasPrefix(e, "SYNCGATE_BROKER_TYPE=") && (o.Gateways > 1 || o.Scenario == "bigroom") {
			bad("-env SYNCGATE_BROKER_TYPE: use -broker with -gateways or bigroom (it also starts the shared broker)")
		}
	}
	if o.Docs && o.Runs > 1 && o.Scenario != "bigroom" {
		bad("-docs with -runs: for bigroom only (its table shows medians)")
	}
	return errors.Join(errs...)
}

// connections is how many client connections the scenario holds open.
func (o *options) connections() int {
	if o.Scenario == "conns" {
		return o.N
	}
	return o.Subs
}

// nodes is how many gateway processes a run with broker b starts: the
// memory broker does not cross processes, so the big room on it is one node.
func (o *options) nodes(b string) int {
	if o.Scenario == "bigroom" && (b == "memory" || b == "") {
		return 1
	}
	return o.Gateways
}

// splitList splits a comma-separated flag value, dropping empty parts.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// loadgenProcs is how many loadgen processes share the connections.
func (o *options) loadgenProcs() int {
	n := o.connections()
	p := o.Procs
	if p == 0 {
		p = max(2, (n+o.PerProc-1)/o.PerProc)
	}
	if need := (n + o.PerProc - 1) / o.PerProc; p < need {
		p = need
	}
	return max(1, min(p, n, maxLoadgenProcs))
}

// run builds (or takes) the gateway, runs the scenario once per io mode,
// prints the table to out, progress to logw, and writes the JSON results.
func run(ctx context.Context, o options, out, logw io.Writer) (*resultsFile, error) {
	started := time.Now()
	root, err := proc.FindRepoRoot()
	if err != nil {
		return nil, err
	}
	p := newProgress(logw)
	rf := &resultsFile{
		Scenario: o.Scenario,
		Command:  commandLine(o.Args),
		Args:     o.Args,
		Started:  started.UTC(),
		Machine:  proc.ReadMachine(),
		Options:  o.summary(),
	}
	printHeader(out, rf)

	tmp, err := os.MkdirTemp("", "syncgate-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	bin := o.Gateway
	rf.GatewaySource = "prebuilt binary " + filepath.Base(bin)
	if bin == "" {
		rf.GatewaySource = sourceVersion(ctx, root)
		p.printf("building the gateway (go build in %s)", root)
		t := time.Now()
		if bin, err = proc.BuildGateway(ctx, root, tmp); err != nil {
			return nil, err
		}
		p.printf("built %s in %.1fs", rf.GatewaySource, time.Since(t).Seconds())
	}

	modes := []string{o.IO}
	if o.Compare {
		modes = []string{"epoll", "goroutine"}
	}
	if o.Scenario == "bigroom" {
		modes = []string{o.IO}
	}
	var errs []error
	for _, mode := range modes {
		for _, broker := range o.Brokers {
			for n := 1; n <= o.Runs; n++ {
				if ctx.Err() != nil {
					break
				}
				label := runLabel(mode, broker, n, o.Runs)
				p.printf("=== %s, %s ===", o.Scenario, label)
				r := runResult{Scenario: o.Scenario, IO: mode, Broker: broker, Run: n}
				dir, err := os.MkdirTemp(tmp, "run-")
				if err == nil {
					switch o.Scenario {
					case "conns":
						r.Conns, r.Gateways, err = runConns(ctx, o, mode, broker, bin, dir, p)
					default:
						r.Fanout, r.Gateways, err = runFanout(ctx, o, mode, broker, bin, dir, p)
					}
				}
				if len(r.Gateways) > 0 {
					r.Gateway = r.Gateways[0]
					if len(r.Gateways) == 1 {
						r.Gateways = nil
					}
				}
				if err != nil {
					r.Error = err.Error()
					errs = append(errs, fmt.Errorf("%s: %w", label, err))
					p.printf("%s failed: %v", label, err)
				}
				rf.Runs = append(rf.Runs, r)
			}
		}
	}
	rf.Finished = time.Now().UTC()
	printTable(out, rf)
	if o.Docs {
		path := o.DocsFile
		if path == "" {
			path = filepath.Join(root, "docs", "benchmarks.md")
		}
		name := docsSection(o)
		if err := report.RewriteSection(path, name, docsMarkdown(rf)); err != nil {
			errs = append(errs, fmt.Errorf("-docs: %w", err))
		} else {
			fmt.Fprintf(out, "\nrewrote section %q of %s\n", name, path)
		}
	}

	dir := o.Out
	if dir == "" {
		dir = filepath.Join(root, "bench", "results")
	}
	path, werr := writeResults(dir, rf)
	if werr != nil {
		errs = append(errs, werr)
	} else {
		fmt.Fprintf(out, "\nraw results: %s\n", path)
	}
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("interrupted: %w", ctx.Err()))
	}
	return rf, errors.Join(errs...)
}

// summary is the options as they go into the JSON results.
func (o *options) summary() map[string]any {
	m := map[string]any{
		"io": o.IO, "compare": o.Compare, "channels": o.Channels,
		"gateways": o.Gateways, "brokers": o.Brokers, "runs": o.Runs,
		"ping_interval_s": o.PingInterval.Seconds(), "settle_s": o.Settle.Seconds(),
		"loadgen_procs": o.loadgenProcs(), "per_proc": o.PerProc, "dial_concurrency": o.Concurrency,
		"env": o.Env,
	}
	if o.Scenario == "conns" {
		m["n"], m["window_s"] = o.N, o.Window.Seconds()
	} else {
		m["subs"], m["rate"], m["duration_s"], m["payload"] = o.Subs, o.Rate, o.Duration.Seconds(), o.Payload
	}
	return m
}

// progress prints one timestamped line per phase.
type progress struct {
	w     io.Writer
	start time.Time
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now()} }

func (p *progress) printf(format string, a ...any) {
	fmt.Fprintf(p.w, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, a...))
}

// sleepCtx waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
