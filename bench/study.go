//go:build linux

// study.go is the "study" scenario: latency versus durability across every
// backend. For each backend it starts what the backend needs (redis-server
// processes, a standalone NATS server, or the NATS server embedded in
// gateway node A), two gateway nodes (one for memory), and runs
//
//   - latency: open-loop publishing on node A at fixed rates, measured at
//     subscribers on both nodes from the scheduled send time (corrected for
//     coordinated omission), with loss, duplicates and reordering counted
//     by message id;
//   - crash: constant-rate publishing while the broker process is killed
//     with SIGKILL and restarted on the same port and data directory;
//     every publish is acked or refused, every acked message is checked at
//     every subscriber.
//
// It prints one table per scenario, writes the raw results to
// bench/results/study-<timestamp>.json and, with -docs (the default),
// docs/benchmarks-study.md and the plots in docs/plots/.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/syncgate/syncgate/bench/internal/proc"
	"github.com/syncgate/syncgate/bench/internal/study"
	"github.com/syncgate/syncgate/internal/redistest"
)

// studyOptions are the study's command line.
type studyOptions struct {
	Args     []string
	Full     bool
	Backends []string // subset to run; empty = all
	Gateway  string
	Out      string
	Docs     bool
	NoProbe  bool     // skip the agreement probe
	Probe    []string // the rows the probe runs on (default memory, redis)
	// The probe's subscribers per channel, and its runs (fresh processes
	// each; the agreement takes their median).
	ProbeSubs, ProbeRuns int
	From                 string // a results file to regenerate the docs from

	Rates          []float64 // latency: total msg/s
	Channels       int       // latency
	SubsPerChannel int       // latency
	LatencyFor     time.Duration
	CrashRate      float64
	CrashChannels  int
	CrashSubs      int // per channel
	CrashFor       time.Duration
	CrashAt        time.Duration
	CrashPause     time.Duration
	Drain          time.Duration

	Reps int // latency runs per rate; the tables show medians
	// Throughput search: the ladder of offered rates (total msg/s) that
	// study.Search brackets the knee on, coarse (every TputStride-th
	// step) then fine; each new step runs TputFor. Only the Search
	// backends search (nil: none); the probe searches the same ladder on
	// its rows when they do, from the study's knee (Search.From).
	TputSteps  []float64
	TputStride int
	TputFor    time.Duration
	Search     []string
	// Confirm: a step that missed narrowly (study.NarrowMiss: one stall)
	// is run again, on both sides, and judged by the second run.
	Confirm bool
	// WarmFor: fresh processes (every probe run; the study's at their
	// start) carry the next run's rate this long before it is measured.
	WarmFor time.Duration
	// Budget is the soft time limit of the whole study: optional steps
	// are skipped, and backends that no longer fit are skipped, to stay
	// within it. Limit is the hard one (the run is cancelled).
	Budget, Limit time.Duration
}

var allBackends = []string{"memory", "redis", "redis-sharded", "redis-cluster", "nats", "jetstream-file", "jetstream-memory",
	"redis-streams-aof-off", "redis-streams", "redis-streams-aof-always"}

func parseStudyArgs(args []string) (studyOptions, error) {
	o := studyOptions{Args: append([]string{"study"}, args...)}
	fs := flag.NewFlagSet("study", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "quick run (the default): latency at 1k msg/s (one run of 3 s), the knee searched on "+strings.Join(quickSearch, ", ")+" (and the probe's on its rows) over 1k, 1.5k, 2k, 3k, 4k, 6k, 8k, 12k, 16k msg/s (new steps 2 s, every other step first, then the one between), a 8 s crash run; under 5 minutes")
	fs.BoolVar(&o.Full, "full", false, "full run: latency at 1k and 2k msg/s (3 runs of 5 s each, medians), the knee searched on every backend over 500, 1k, 1.5k, 2k, 3k, 4k, 6k, 8k ... 50k msg/s (new steps 6 s), the probe's agreement runs and knee search on every backend, a 24 s crash run; 41 minutes at most")
	search := fs.String("search", "", "comma-separated backends that get the throughput search, or all, or none (default: quick: "+strings.Join(quickSearch, ",")+"; full: all)")
	backends := fs.String("backends", "", "comma-separated subset of "+strings.Join(allBackends, ","))
	fs.StringVar(&o.Gateway, "gateway", "", "use this gateway binary instead of building one")
	fs.StringVar(&o.Out, "out", "", "directory for the JSON results (default bench/results in the repo)")
	fs.BoolVar(&o.NoProbe, "no-probe", false, "skip the agreement probe (fanout scenario at the same load, on processes of its own)")
	probe := fs.String("probe", "", "comma-separated backends the agreement probe runs on (and searches the knee of, where the study does), or all (default: quick: "+strings.Join(defaultProbe, ",")+"; full: all)")
	fs.IntVar(&o.ProbeSubs, "probe-subs", 0, "subscribers per channel of the agreement probe (0: the study's own count, so both measure the same load; 1: one per channel, the least the gateway can do)")
	fs.BoolVar(&o.Docs, "docs", true, "write docs/benchmarks-study.md and docs/plots/study-*.svg")
	latFor := fs.Duration("latency-for", 0, "override the duration of each latency run (0: the mode's)")
	stepFor := fs.Duration("step-for", 0, "override the duration of each new throughput step (0: the mode's)")
	budget := fs.Duration("budget", 0, "override the mode's time budget (optional throughput steps stop at it; the run is cut 40 s after it); 0: the mode's")
	fs.StringVar(&o.From, "from", "", "run nothing: print the tables and (with -docs) write the docs from this results file (bench/results/study-*.json)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *quick && o.Full {
		return o, errors.New("-quick and -full are exclusive")
	}
	var err error
	if o.Backends, err = backendList("-backends", *backends, allBackends); err != nil {
		return o, err
	}
	def := quickSearch
	if o.Full {
		def = allBackends
	}
	if o.Search, err = backendList("-search", *search, def); err != nil {
		return o, err
	}
	defProbe := defaultProbe
	if o.Full {
		defProbe = allBackends
	}
	if o.Probe, err = backendList("-probe", *probe, defProbe); err != nil {
		return o, err
	}
	o.Channels, o.SubsPerChannel = 100, 10
	o.CrashRate, o.CrashChannels, o.CrashSubs = 500, 10, 4
	if o.Full {
		// One run per step let a single stall decide a knee: the same
		// code's jetstream-file knee was 4000 in one full run and 8000
		// in the next, redis-streams-aof-always's probe 2000 against
		// the study's 4000. (Quick mode's 2 s steps show their noise
		// instead: it has no time to run a step twice.)
		o.Confirm = true
		// Latency at rates every backend sustains on the 2-core machine
		// (the lowest knee, redis-sharded's and redis-cluster's, is
		// 2000-3000 msg/s): a run far past a backend's knee (5k and 20k
		// msg/s, before) measures seconds of queueing, costs about 100 s
		// a backend and says nothing the knee search does not. Latency
		// past 2k msg/s is in the search's steps.
		o.Rates, o.Reps, o.ProbeRuns = []float64{1000, 2000}, 3, 3
		o.LatencyFor = 5 * time.Second
		o.TputSteps = []float64{500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 24000, 32000, 50000}
		o.TputStride, o.TputFor = 2, 6*time.Second
		// Fresh processes measured from their first second: the probe's
		// p99 at 1000 msg/s sat above the study's (whose later runs are
		// on warm processes) on 8 of 10 rows.
		o.WarmFor = 2 * time.Second
		o.CrashFor, o.CrashAt, o.CrashPause = 24*time.Second, 8*time.Second, 4*time.Second
		o.Drain = 5 * time.Second
		// The plan with every backend probed: about 25 minutes with
		// every knee at the second step, 40 with every knee at the top;
		// with the other full scenarios (about 15 minutes) `go run
		// ./bench -full` stays under an hour.
		o.Budget, o.Limit = 40*time.Minute, 41*time.Minute
	} else {
		// Quick: one latency run per backend, so that the time goes to
		// the knees (the search repeats nothing, but its steps show the
		// noise from one rate to the next); -full repeats each rate 3
		// times. The ladder brackets the knees seen on the 2-core machine
		// (redis-streams-aof-always under 1k msg/s, memory at 6k-8k).
		o.Rates, o.Reps, o.ProbeRuns = []float64{1000}, 1, 1
		// 3 s: the p99 of a 2 s run (20,000 deliveries) moved by more
		// than the agreement check's 50 % between the study and the
		// probe on a quiet machine (2.25 against 1.35 ms).
		o.LatencyFor = 3 * time.Second
		o.TputSteps = []float64{1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000}
		o.TputStride, o.TputFor = 2, 2*time.Second
		// No warm-up (WarmFor) and no second runs (Confirm): the five
		// minutes go to the knees; both are -full's.
		o.CrashFor, o.CrashAt, o.CrashPause = 8*time.Second, 2*time.Second, 2*time.Second
		o.Drain = 3 * time.Second
		o.Budget, o.Limit = 270*time.Second, 5*time.Minute
	}
	if o.ProbeSubs == 0 {
		o.ProbeSubs = o.SubsPerChannel
	}
	if o.ProbeSubs < 1 || o.ProbeSubs > o.SubsPerChannel {
		return o, fmt.Errorf("-probe-subs: want 1 to %d (the study's subscribers per channel), got %d", o.SubsPerChannel, o.ProbeSubs)
	}
	if *latFor < 0 || *stepFor < 0 || *budget < 0 {
		return o, errors.New("-latency-for, -step-for and -budget must not be negative")
	}
	if *budget > 0 {
		o.Budget, o.Limit = *budget, *budget+40*time.Second
	}
	if *latFor > 0 {
		o.LatencyFor = *latFor
	}
	if *stepFor > 0 {
		o.TputFor = *stepFor
	}
	return o, nil
}

// quickSearch are the backends quick mode searches the knee of: the
// calibration row, the two fire-and-forget brokers and one log of each
// kind (-full searches every backend).
var quickSearch = []string{"memory", "redis", "nats", "jetstream-file", "redis-streams"}

// defaultProbe are the rows the probe runs on by default in quick mode:
// the calibration row and the redis row; -full (and -probe all) checks
// every backend (at about 7 to 10 s a probe step, -full can afford it).
var defaultProbe = []string{"memory", "redis"}

// backendList parses a comma-separated list of backends ("all", "none",
// or "" for def).
func backendList(flag, v string, def []string) ([]string, error) {
	switch v {
	case "":
		return def, nil
	case "all":
		return allBackends, nil
	case "none":
		return nil, nil
	}
	var out []string
	for b := range strings.SplitSeq(v, ",") {
		if !slices.Contains(allBackends, b) {
			return nil, fmt.Errorf("%s: unknown backend %q (want some of %s)", flag, b, strings.Join(allBackends, ","))
		}
		out = append(out, b)
	}
	return out, nil
}

// searches says whether a backend gets the throughput search, and
// whether the probe searches it too.
func (o studyOptions) searches(name string) (study, probe bool) {
	study = len(o.TputSteps) > 0 && slices.Contains(o.Search, name)
	return study, study && o.probes(name)
}

// probes says whether the probe runs on a backend.
func (o studyOptions) probes(name string) bool {
	return slices.Contains(o.Probe, name) && len(o.Rates) > 0 && !o.NoProbe
}

// plan is what the study will run, for the budget and its estimate.
func (o studyOptions) plan() study.Plan {
	p := study.Plan{Backends: len(o.Backends), LatencyRuns: len(o.Rates) * max(1, o.Reps), ProbeRuns: o.ProbeRuns,
		LatencyFor: o.LatencyFor, StepFor: o.TputFor, CrashFor: o.CrashFor, Ladder: o.TputSteps, Stride: o.TputStride,
		Confirm: o.Confirm, WarmFor: o.WarmFor, Costs: study.DefaultCosts}
	if o.Gateway != "" {
		p.Costs.Build = 0
	}
	if len(o.Rates) > 0 {
		p.Reused = o.Rates[0]
	}
	for _, b := range o.Backends {
		s, pr := o.searches(b)
		if s {
			p.Searched++
		}
		if pr {
			p.ProbeSearched++
		}
		if o.probes(b) {
			p.Probed++
		}
	}
	return p
}

// backendEstimate is the first guess of one backend's mandatory runs;
// runStudy corrects it with what the backends before took.
func (o studyOptions) backendEstimate() time.Duration {
	return o.plan().Mandatory(false)
}

func (o studyOptions) mode() string {
	if o.Full {
		return "full"
	}
	return "quick"
}

// studyMain runs the study from the command line.
func studyMain(args []string) int {
	o, err := parseStudyArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench study:", err)
		return 2
	}
	if o.From != "" {
		if err := studyFromFile(o.From, o.Docs, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench study:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signalContext()
	defer stop()
	if _, err := runStudy(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench study:", err)
		return 1
	}
	return 0
}

// ---- backends ----

// backendSpec is one backend of the study and how to run it.
type backendSpec struct {
	Name    string // as in the tables
	Type    string // broker.type
	Nodes   int
	Redis   []string // redis-server persistence arguments; nil = no redis
	NATS    bool     // needs a NATS server
	Storage string   // nats.storage
	Note    string   // persistence, for the docs
	// RedisServers is how many redis-server processes (0 = 1); with
	// RedisCluster they form a Redis Cluster of that many masters,
	// otherwise the gateway shards channels over them (redis.addrs).
	RedisServers int
	RedisCluster bool
	// Victim is the index of the broker process the crash run kills.
	Victim int
}

// redisCount is how many redis-server processes the backend runs.
func (s backendSpec) redisCount() int {
	if s.Redis == nil {
		return 0
	}
	return max(1, s.RedisServers)
}

// embeddedBroker says where the broker runs in the latency and
// throughput runs when it is not a process of its own ("" = own process).
func (s backendSpec) embeddedBroker() string {
	switch {
	case s.Type == "memory":
		return "in the gateway"
	case s.NATS:
		return "in gateway A"
	}
	return ""
}

// victimName names the broker process the crash run kills.
func (s backendSpec) victimName() string {
	switch {
	case s.Type == "memory":
		return "gateway (holds the broker)"
	case s.NATS:
		return "nats-server"
	case s.RedisCluster:
		return fmt.Sprintf("redis-server master %d of %d", s.Victim+1, s.redisCount())
	case s.redisCount() > 1:
		return fmt.Sprintf("redis-server shard %d of %d", s.Victim+1, s.redisCount())
	}
	return "redis-server"
}

func backendSpecs() map[string]backendSpec {
	aof := []string{"--appendonly", "yes", "--appendfsync", "everysec", "--save", ""}
	aofAlways := []string{"--appendonly", "yes", "--appendfsync", "always", "--save", ""}
	none := []string{"--appendonly", "no", "--save", ""}
	return map[string]backendSpec{
		"memory": {Name: "memory", Type: "memory", Nodes: 1, Note: "in the gateway process, 1 node"},
		"redis":  {Name: "redis", Type: "redis", Nodes: 2, Redis: aof, Note: "redis-server, AOF appendfsync everysec"},
		"redis-sharded": {Name: "redis-sharded", Type: "redis", Nodes: 2, Redis: aof, RedisServers: 3, Victim: 2,
			Note: "3 redis-server processes, channels jump-hashed over them (redis.addrs), AOF appendfsync everysec"},
		"redis-cluster": {Name: "redis-cluster", Type: "redis", Nodes: 2, Redis: aof, RedisServers: 3, RedisCluster: true, Victim: 2,
			Note: "Redis Cluster, 3 masters, no replicas (redis.cluster), AOF appendfsync everysec"},
		"nats":             {Name: "nats", Type: "nats", Nodes: 2, NATS: true, Storage: "file", Note: "core NATS (presence in JetStream, file)"},
		"jetstream-file":   {Name: "jetstream-file", Type: "jetstream", Nodes: 2, NATS: true, Storage: "file", Note: "JetStream, file storage"},
		"jetstream-memory": {Name: "jetstream-memory", Type: "jetstream", Nodes: 2, NATS: true, Storage: "memory", Note: "JetStream, memory storage"},
		"redis-streams-aof-off": {Name: "redis-streams-aof-off", Type: "redis-streams", Nodes: 2, Redis: none,
			Note: "redis-server streams, no persistence (appendonly no, no RDB snapshots)"},
		"redis-streams": {Name: "redis-streams", Type: "redis-streams", Nodes: 2, Redis: aof, Note: "redis-server streams, AOF appendfsync everysec"},
		"redis-streams-aof-always": {Name: "redis-streams-aof-always", Type: "redis-streams", Nodes: 2, Redis: aofAlways,
			Note: "redis-server streams, AOF appendfsync always"},
	}
}

// studyEnv is the gateway environment common to every node of the study:
// no per-connection publish cap, no accept cap, no per-user cap, no
// join/leave traffic.
func studyEnv() []string {
	return []string{
		"SYNCGATE_CLIENT_PUBLISH_RATE=0",
		"SYNCGATE_SERVER_ACCEPT_RATE=0",
		"SYNCGATE_CLIENT_MAX_CONNECTIONS_PER_USER=0",
		"SYNCGATE_PRESENCE_JOIN_LEAVE=false",
		"SYNCGATE_SERVER_DRAIN_WINDOW=1s",
		"SYNCGATE_HISTORY_SIZE=10000",
	}
}

// ---- broker processes ----

// brokerProc is a redis-server or a standalone NATS server, started by
// the study on a fixed loopback port so it can be killed and restarted on
// the same port and data directory.
type brokerProc struct {
	kind   string // redis or nats
	bin    string
	args   []string
	dir    string
	addr   string
	child  *proc.Child // nil before the first start
	pid    int
	stderr *proc.TailBuffer
}

func newRedisProc(dir string, port int, persist []string) *brokerProc {
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--daemonize", "no", "--protected-mode", "no", "--logfile", ""}
	return &brokerProc{kind: "redis", bin: "redis-server", args: append(args, persist...), dir: dir,
		addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
}

func newNATSProc(dir string, port int) (*brokerProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return &brokerProc{kind: "nats", bin: exe, args: []string{natsServerArg, "-listen", addr, "-store", dir}, dir: dir, addr: addr}, nil
}

func (b *brokerProc) start(ctx context.Context) error {
	b.stderr = proc.NewTailBuffer(16 << 10)
	cmd := exec.Command(b.bin, b.args...)
	cmd.Dir = b.dir
	if b.kind == "nats" {
		cmd.Env = append(os.Environ(), natsTokenEnv+"="+natsToken)
	}
	cmd.Stdout, cmd.Stderr = b.stderr, b.stderr
	child, err := proc.Start(cmd, nil)
	if err != nil {
		return fmt.Errorf("starting %s: %w", b.kind, err)
	}
	b.child, b.pid = child, child.PID()
	done := child.Done()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("%s (pid %d) exited at start: %s\n%s", b.kind, b.pid, cmd.ProcessState, proc.Indent(b.stderr.String()))
		default:
		}
		if b.ready() {
			return nil
		}
		if time.Now().After(deadline) {
			b.kill()
			return fmt.Errorf("%s on %s not ready after 30s\n%s", b.kind, b.addr, proc.Indent(b.stderr.String()))
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			b.kill()
			return err
		}
	}
}

// ready: redis answers PING with +PONG (not -LOADING); NATS sends INFO.
func (b *brokerProc) ready() bool {
	c, err := net.DialTimeout("tcp", b.addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if b.kind == "redis" {
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return false
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return false
	}
	if b.kind == "redis" {
		return strings.HasPrefix(line, "+PONG")
	}
	return strings.HasPrefix(line, "INFO")
}

// kill sends SIGKILL to the process (by PID) and waits for it.
func (b *brokerProc) kill() {
	if b.child != nil {
		b.child.Kill()
	}
}

// stop sends SIGTERM and SIGKILL after 5 s.
func (b *brokerProc) stop() {
	if b.child != nil {
		b.child.Terminate(5 * time.Second)
	}
}

// ---- one backend's processes ----

// cluster is the processes of one backend run: the broker processes (none,
// one, or three redis-servers) and the gateway nodes. crash kills one
// broker process (for memory, the gateway, which holds the broker) and
// restart starts it again in place.
type cluster struct {
	spec    backendSpec
	bin     string
	brokers []*brokerProc
	nodes   []*gatewayProc
	dirs    []string
	envs    [][]string
	ports   []int
	p       *progress
}

// startCluster starts the backend. separateBroker puts NATS in its own
// process (crash scenario); otherwise node A embeds it.
func startCluster(ctx context.Context, spec backendSpec, bin, tmp string, separateBroker bool, p *progress) (*cluster, error) {
	c := &cluster{spec: spec, bin: bin, p: p}
	base := append(studyEnv(), "SYNCGATE_BROKER_TYPE="+spec.Type)
	var nodeEnv [2][]string
	nodeEnv[0] = append([]string(nil), base...)
	nodeEnv[1] = append([]string(nil), base...)
	switch {
	case spec.Redis != nil:
		persist := spec.Redis
		if spec.RedisCluster {
			persist = append(append([]string(nil), persist...), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no")
		}
		var addrs []string
		for i := range spec.redisCount() {
			port, err := proc.FreePort()
			if err != nil {
				return nil, err
			}
			dir := filepath.Join(tmp, fmt.Sprintf("redis%d", i))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			b := newRedisProc(dir, port, persist)
			c.brokers = append(c.brokers, b)
			addrs = append(addrs, b.addr)
		}
		for i := range nodeEnv {
			nodeEnv[i] = append(nodeEnv[i], "SYNCGATE_REDIS_ADDRS="+strings.Join(addrs, ","))
			if spec.RedisCluster {
				nodeEnv[i] = append(nodeEnv[i], "SYNCGATE_REDIS_CLUSTER=true")
			}
		}
	case spec.NATS:
		port, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		for i := range nodeEnv {
			nodeEnv[i] = append(nodeEnv[i], "SYNCGATE_NATS_STORAGE="+spec.Storage)
		}
		if separateBroker {
			dir := filepath.Join(tmp, "nats")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			b, err := newNATSProc(dir, port)
			if err != nil {
				return nil, err
			}
			c.brokers = append(c.brokers, b)
			nodeEnv[0] = append(nodeEnv[0], "SYNCGATE_NATS_URL=nats://"+addr)
		} else {
			nodeEnv[0] = append(nodeEnv[0], "SYNCGATE_NATS_LISTEN="+addr, "SYNCGATE_NATS_STORE_DIR="+filepath.Join(tmp, "node0-nats"))
		}
		nodeEnv[1] = append(nodeEnv[1], "SYNCGATE_NATS_URL=nats://"+addr)
	}
	for i, b := range c.brokers {
		p.printf("%s: starting %s %d on %s (%s)", spec.Name, b.kind, i+1, b.addr, strings.Join(b.args, " "))
		if err := b.start(ctx); err != nil {
			c.close()
			return nil, err
		}
		p.printf("%s: %s %d ready, pid %d", spec.Name, b.kind, i+1, b.pid)
	}
	if spec.RedisCluster {
		if err := formRedisCluster(ctx, c.brokers); err != nil {
			c.close()
			return nil, err
		}
		p.printf("%s: redis cluster of %d masters ok", spec.Name, len(c.brokers))
	}
	for i := range spec.Nodes {
		dir := filepath.Join(tmp, fmt.Sprintf("node%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			c.close()
			return nil, err
		}
		g, err := startGateway(ctx, bin, dir, nodeEnv[i])
		if err != nil {
			c.close()
			return nil, fmt.Errorf("node %c: %w", 'A'+i, err)
		}
		port, _ := strconv.Atoi(g.addr[strings.LastIndexByte(g.addr, ':')+1:])
		c.nodes, c.dirs, c.envs, c.ports = append(c.nodes, g), append(c.dirs, dir), append(c.envs, nodeEnv[i]), append(c.ports, port)
		p.printf("%s: gateway node %c on %s, pid %d", spec.Name, 'A'+i, g.addr, g.pid)
	}
	return c, nil
}

// cpu is the CPU time used so far by the gateway processes and by the
// broker processes of the cluster (a process that is gone counts 0).
func (c *cluster) cpu() (gateway, broker time.Duration) {
	for _, g := range c.nodes {
		if d, err := proc.ReadCPU(g.pid); err == nil {
			gateway += d
		}
	}
	for _, b := range c.brokers {
		if d, err := proc.ReadCPU(b.pid); err == nil {
			broker += d
		}
	}
	return gateway, broker
}

// victim is the broker process the crash run kills, nil for memory.
func (c *cluster) victim() *brokerProc {
	if len(c.brokers) == 0 {
		return nil
	}
	return c.brokers[min(c.spec.Victim, len(c.brokers)-1)]
}

// crash kills the victim process with SIGKILL and says which, with its PID.
func (c *cluster) crash() (string, int) {
	if b := c.victim(); b != nil {
		pid := b.pid
		b.kill()
		return fmt.Sprintf("%s on %s", c.spec.victimName(), b.addr), pid
	}
	g := c.nodes[0]
	g.child.Kill()
	return "gateway node A (memory broker)", g.pid
}

// restart starts the killed process again on the same port and data; a
// Redis Cluster master counts as ready once every master reports
// cluster_state:ok again.
func (c *cluster) restart(ctx context.Context) (int, error) {
	if b := c.victim(); b != nil {
		if err := b.start(ctx); err != nil {
			return b.pid, err
		}
		if c.spec.RedisCluster {
			return b.pid, waitRedisClusterOK(ctx, c.brokers, 20*time.Second)
		}
		return b.pid, nil
	}
	g, err := launchGateway(c.bin, c.dirs[0], c.ports[0], c.envs[0])
	if err != nil {
		return 0, err
	}
	c.nodes[0] = g
	if err := g.waitHealthy(ctx, 20*time.Second); err != nil {
		return g.pid, err
	}
	return g.pid, nil
}

// close stops the gateways (SIGTERM, then SIGKILL after 3 s: the study
// does not measure shutdown) and the brokers.
func (c *cluster) close() {
	var wg sync.WaitGroup
	for i, g := range c.nodes {
		wg.Go(func() {
			if how := g.stop(3 * time.Second); strings.HasPrefix(how, "did not stop") && c.p != nil {
				c.p.printf("%s: gateway node %c %s", c.spec.Name, 'A'+i, how)
			}
		})
	}
	wg.Wait()
	for _, b := range c.brokers {
		wg.Go(b.stop)
	}
	wg.Wait()
}

func (c *cluster) urls() []string {
	var out []string
	for _, g := range c.nodes {
		out = append(out, "ws://"+g.addr+"/ws")
	}
	return out
}

// ---- Redis Cluster ----

// formRedisCluster makes the (cluster-enabled, empty) redis-servers one
// cluster: the 16384 slots split evenly over them as masters, the nodes
// introduced with CLUSTER MEET; it waits for cluster_state:ok everywhere.
func formRedisCluster(ctx context.Context, procs []*brokerProc) error {
	const slots = 16384
	n := len(procs)
	for i, b := range procs {
		lo, hi := i*slots/n, (i+1)*slots/n-1
		if _, err := redistest.Do(b.addr, "CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1)); err != nil {
			return fmt.Errorf("redis cluster: %s: %w", b.addr, err)
		}
		if _, err := redistest.Do(b.addr, "CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi)); err != nil {
			return fmt.Errorf("redis cluster: %s: %w", b.addr, err)
		}
	}
	for _, b := range procs[1:] {
		host, port, _ := net.SplitHostPort(b.addr)
		if _, err := redistest.Do(procs[0].addr, "CLUSTER", "MEET", host, port); err != nil {
			return fmt.Errorf("redis cluster: meet %s: %w", b.addr, err)
		}
	}
	return waitRedisClusterOK(ctx, procs, 30*time.Second)
}

// waitRedisClusterOK waits until every node reports cluster_state:ok and
// knows all the others as connected.
func waitRedisClusterOK(ctx context.Context, procs []*brokerProc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var notOK error
		for _, b := range procs {
			info, err := redistest.Do(b.addr, "CLUSTER", "INFO")
			if err == nil && !strings.Contains(info, "cluster_state:ok") {
				err = errors.New("cluster_state not ok")
			}
			if err == nil {
				var nodes string
				if nodes, err = redistest.Do(b.addr, "CLUSTER", "NODES"); err == nil &&
					(strings.Count(nodes, " connected") < len(procs) || strings.Contains(nodes, "fail")) {
					err = errors.New("not every node known and connected")
				}
			}
			if err != nil {
				notOK = fmt.Errorf("%s: %w", b.addr, err)
				break
			}
		}
		if notOK == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis cluster not ok after %s: %w", timeout, notOK)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// supported reports whether the gateway binary accepts broker.type t, by
// asking it to start with a broken listen address: an unknown broker type
// fails config validation or broker creation first.
func supported(ctx context.Context, bin, tmp, t string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = tmp
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SYNCGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "SYNCGATE_BROKER_TYPE="+t, "SYNCGATE_LISTEN=256.0.0.1:1", "SYNCGATE_REDIS_ADDRS=127.0.0.1:1", "SYNCGATE_LOG_LEVEL=error")
	cmd.SysProcAttr = proc.Attr()
	out, _ := cmd.CombinedOutput()
	s := string(out)
	if strings.Contains(s, "not built into") || strings.Contains(s, "unknown broker") {
		return false, strings.TrimSpace(s)
	}
	return true, ""
}
