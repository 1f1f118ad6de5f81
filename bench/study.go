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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// studyOptions are the study's command line.
type studyOptions struct {
	Args     []string
	Full     bool
	Backends []string // subset to run; empty = all
	Gateway  string
	Out      string
	Docs     bool
	From     string // a results file to regenerate the docs from

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
}

var allBackends = []string{"memory", "redis", "nats", "jetstream-file", "jetstream-memory", "redis-streams"}

func parseStudyArgs(args []string) (studyOptions, error) {
	o := studyOptions{Args: append([]string{"study"}, args...)}
	fs := flag.NewFlagSet("study", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "quick run (the default): latency at 1k msg/s for 6 s, a 16 s crash run; under 5 minutes")
	fs.BoolVar(&o.Full, "full", false, "full run: latency at 1k, 5k and 20k msg/s, a 60 s crash run")
	backends := fs.String("backends", "", "comma-separated subset of "+strings.Join(allBackends, ","))
	fs.StringVar(&o.Gateway, "gateway", "", "use this gateway binary instead of building one")
	fs.StringVar(&o.Out, "out", "", "directory for the JSON results (default bench/results in the repo)")
	fs.BoolVar(&o.Docs, "docs", true, "write docs/benchmarks-study.md and docs/plots/study-*.svg")
	fs.StringVar(&o.From, "from", "", "run nothing: print the tables and write the docs from this results file (bench/results/study-*.json)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *quick && o.Full {
		return o, errors.New("-quick and -full are exclusive")
	}
	if *backends != "" {
		for b := range strings.SplitSeq(*backends, ",") {
			if !strings.Contains(","+strings.Join(allBackends, ",")+",", ","+b+",") {
				return o, fmt.Errorf("-backends: unknown backend %q", b)
			}
			o.Backends = append(o.Backends, b)
		}
	} else {
		o.Backends = allBackends
	}
	o.Channels, o.SubsPerChannel = 100, 10
	o.CrashRate, o.CrashChannels, o.CrashSubs = 500, 10, 4
	if o.Full {
		o.Rates = []float64{1000, 5000, 20000}
		o.LatencyFor = 20 * time.Second
		o.CrashFor, o.CrashAt, o.CrashPause = 60*time.Second, 20*time.Second, 5*time.Second
		o.Drain = 15 * time.Second
	} else {
		o.Rates = []float64{1000}
		o.LatencyFor = 6 * time.Second
		o.CrashFor, o.CrashAt, o.CrashPause = 16*time.Second, 5*time.Second, 3*time.Second
		o.Drain = 6 * time.Second
	}
	return o, nil
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
		if err := studyFromFile(o.From, os.Stdout); err != nil {
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
}

func backendSpecs() map[string]backendSpec {
	aof := []string{"--appendonly", "yes", "--appendfsync", "everysec", "--save", ""}
	return map[string]backendSpec{
		"memory":           {Name: "memory", Type: "memory", Nodes: 1, Note: "in the gateway process, 1 node"},
		"redis":            {Name: "redis", Type: "redis", Nodes: 2, Redis: aof, Note: "redis-server, AOF appendfsync everysec"},
		"nats":             {Name: "nats", Type: "nats", Nodes: 2, NATS: true, Storage: "file", Note: "core NATS (presence in JetStream, file)"},
		"jetstream-file":   {Name: "jetstream-file", Type: "jetstream", Nodes: 2, NATS: true, Storage: "file", Note: "JetStream, file storage"},
		"jetstream-memory": {Name: "jetstream-memory", Type: "jetstream", Nodes: 2, NATS: true, Storage: "memory", Note: "JetStream, memory storage"},
		"redis-streams":    {Name: "redis-streams", Type: "redis-streams", Nodes: 2, Redis: aof, Note: "redis-server streams, AOF appendfsync everysec"},
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
	cmd    *exec.Cmd
	pid    int
	done   chan struct{}
	stderr *tailBuffer
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
	b.stderr = newTailBuffer(16 << 10)
	b.done = make(chan struct{})
	cmd := exec.Command(b.bin, b.args...)
	cmd.Dir = b.dir
	cmd.Stdout, cmd.Stderr = b.stderr, b.stderr
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", b.kind, err)
	}
	b.cmd, b.pid = cmd, cmd.Process.Pid
	done := b.done
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("%s (pid %d) exited at start: %s\n%s", b.kind, b.pid, cmd.ProcessState, indent(b.stderr.String()))
		default:
		}
		if b.ready() {
			return nil
		}
		if time.Now().After(deadline) {
			b.kill()
			return fmt.Errorf("%s on %s not ready after 30s\n%s", b.kind, b.addr, indent(b.stderr.String()))
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
	if b.cmd == nil {
		return
	}
	select {
	case <-b.done:
		return
	default:
	}
	_ = syscall.Kill(b.pid, syscall.SIGKILL)
	<-b.done
}

// stop sends SIGTERM and SIGKILL after 5 s.
func (b *brokerProc) stop() {
	if b.cmd == nil {
		return
	}
	select {
	case <-b.done:
		return
	default:
	}
	_ = syscall.Kill(b.pid, syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		b.kill()
	}
}

// ---- one backend's processes ----

// cluster is the processes of one backend run: an optional broker process
// and the gateway nodes. crash kills the broker (for memory, the gateway,
// which holds the broker) and restart starts it again in place.
type cluster struct {
	spec   backendSpec
	bin    string
	broker *brokerProc
	nodes  []*gatewayProc
	dirs   []string
	envs   [][]string
	ports  []int
}

// startCluster starts the backend. separateBroker puts NATS in its own
// process (crash scenario); otherwise node A embeds it.
func startCluster(ctx context.Context, spec backendSpec, bin, tmp string, separateBroker bool, p *progress) (*cluster, error) {
	c := &cluster{spec: spec, bin: bin}
	base := append(studyEnv(), "SYNCGATE_BROKER_TYPE="+spec.Type)
	var nodeEnv [2][]string
	nodeEnv[0] = append([]string(nil), base...)
	nodeEnv[1] = append([]string(nil), base...)
	switch {
	case spec.Redis != nil:
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(tmp, "redis")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		c.broker = newRedisProc(dir, port, spec.Redis)
		for i := range nodeEnv {
			nodeEnv[i] = append(nodeEnv[i], "SYNCGATE_REDIS_ADDRS="+c.broker.addr)
		}
	case spec.NATS:
		port, err := freePort()
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
			if c.broker, err = newNATSProc(dir, port); err != nil {
				return nil, err
			}
			nodeEnv[0] = append(nodeEnv[0], "SYNCGATE_NATS_URL=nats://"+addr)
		} else {
			nodeEnv[0] = append(nodeEnv[0], "SYNCGATE_NATS_LISTEN="+addr, "SYNCGATE_NATS_STORE_DIR="+filepath.Join(tmp, "node0-nats"))
		}
		nodeEnv[1] = append(nodeEnv[1], "SYNCGATE_NATS_URL=nats://"+addr)
	}
	if c.broker != nil {
		p.printf("%s: starting %s on %s (%s)", spec.Name, c.broker.kind, c.broker.addr, strings.Join(c.broker.args, " "))
		if err := c.broker.start(ctx); err != nil {
			return nil, err
		}
		p.printf("%s: %s ready, pid %d", spec.Name, c.broker.kind, c.broker.pid)
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

// crash kills the broker process with SIGKILL and returns its PID.
func (c *cluster) crash() (string, int) {
	if c.broker != nil {
		pid := c.broker.pid
		c.broker.kill()
		return c.broker.kind, pid
	}
	g := c.nodes[0]
	_ = syscall.Kill(g.pid, syscall.SIGKILL)
	<-g.done
	return "gateway node A (memory broker)", g.pid
}

// restart starts the killed process again on the same port and data.
func (c *cluster) restart(ctx context.Context) (int, error) {
	if c.broker != nil {
		err := c.broker.start(ctx)
		return c.broker.pid, err
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

// close stops the gateways (SIGTERM, then SIGKILL) and the broker.
func (c *cluster) close() {
	var wg sync.WaitGroup
	for _, g := range c.nodes {
		wg.Go(func() { g.stop(10 * time.Second) })
	}
	wg.Wait()
	if c.broker != nil {
		c.broker.stop()
	}
}

func (c *cluster) urls() []string {
	var out []string
	for _, g := range c.nodes {
		out = append(out, "ws://"+g.addr+"/ws")
	}
	return out
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
	cmd.SysProcAttr = childAttr()
	out, _ := cmd.CombinedOutput()
	s := string(out)
	if strings.Contains(s, "not built into") || strings.Contains(s, "unknown broker") {
		return false, strings.TrimSpace(s)
	}
	return true, ""
}
