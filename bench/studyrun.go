//go:build linux

// studyrun.go runs the study over the backends and collects the results.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/syncgate/syncgate/bench/internal/proc"
	"github.com/syncgate/syncgate/bench/internal/report"
)

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// studyBackend is one backend's results.
type studyBackend struct {
	Name    string       `json:"name"`
	Type    string       `json:"broker_type"`
	Nodes   int          `json:"nodes"`
	Note    string       `json:"persistence"`
	Skipped string       `json:"skipped,omitempty"`
	Latency []loadResult `json:"latency,omitempty"` // every run, reps included
	Crash   *loadResult  `json:"crash,omitempty"`
	Errors  []string     `json:"errors,omitempty"`
	// Embedded says where the broker runs in the latency and throughput
	// runs when it is not a process of its own: its CPU is then part of
	// the gateway's ("" = own processes, measured apart).
	Embedded   string      `json:"broker_embedded,omitempty"`
	Killed     string      `json:"crash_killed,omitempty"` // which process the crash run kills
	Throughput *tputResult `json:"throughput,omitempty"`
	// Agreement: the study's latency against the minimal probe's at the
	// first latency rate (memory and redis rows).
	Agreement *report.Agreement `json:"agreement,omitempty"`
}

// studyResults is the JSON file and the input of the docs.
type studyResults struct {
	Scenario      string         `json:"scenario"`
	Mode          string         `json:"mode"`
	Command       string         `json:"command"`
	Started       time.Time      `json:"started"`
	Finished      time.Time      `json:"finished"`
	Machine       machineInfo    `json:"machine"`
	GatewaySource string         `json:"gateway_source"`
	Params        map[string]any `json:"params"`
	Backends      []studyBackend `json:"backends"`
}

func runStudy(ctx context.Context, o studyOptions, out, logw io.Writer) (*studyResults, error) {
	root, err := proc.FindRepoRoot()
	if err != nil {
		return nil, err
	}
	p := newProgress(logw)
	// The whole study is bounded: hard by Limit, soft by Budget.
	if o.Limit <= 0 {
		o.Limit = 5 * time.Minute
	}
	if o.Budget <= 0 || o.Budget > o.Limit {
		o.Budget = o.Limit
	}
	ctx, cancel := context.WithTimeout(ctx, o.Limit)
	defer cancel()
	bud := &studyBudget{deadline: time.Now().Add(o.Budget), hard: time.Now().Add(o.Limit - studyHardMargin), perBackend: o.backendEstimate(), now: time.Now}
	rs := &studyResults{
		Scenario: "study", Mode: o.mode(), Command: commandLine(o.Args), Started: time.Now().UTC(), Machine: machine(),
		Params: map[string]any{
			"latency_rates": o.Rates, "latency_channels": o.Channels, "latency_subs_per_channel": o.SubsPerChannel,
			"latency_duration_s": o.LatencyFor.Seconds(), "crash_rate": o.CrashRate, "crash_channels": o.CrashChannels,
			"crash_subs_per_channel": o.CrashSubs, "crash_duration_s": o.CrashFor.Seconds(), "crash_at_s": o.CrashAt.Seconds(),
			"crash_pause_s": o.CrashPause.Seconds(), "drain_s": o.Drain.Seconds(),
			"latency_reps": o.Reps, "throughput_steps": o.TputSteps, "throughput_duration_s": o.TputFor.Seconds(),
			"budget_s": o.Budget.Seconds(), "limit_s": o.Limit.Seconds(),
		},
	}
	tmp, err := os.MkdirTemp("", "syncgate-study-")
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
	specs := backendSpecs()
	var errs []error
	for i, name := range o.Backends {
		if ctx.Err() != nil {
			break
		}
		spec := specs[name]
		b := studyBackend{Name: spec.Name, Type: spec.Type, Nodes: spec.Nodes, Note: spec.Note, Embedded: spec.embeddedBroker(), Killed: spec.victimName()}
		remaining := len(o.Backends) - i
		if !bud.fits() {
			b.Skipped = fmt.Sprintf("not run: the study's time budget (%s) was spent", o.Budget)
			p.printf("=== %s: skipped (time budget)", name)
			rs.Backends = append(rs.Backends, b)
			continue
		}
		if ok, why := supported(ctx, bin, tmp, spec.Type); !ok {
			b.Skipped = "broker.type " + spec.Type + " is not accepted by this gateway build"
			p.printf("=== %s: skipped (%s)", name, why)
			rs.Backends = append(rs.Backends, b)
			continue
		}
		t0 := time.Now()
		allowance := bud.allowance(remaining)
		p.printf("=== %s: latency and throughput (throughput allowance %.0fs) ===", name, allowance.Seconds())
		lat, tp, optional, err := studyLatencyThroughput(ctx, o, spec, bin, tmp, allowance, p)
		b.Latency, b.Throughput = lat, tp
		if err != nil {
			b.Errors = append(b.Errors, err.Error())
			errs = append(errs, fmt.Errorf("%s latency: %w", name, err))
			p.printf("%s latency failed: %v", name, err)
		}
		if ctx.Err() != nil {
			rs.Backends = append(rs.Backends, b)
			break
		}
		if probeBackends[name] && len(o.Rates) > 0 && !o.NoProbe {
			b.Agreement = studyAgreement(ctx, o, spec, bin, tmp, lat, p)
		}
		p.printf("=== %s: crash ===", name)
		r, err := studyCrash(ctx, o, spec, bin, tmp, p)
		if err != nil {
			r.Error = err.Error()
			b.Errors = append(b.Errors, err.Error())
			errs = append(errs, fmt.Errorf("%s crash: %w", name, err))
			p.printf("%s crash failed: %v", name, err)
		}
		b.Crash = &r
		rs.Backends = append(rs.Backends, b)
		bud.record(time.Since(t0) - optional)
	}
	rs.Finished = time.Now().UTC()
	printStudy(out, rs)

	dir := o.Out
	if dir == "" {
		dir = filepath.Join(root, "bench", "results")
	}
	path, err := writeStudyJSON(dir, rs)
	if err != nil {
		errs = append(errs, err)
	} else {
		fmt.Fprintf(out, "\nraw results: %s\n", path)
	}
	if o.Docs && ctx.Err() == nil {
		if err := writeStudyDocs(root, rs); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintln(out, "docs: docs/benchmarks-study.md, docs/plots/study-latency-cdf.svg, docs/plots/study-crash-lost.svg, docs/plots/study-throughput.svg, docs/plots/study-latency-rate.svg")
		}
	}
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("stopped: %w", ctx.Err()))
	}
	return rs, errors.Join(errs...)
}

// runDir makes a fresh directory for one run's processes.
func runDir(tmp, name string) (string, error) {
	d, err := os.MkdirTemp(tmp, name+"-")
	return d, err
}

// studyLatencyThroughput runs the latency runs (every rate, Reps times)
// and then the throughput search on one set of processes; each run
// publishes on channels of its own. It returns the time spent on
// throughput steps that were not latency runs.
func studyLatencyThroughput(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, allowance time.Duration, p *progress) (
	lat []loadResult, tp *tputResult, optional time.Duration, err error) {
	dir, err := runDir(tmp, spec.Name+"-latency")
	if err != nil {
		return nil, nil, 0, err
	}
	c, err := startCluster(ctx, spec, bin, dir, false, p)
	if err != nil {
		return nil, nil, 0, err
	}
	defer c.close()
	runs := 0
	var errs []error
	run := func(rate float64, d time.Duration, label string) (loadResult, error) {
		for i, g := range c.nodes {
			if err := g.alive(); err != nil {
				return loadResult{Rate: rate, GatewayCPUS: -1, BrokerCPUS: -1}, fmt.Errorf("node %c: %w", 'A'+i, err)
			}
		}
		runs++
		return runLoad(ctx, c.urls(), loadSpec{
			Channels: o.Channels, SubsPerChannel: o.SubsPerChannel, Rate: rate,
			Duration: d, Drain: o.Drain, PublishTimeout: 5 * time.Second,
			Prefix: fmt.Sprintf("study%d-", runs), CPU: c.cpu,
		}, p, label, nil)
	}
	byRate := map[float64][]loadResult{}
	for _, rate := range o.Rates {
		for rep := range max(1, o.Reps) {
			label := fmt.Sprintf("%s %g msg/s", spec.Name, rate)
			if o.Reps > 1 {
				label += fmt.Sprintf(" run %d/%d", rep+1, o.Reps)
			}
			r, err := run(rate, o.LatencyFor, label)
			r.Rep = rep
			if err != nil {
				r.Error = err.Error()
				errs = append(errs, fmt.Errorf("%g msg/s: %w", rate, err))
			}
			lat = append(lat, r)
			byRate[rate] = append(byRate[rate], r)
			if ctx.Err() != nil {
				return lat, nil, 0, errors.Join(append(errs, ctx.Err())...)
			}
		}
	}
	if len(o.TputSteps) == 0 {
		return lat, nil, 0, errors.Join(errs...)
	}
	p.printf("=== %s: throughput search over %v msg/s ===", spec.Name, o.TputSteps)
	t0 := time.Now()
	res := searchThroughput(o.TputSteps, spec.Nodes,
		func(rate float64) (loadResult, bool) {
			rs, ok := byRate[rate]
			if !ok {
				return loadResult{}, false
			}
			return medianRun(rs), true
		},
		func(rate float64) bool {
			return ctx.Err() == nil && time.Since(t0)+o.runEstimate(o.TputFor) <= allowance
		},
		func(rate float64) (loadResult, error) {
			return run(rate, o.TputFor, fmt.Sprintf("%s throughput %g msg/s", spec.Name, rate))
		})
	optional = time.Since(t0)
	res.AllowanceS = allowance.Seconds()
	p.printf("%s: throughput: %s", spec.Name, res.Stopped)
	return lat, &res, optional, errors.Join(errs...)
}

func studyCrash(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, p *progress) (loadResult, error) {
	dir, err := runDir(tmp, spec.Name+"-crash")
	if err != nil {
		return loadResult{}, err
	}
	c, err := startCluster(ctx, spec, bin, dir, true, p)
	if err != nil {
		return loadResult{}, err
	}
	defer c.close()
	var restartErr error
	during := func(ctx context.Context, start time.Time, event func(string, ...any)) {
		if sleepCtx(ctx, time.Until(start.Add(o.CrashAt))) != nil {
			return
		}
		what, pid := c.crash()
		event("kill -9 %s (pid %d)", what, pid)
		if sleepCtx(ctx, o.CrashPause) != nil {
			return
		}
		t := time.Now()
		pid, err := c.restart(ctx)
		if err != nil {
			restartErr = err
			event("restart failed: %v", err)
			return
		}
		event("restarted (pid %d), ready in %.2fs", pid, time.Since(t).Seconds())
	}
	r, err := runLoad(ctx, c.urls(), loadSpec{
		Channels: o.CrashChannels, SubsPerChannel: o.CrashSubs, Rate: o.CrashRate,
		Duration: o.CrashFor, Drain: o.Drain, PublishTimeout: 2 * time.Second,
		DropAt: o.CrashAt + o.CrashPause/2, ResubAt: o.CrashAt + o.CrashPause + 2*time.Second,
	}, p, spec.Name+" crash", during)
	if err == nil {
		err = restartErr
	}
	return r, err
}

// studyFromFile prints the tables of a results file and writes the docs
// from it (the document keeps the command and date of the run).
func studyFromFile(path string, out io.Writer) error {
	root, err := proc.FindRepoRoot()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rs studyResults
	if err := json.Unmarshal(b, &rs); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	printStudy(out, &rs)
	return writeStudyDocs(root, &rs)
}

// ---- time budget ----

// studyHardMargin is kept free before the hard limit for writing the
// results and the docs.
const studyHardMargin = 15 * time.Second

// studyBudget keeps the study within its limits: a backend whose
// mandatory runs (latency, crash) no longer fit before the hard deadline
// is skipped, and each backend may spend on throughput steps its share of
// what the mandatory runs of the remaining backends leave before the
// soft deadline.
type studyBudget struct {
	deadline   time.Time     // soft
	hard       time.Time     // the hard limit less a margin
	perBackend time.Duration // estimate of one backend's mandatory runs
	measured   []time.Duration
	now        func() time.Time
}

// estimate is the mean of the measured mandatory times, or the first
// guess before any.
func (b *studyBudget) estimate() time.Duration {
	if len(b.measured) == 0 {
		return b.perBackend
	}
	var sum time.Duration
	for _, d := range b.measured {
		sum += d
	}
	return sum / time.Duration(len(b.measured))
}

func (b *studyBudget) left() time.Duration { return b.deadline.Sub(b.now()) }

// fits: the next backend's mandatory runs (estimate + 10%) fit before
// the hard deadline.
func (b *studyBudget) fits() bool { return b.hard.Sub(b.now()) >= b.estimate()*11/10 }

// allowance is the throughput time of the next backend, remaining
// backends included this one.
func (b *studyBudget) allowance(remaining int) time.Duration {
	spare := b.left() - time.Duration(remaining)*b.estimate()
	return max(0, spare/time.Duration(max(1, remaining)))
}

func (b *studyBudget) record(mandatory time.Duration) { b.measured = append(b.measured, mandatory) }

// ---- throughput search ----

// tputP99Limit and the absence of loss make a step sustained.
const tputP99Limit = 50.0 // ms

// tputStep is one offered rate of the search.
type tputStep struct {
	Rate float64 `json:"rate"`
	// FromLatency: the step is the latency run(s) at this rate (their
	// medians), not a run of its own.
	FromLatency bool       `json:"from_latency,omitempty"`
	Pass        bool       `json:"pass"`
	Why         string     `json:"why,omitempty"` // why it did not pass
	Result      loadResult `json:"result"`
}

// tputResult is one backend's throughput search.
type tputResult struct {
	Steps []tputStep `json:"steps"`
	// Max is the highest offered rate sustained (0: not even the first).
	Max        float64 `json:"max_rate"`
	Stopped    string  `json:"stopped"` // why the search ended
	AllowanceS float64 `json:"allowance_s"`
}

// best is the step the table reports: the highest sustained one, else
// the first one run (nil if none).
func (t *tputResult) best() *tputStep {
	if t == nil || len(t.Steps) == 0 {
		return nil
	}
	for i := len(t.Steps) - 1; i >= 0; i-- {
		if t.Steps[i].Pass {
			return &t.Steps[i]
		}
	}
	return &t.Steps[0]
}

// stepP99 is the p99 a step is judged by: cross-node with two nodes,
// else the (only) node's.
func stepP99(r loadResult, nodes int) latStats {
	if nodes > 1 {
		return r.CrossNode
	}
	return r.SameNode
}

// stepVerdict says whether a run sustained its rate: no error, every
// message published on time and acked, none lost, p99 under the limit.
func stepVerdict(r loadResult, nodes int) (bool, string) {
	s := stepP99(r, nodes)
	which := "cross p99"
	if nodes <= 1 {
		which = "p99"
	}
	switch {
	case r.Error != "":
		return false, "error: " + firstLine(r.Error)
	case r.Scheduled == 0:
		return false, "nothing published"
	case r.Unsent > 0:
		return false, fmt.Sprintf("publishers fell behind (%d of %d never sent)", r.Unsent, r.Scheduled)
	case r.Refused > 0:
		return false, fmt.Sprintf("%d publishes refused", r.Refused)
	case r.Lost > 0:
		return false, fmt.Sprintf("%d deliveries lost", r.Lost)
	case s.Count == 0:
		return false, "no deliveries measured"
	case s.P99 >= tputP99Limit:
		return false, fmt.Sprintf("%s %.1f ms >= %.0f ms", which, s.P99, tputP99Limit)
	}
	return true, ""
}

// searchThroughput tries the steps in order and stops at the first that
// fails. reuse gives the latency runs' result at a rate if there is one;
// otherwise, if allow says there is time, run measures the rate.
func searchThroughput(steps []float64, nodes int, reuse func(float64) (loadResult, bool), allow func(float64) bool,
	run func(float64) (loadResult, error)) tputResult {
	var res tputResult
	for i, rate := range steps {
		r, from := reuse(rate)
		if !from {
			if !allow(rate) {
				res.Stopped = fmt.Sprintf("time budget: %g msg/s and up not run", rate)
				break
			}
			var err error
			if r, err = run(rate); err != nil && r.Error == "" {
				r.Error = err.Error()
			}
		}
		pass, why := stepVerdict(r, nodes)
		r.SameNode.CDF, r.CrossNode.CDF, r.All.CDF = nil, nil, nil
		res.Steps = append(res.Steps, tputStep{Rate: rate, FromLatency: from, Pass: pass, Why: why, Result: r})
		if !pass {
			res.Stopped = fmt.Sprintf("%g msg/s not sustained: %s", rate, why)
			break
		}
		res.Max = rate
		if i == len(steps)-1 {
			res.Stopped = fmt.Sprintf("every step sustained up to the search's bound (%g msg/s)", rate)
		}
	}
	if len(steps) == 0 {
		res.Stopped = "no steps"
	}
	return res
}

// medianRun summarises the repetitions of a latency run: latency
// percentiles, deliveries/s and CPU are the medians over the runs, the
// counts (published, acked, lost, duplicates...) their sums; the CDF is
// the one of the run with the median cross-node (else same-node) p99.
func medianRun(runs []loadResult) loadResult {
	if len(runs) == 0 {
		return loadResult{}
	}
	if len(runs) == 1 {
		return runs[0]
	}
	med := func(f func(loadResult) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	medStats := func(g func(loadResult) latStats) latStats {
		return latStats{
			Count: int64(med(func(r loadResult) float64 { return float64(g(r).Count) })),
			P50:   med(func(r loadResult) float64 { return g(r).P50 }),
			P90:   med(func(r loadResult) float64 { return g(r).P90 }),
			P99:   med(func(r loadResult) float64 { return g(r).P99 }),
			P999:  med(func(r loadResult) float64 { return g(r).P999 }),
			Max:   med(func(r loadResult) float64 { return g(r).Max }),
		}
	}
	// The base: the run with the median p99.
	order := make([]int, len(runs))
	for i := range order {
		order[i] = i
	}
	key := func(r loadResult) float64 {
		if r.CrossNode.Count > 0 {
			return r.CrossNode.P99
		}
		return r.SameNode.P99
	}
	sort.SliceStable(order, func(a, b int) bool { return key(runs[order[a]]) < key(runs[order[b]]) })
	out := runs[order[len(order)/2]]
	out.Events, out.Reasons = nil, map[string]int{}
	sameCDF, crossCDF, allCDF := out.SameNode.CDF, out.CrossNode.CDF, out.All.CDF
	out.SameNode, out.CrossNode, out.All = medStats(func(r loadResult) latStats { return r.SameNode }),
		medStats(func(r loadResult) latStats { return r.CrossNode }), medStats(func(r loadResult) latStats { return r.All })
	out.SameNode.CDF, out.CrossNode.CDF, out.All.CDF = sameCDF, crossCDF, allCDF
	out.DeliveriesPerS = med(func(r loadResult) float64 { return r.DeliveriesPerS })
	out.WindowS = med(func(r loadResult) float64 { return r.WindowS })
	out.Deliveries = int64(med(func(r loadResult) float64 { return float64(r.Deliveries) }))
	cpu := func(f func(loadResult) float64) float64 {
		for _, r := range runs {
			if f(r) < 0 {
				return -1
			}
		}
		return med(f)
	}
	out.GatewayCPUS = cpu(func(r loadResult) float64 { return r.GatewayCPUS })
	out.BrokerCPUS = cpu(func(r loadResult) float64 { return r.BrokerCPUS })
	out.Scheduled, out.Acked, out.Refused, out.Unsent = 0, 0, 0, 0
	out.Expected, out.Delivered, out.Lost, out.LostStayed, out.LostDropped, out.LostMsgs = 0, 0, 0, 0, 0, 0
	out.Dup, out.OutOfOrder, out.RefusedDelivered = 0, 0, 0
	out.PublishLagMaxMs, out.Incomplete, out.Error = 0, false, ""
	out.LoadStart, out.LoadEnd = runs[0].LoadStart, runs[len(runs)-1].LoadEnd
	var errs []string
	for _, r := range runs {
		out.Scheduled += r.Scheduled
		out.Acked += r.Acked
		out.Refused += r.Refused
		out.Unsent += r.Unsent
		out.Expected += r.Expected
		out.Delivered += r.Delivered
		out.Lost += r.Lost
		out.LostStayed += r.LostStayed
		out.LostDropped += r.LostDropped
		out.LostMsgs += r.LostMsgs
		out.Dup += r.Dup
		out.OutOfOrder += r.OutOfOrder
		out.RefusedDelivered += r.RefusedDelivered
		out.PublishLagMaxMs = max(out.PublishLagMaxMs, r.PublishLagMaxMs)
		out.Incomplete = out.Incomplete || r.Incomplete
		for k, v := range r.Reasons {
			out.Reasons[k] += v
		}
		if r.Error != "" {
			errs = append(errs, r.Error)
		}
	}
	out.Error = strings.Join(errs, "; ")
	return out
}
