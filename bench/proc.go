//go:build linux

// proc.go holds the scenarios' child processes, started and stopped with
// package bench/internal/proc: the gateway (built once with go build, run
// on a random loopback port) and the loadgen processes (this binary
// re-executed, spoken to with JSON lines on stdin/stdout). A gateway is
// stopped with SIGTERM, a loadgen by closing its stdin, then SIGKILL after
// a timeout.
package main

import (
	"bufio"
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
	"time"

	"github.com/syncgate/syncgate/bench/internal/proc"
)

// ---- the gateway process ----

// gatewayProc is a running gateway.
type gatewayProc struct {
	child  *proc.Child
	pid    int
	addr   string // 127.0.0.1:port
	stderr *proc.TailBuffer
	done   <-chan struct{} // closed once the process has exited
	client *http.Client
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
		port, err := proc.FreePort()
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

func launchGateway(bin, dir string, port int, env []string) (*gatewayProc, error) {
	g := &gatewayProc{
		addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		stderr: proc.NewTailBuffer(64 << 10),
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
	natsPort, err := proc.FreePort()
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
	if g.child, err = proc.Start(cmd, nil); err != nil {
		return nil, fmt.Errorf("starting the gateway: %w", err)
	}
	g.pid, g.done = g.child.PID(), g.child.Done()
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
		return fmt.Errorf("gateway (pid %d) exited: %s%s", g.pid, g.child.State(), g.stderrNote())
	default:
		return nil
	}
}

func (g *gatewayProc) stderrNote() string {
	if s := strings.TrimSpace(g.stderr.String()); s != "" {
		return "\ngateway stderr:\n" + proc.Indent(s)
	}
	return ""
}

// stop sends SIGTERM (graceful shutdown) and SIGKILL after timeout. It
// reports how the process ended.
func (g *gatewayProc) stop(timeout time.Duration) string {
	return g.child.Terminate(timeout)
}

// ---- the loadgen processes ----

// loadgenProc is a running loadgen child.
type loadgenProc struct {
	id     int
	child  *proc.Child
	pid    int
	stdin  io.WriteCloser
	events chan lgEvent    // every event but progress; closed at exit
	done   <-chan struct{} // closed once the process has exited
	stderr *proc.TailBuffer
	// From progress events, for the parent's progress lines.
	progDone, progFailed, progRefused atomic.Int64
}

func startLoadgen(id int) (*loadgenProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	l := &loadgenProc{id: id, events: make(chan lgEvent, 16), stderr: proc.NewTailBuffer(16 << 10)}
	cmd := exec.Command(exe, loadgenArg)
	cmd.Stderr = l.stderr
	if l.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// Events are read to the end of stdout before the process is waited
	// for, as exec requires.
	read := func() {
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
	}
	if l.child, err = proc.Start(cmd, read); err != nil {
		return nil, fmt.Errorf("starting loadgen: %w", err)
	}
	l.pid, l.done = l.child.PID(), l.child.Done()
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
			return ev, fmt.Errorf("loadgen %d (pid %d) exited (%s) while waiting for %q%s", l.id, l.pid, l.child.State(), want, l.stderrNote())
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
		return "\nloadgen stderr:\n" + proc.Indent(s)
	}
	return ""
}

// stop closes stdin (the loadgen then closes its connections and exits)
// and kills it if it has not exited within timeout.
func (l *loadgenProc) stop(timeout time.Duration) {
	_ = l.stdin.Close()
	l.child.WaitOrKill(timeout)
}

// ---- a run's processes ----

// session owns the processes of one scenario run and stops them all, in
// order, whatever happens: loadgens first (clients close their
// connections), then the gateway.
type session struct {
	gw  *gatewayProc   // gws[0]
	gws []*gatewayProc // every gateway node, in start order
	// brokers: the shared broker processes, if any (stopped last, in
	// parallel).
	brokers []*brokerProc
	lgs     []*loadgenProc
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
	for _, b := range s.brokers {
		wg.Go(b.stop)
	}
	wg.Wait()
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
		if c, err := proc.ReadCPU(l.pid); err == nil {
			total += c
		}
	}
	return total
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
			msg += "\nfirst errors:\n" + proc.Indent(strings.Join(sum.Errors, "\n"))
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
	Status     proc.Status
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
	if sn.Status, err = proc.ReadStatus(g.pid); err != nil {
		return sn, err
	}
	if sn.CPU, err = proc.ReadCPU(g.pid); err != nil {
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
