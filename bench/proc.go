//go:build linux

// proc.go starts, stops and measures the child processes: the gateway (built
// once with go build, run on a random loopback port) and the loadgen
// processes (this binary re-executed, spoken to with JSON lines on
// stdin/stdout). It reads RSS, threads and CPU time from /proc. Every child
// is started in its own process group with a parent-death signal, and is
// stopped by PID: SIGTERM (gateway) or closing stdin (loadgen), then SIGKILL
// after a timeout.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// findRepoRoot walks up from the working directory to the directory that
// holds go.mod.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod in %s or any parent: run bench from inside the repository", dir)
		}
	}
}

// buildGateway runs `go build -o <dir>/syncgate .` in the repository root.
func buildGateway(ctx context.Context, root, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "syncgate")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the gateway: %v\n%s", err, out)
	}
	return bin, nil
}

// childAttr puts a child in its own process group (a Ctrl-C in the terminal
// reaches only bench, which then stops the children in order) and has the
// kernel kill it if bench dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// ---- the gateway process ----

// gatewayProc is a running gateway.
type gatewayProc struct {
	cmd    *exec.Cmd
	pid    int
	addr   string // 127.0.0.1:port
	stderr *tailBuffer
	done   chan struct{} // closed once the process has exited
	client *http.Client
	stopMu sync.Mutex
}

// gatewayInfo is what the results say about the gateway process.
type gatewayInfo struct {
	PID  int    `json:"pid"`
	Addr string `json:"addr"`
	// After every client closed its connections: what /healthz reported
	// (-1: not measured) and how long it took to reach zero connections.
	ConnsAfterClose      int     `json:"conns_after_close"`
	GoroutinesAfterClose int     `json:"goroutines_after_close"`
	CloseWaitS           float64 `json:"close_wait_s"`
	Exit                 string  `json:"exit,omitempty"`   // how it ended
	Stderr               string  `json:"stderr,omitempty"` // the tail of its stderr (log level warn)
}

// startGateway starts bin in dir (an empty directory, so no config.yaml is
// picked up: built-in defaults plus env) on a free loopback port and waits
// for /healthz.
func startGateway(ctx context.Context, bin, dir string, env []string) (*gatewayProc, error) {
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		g, err := launchGateway(bin, dir, port, env)
		if err != nil {
			return nil, err
		}
		err = g.waitHealthy(ctx, 20*time.Second)
		if err == nil {
			return g, nil
		}
		g.stop(5 * time.Second)
		if attempt < 3 && strings.Contains(g.stderr.String(), "address already in use") {
			continue // someone took the port between freePort and listen
		}
		return nil, err
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func launchGateway(bin, dir string, port int, env []string) (*gatewayProc, error) {
	g := &gatewayProc{
		addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		stderr: newTailBuffer(64 << 10),
		done:   make(chan struct{}),
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	// Inherited SYNCGATE_* variables are dropped so every run starts from
	// the gateway's defaults; -env adds to them.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SYNCGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Several gateways run side by side: none binds the default metrics
	// port (127.0.0.1:9090), which only one of them could have.
	cmd.Env = append(cmd.Env, "SYNCGATE_LISTEN="+g.addr, "SYNCGATE_LOG_LEVEL=warn", "SYNCGATE_METRICS_LISTEN=off")
	// The default broker embeds a NATS server on a fixed port (4222) and a
	// store under the working directory: give it a free port and the run's
	// directory, so runs (and tests) side by side do not collide. env,
	// later, overrides both (the last value of a key wins).
	natsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	// Every gateway of this bench process shares one NATS token: a node
	// that embeds the server requires it, the others present it.
	cmd.Env = append(cmd.Env, "SYNCGATE_NATS_LISTEN=127.0.0.1:"+strconv.Itoa(natsPort),
		"SYNCGATE_NATS_STORE_DIR="+filepath.Join(dir, "nats-"+strconv.Itoa(port)),
		"SYNCGATE_NATS_TOKEN="+natsToken)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout = g.stderr
	cmd.Stderr = g.stderr
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the gateway: %w", err)
	}
	g.cmd, g.pid = cmd, cmd.Process.Pid
	go func() { _ = cmd.Wait(); close(g.done) }()
	return g, nil
}

func (g *gatewayProc) waitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := g.alive(); err != nil {
			return err
		}
		if _, err := g.health(); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("gateway (pid %d) not healthy after %s: %v%s", g.pid, timeout, err, g.stderrNote())
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// health is the gateway's /healthz answer.
type health struct {
	Status      string `json:"status"`
	Connections int    `json:"connections"`
	Goroutines  int    `json:"goroutines"`
	IO          string `json:"io"`
}

func (g *gatewayProc) health() (health, error) {
	var h health
	resp, err := g.client.Get("http://" + g.addr + "/healthz")
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("/healthz: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return h, fmt.Errorf("/healthz: %w", err)
	}
	return h, nil
}

// alive returns an error, with the gateway's stderr, once it has exited.
func (g *gatewayProc) alive() error {
	select {
	case <-g.done:
		return fmt.Errorf("gateway (pid %d) exited: %s%s", g.pid, g.cmd.ProcessState, g.stderrNote())
	default:
		return nil
	}
}

func (g *gatewayProc) stderrNote() string {
	if s := strings.TrimSpace(g.stderr.String()); s != "" {
		return "\ngateway stderr:\n" + indent(s)
	}
	return ""
}

// stop sends SIGTERM (graceful shutdown) and SIGKILL after timeout. It
// reports how the process ended.
func (g *gatewayProc) stop(timeout time.Duration) string {
	g.stopMu.Lock()
	defer g.stopMu.Unlock()
	select {
	case <-g.done:
		return "exited by itself: " + g.cmd.ProcessState.String()
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
		return "stopped with SIGTERM: " + g.cmd.ProcessState.String()
	case <-time.After(timeout):
		_ = g.cmd.Process.Kill()
		<-g.done
		return fmt.Sprintf("did not stop within %s of SIGTERM; killed", timeout)
	}
}

// ---- the loadgen processes ----

// loadgenProc is a running loadgen child.
type loadgenProc struct {
	id     int
	cmd    *exec.Cmd
	pid    int
	stdin  io.WriteCloser
	events chan lgEvent  // every event but progress; closed at exit
	done   chan struct{} // closed once the process has exited
	stderr *tailBuffer
	// From progress events, for the parent's progress lines.
	progDone, progFailed, progRefused atomic.Int64
}

func startLoadgen(id int) (*loadgenProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	l := &loadgenProc{id: id, events: make(chan lgEvent, 16), done: make(chan struct{}), stderr: newTailBuffer(16 << 10)}
	cmd := exec.Command(exe, loadgenArg)
	cmd.Stderr = l.stderr
	cmd.SysProcAttr = childAttr()
	if l.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting loadgen: %w", err)
	}
	l.cmd, l.pid = cmd, cmd.Process.Pid
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 256<<20)
		for sc.Scan() {
			var ev lgEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = lgEvent{Ev: evError, Err: "unreadable event: " + err.Error()}
			}
			if ev.Ev == evProgress {
				l.progDone.Store(int64(ev.Done))
				l.progFailed.Store(int64(ev.Failed))
				l.progRefused.Store(int64(ev.Refused))
				continue
			}
			l.events <- ev
		}
		close(l.events)
		_ = cmd.Wait() // after stdout is read to the end, as exec requires
		close(l.done)
	}()
	return l, nil
}

func (l *loadgenProc) send(cmd lgCommand) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	if _, err := l.stdin.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("loadgen %d (pid %d): %w%s", l.id, l.pid, err, l.stderrNote())
	}
	return nil
}

// await returns the next event, which must be of type want.
func (l *loadgenProc) await(ctx context.Context, want string, timeout time.Duration) (lgEvent, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case ev, ok := <-l.events:
		switch {
		case !ok:
			<-l.done
			return ev, fmt.Errorf("loadgen %d (pid %d) exited (%s) while waiting for %q%s", l.id, l.pid, l.cmd.ProcessState, want, l.stderrNote())
		case ev.Ev == evError:
			return ev, fmt.Errorf("loadgen %d: %s", l.id, ev.Err)
		case ev.Ev != want:
			return ev, fmt.Errorf("loadgen %d: got event %q, want %q", l.id, ev.Ev, want)
		}
		return ev, nil
	case <-t.C:
		return lgEvent{}, fmt.Errorf("loadgen %d (pid %d): no %q within %s", l.id, l.pid, want, timeout)
	case <-ctx.Done():
		return lgEvent{}, ctx.Err()
	}
}

// call sends cmd and waits for its answer.
func (l *loadgenProc) call(ctx context.Context, cmd lgCommand, want string, timeout time.Duration) (lgEvent, error) {
	if err := l.send(cmd); err != nil {
		return lgEvent{}, err
	}
	return l.await(ctx, want, timeout)
}

func (l *loadgenProc) stderrNote() string {
	if s := strings.TrimSpace(l.stderr.String()); s != "" {
		return "\nloadgen stderr:\n" + indent(s)
	}
	return ""
}

// stop closes stdin (the loadgen then closes its connections and exits)
// and kills it if it has not exited within timeout.
func (l *loadgenProc) stop(timeout time.Duration) {
	_ = l.stdin.Close()
	select {
	case <-l.done:
	case <-time.After(timeout):
		_ = l.cmd.Process.Kill()
		<-l.done
	}
}

// ---- a run's processes ----

// session owns the processes of one scenario run and stops them all, in
// order, whatever happens: loadgens first (clients close their
// connections), then the gateway.
type session struct {
	gw     *gatewayProc   // gws[0]
	gws    []*gatewayProc // every gateway node, in start order
	broker *brokerProc    // a shared broker process, if any
	lgs    []*loadgenProc
}

// close stops everything and reports on each gateway: once the clients
// are gone it waits (up to 10 s) for the gateway to count no connections,
// notes its goroutines then (a leak check), and only then sends SIGTERM:
// connections still counted at SIGTERM are drained over the gateway's
// server.drain_window (default 30 s). The shared broker goes last.
func (s *session) close() []gatewayInfo {
	var wg sync.WaitGroup
	for _, l := range s.lgs {
		wg.Go(func() { l.stop(15 * time.Second) })
	}
	wg.Wait()
	// Node A last: it may hold the NATS server the others use.
	infos := make([]gatewayInfo, len(s.gws))
	for i, g := range s.gws[min(1, len(s.gws)):] {
		wg.Go(func() { infos[i+1] = closeGateway(g, len(s.lgs) > 0) })
	}
	wg.Wait()
	if len(s.gws) > 0 {
		infos[0] = closeGateway(s.gws[0], len(s.lgs) > 0)
	}
	if s.broker != nil {
		s.broker.stop()
	}
	return infos
}

func closeGateway(g *gatewayProc, hadClients bool) gatewayInfo {
	gi := gatewayInfo{PID: g.pid, Addr: g.addr, ConnsAfterClose: -1, GoroutinesAfterClose: -1}
	if g.alive() == nil && hadClients {
		start := time.Now()
		for {
			h, err := g.health()
			if err != nil {
				break
			}
			gi.ConnsAfterClose, gi.GoroutinesAfterClose = h.Connections, h.Goroutines
			if h.Connections == 0 || time.Since(start) > 10*time.Second {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		gi.CloseWaitS = time.Since(start).Seconds()
		// Let connection goroutines (goroutine mode) finish exiting.
		time.Sleep(500 * time.Millisecond)
		if h, err := g.health(); err == nil {
			gi.GoroutinesAfterClose = h.Goroutines
		}
	}
	gi.Exit = g.stop(45 * time.Second)
	gi.Stderr = g.stderr.String()
	return gi
}

func (s *session) startLoadgens(n int) error {
	for range n {
		l, err := startLoadgen(len(s.lgs))
		if err != nil {
			return err
		}
		s.lgs = append(s.lgs, l)
	}
	return nil
}

// loadgenCPU is the CPU time used so far by the loadgen processes.
func (s *session) loadgenCPU() time.Duration {
	var total time.Duration
	for _, l := range s.lgs {
		if c, err := readCPU(l.pid); err == nil {
			total += c
		}
	}
	return total
}

// ---- /proc ----

// procStatus is what bench reads from /proc/<pid>/status.
type procStatus struct {
	RSSKiB  int64 // VmRSS
	HWMKiB  int64 // VmHWM, peak RSS
	Threads int
}

func readStatus(pid int) (procStatus, error) {
	var st procStatus
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			st.RSSKiB = n
		case "VmHWM":
			st.HWMKiB = n
		case "Threads":
			st.Threads = int(n)
		}
	}
	if st.RSSKiB == 0 {
		return st, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return st, nil
}

// userHZ is the unit of utime and stime in /proc/<pid>/stat; the kernel
// reports them in USER_HZ, which is 100 on Linux.
const userHZ = 100

// readCPU is utime+stime of the process, all threads included.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// ---- helpers ----

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	buf   []byte
	total int64
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total += int64(len(p))
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.total > int64(len(t.buf)) {
		return fmt.Sprintf("[... %d earlier bytes dropped]\n%s", t.total-int64(len(t.buf)), t.buf)
	}
	return string(t.buf)
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}

// dialSummary is the outcome of one dial phase over all loadgens.
type dialSummary struct {
	OK      int      `json:"ok"`
	Failed  int      `json:"failed"`
	Refused int      `json:"refused"` // 503s from the gateway, retried after Retry-After
	Errors  []string `json:"errors,omitempty"`
	Seconds float64  `json:"seconds"` // the slowest loadgen's dial time
	Rate    float64  `json:"rate"`    // connections set up per second, all loadgens
}

// dialAll splits connections base.First .. base.First+total-1 evenly over
// lgs, dials them in parallel and prints progress once a second.
func (s *session) dialAll(ctx context.Context, p *progress, lgs []*loadgenProc, base lgCommand, total int, label string) (dialSummary, error) {
	var sum dialSummary
	per := (total + len(lgs) - 1) / len(lgs)
	timeout := 30*time.Second + time.Duration(total)*20*time.Millisecond
	var active []*loadgenProc
	for i, l := range lgs {
		first := i * per
		if first >= total {
			break
		}
		cmd := base
		cmd.First, cmd.Count = base.First+first, min(per, total-first)
		cmd.MaxFailures = max(5, cmd.Count/100)
		l.progDone.Store(0)
		l.progFailed.Store(0)
		l.progRefused.Store(0)
		if err := l.send(cmd); err != nil {
			return sum, err
		}
		active = append(active, l)
	}
	type answer struct {
		ev  lgEvent
		err error
	}
	answers := make(chan answer, len(active))
	for _, l := range active {
		go func() {
			ev, err := l.await(ctx, evDialed, timeout)
			answers <- answer{ev, err}
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var errs []error
	var slowest time.Duration
	for got := 0; got < len(active); {
		select {
		case a := <-answers:
			got++
			if a.err != nil {
				errs = append(errs, a.err)
				continue
			}
			sum.OK += a.ev.Done
			sum.Failed += a.ev.Failed
			sum.Refused += a.ev.Refused
			sum.Errors = append(sum.Errors, a.ev.Errors...)
			slowest = max(slowest, a.ev.Elapsed)
			if a.ev.Err != "" {
				errs = append(errs, errors.New(a.ev.Err))
			}
		case <-tick.C:
			var done, failed, refused int64
			for _, l := range active {
				done += l.progDone.Load()
				failed += l.progFailed.Load()
				refused += l.progRefused.Load()
			}
			p.printf("%s: %d/%d subscribed, %d failed, %d refused with 503 and retried", label, done, total, failed, refused)
			if err := s.aliveAll(); err != nil {
				return sum, err
			}
		}
	}
	if ctx.Err() != nil {
		return sum, ctx.Err()
	}
	sum.Seconds = slowest.Seconds()
	if sum.Seconds > 0 {
		sum.Rate = float64(sum.OK) / sum.Seconds
	}
	p.printf("%s: %d/%d done in %.1fs (%.0f/s), %d failed, %d refused with 503 and retried", label, sum.OK, total, sum.Seconds, sum.Rate, sum.Failed, sum.Refused)
	if err := s.aliveAll(); err != nil {
		return sum, err
	}
	if len(errs) > 0 {
		msg := errors.Join(errs...).Error()
		if len(sum.Errors) > 0 {
			msg += "\nfirst errors:\n" + indent(strings.Join(sum.Errors, "\n"))
		}
		return sum, fmt.Errorf("%s: %s%s", label, msg, s.stderrNotes())
	}
	return sum, nil
}

// sources are the loopback source addresses the connections to one
// gateway bind to, about 4,000 connections each, so that ephemeral ports
// never run short (sourcesFor in cluster.go).
func sources(conns int) []string { return sourcesFor(0, conns) }

// stderrNotes is the stderr of every gateway.
func (s *session) stderrNotes() string {
	var b strings.Builder
	for _, g := range s.gws {
		b.WriteString(g.stderrNote())
	}
	return b.String()
}

// snapshot is the gateway's state at one moment.
type snapshot struct {
	At         time.Time
	Status     procStatus
	CPU        time.Duration
	Goroutines int
	Conns      int
}

func (g *gatewayProc) snapshot() (snapshot, error) {
	sn := snapshot{At: time.Now()}
	if err := g.alive(); err != nil {
		return sn, err
	}
	var err error
	if sn.Status, err = readStatus(g.pid); err != nil {
		return sn, err
	}
	if sn.CPU, err = readCPU(g.pid); err != nil {
		return sn, err
	}
	h, err := g.health()
	if err != nil {
		return sn, fmt.Errorf("gateway /healthz: %w%s", err, g.stderrNote())
	}
	sn.Goroutines, sn.Conns = h.Goroutines, h.Connections
	return sn, nil
}

// gatewayEnv is the gateway's environment for one run (the broker's
// settings go before it: see startNodes).
func gatewayEnv(o options, mode string) []string {
	env := []string{
		"SYNCGATE_SERVER_IO=" + mode,
		"SYNCGATE_CLIENT_PING_INTERVAL=" + o.PingInterval.String(),
	}
	return append(env, o.Env...)
}
