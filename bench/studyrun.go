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
	"slices"
	"syscall"
	"time"

	"github.com/syncgate/syncgate/bench/internal/proc"
	"github.com/syncgate/syncgate/bench/internal/report"
	"github.com/syncgate/syncgate/bench/internal/study"
)

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// runStudy runs the study in phases: build (or take) the gateway, run
// every backend that fits the time budget (runBackend), then print the
// tables and write the JSON and the document (finishStudy).
func runStudy(ctx context.Context, o studyOptions, out, logw io.Writer) (*study.Results, error) {
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
	bud := &study.Budget{Deadline: time.Now().Add(o.Budget), Hard: time.Now().Add(o.Limit - studyHardMargin), PerBackend: o.backendEstimate(), Now: time.Now}
	pl := o.plan()
	p.printf("plan: %d backends, %d searched (%d by the probe too) over %v msg/s; estimated %.0fs with every knee at the second step, %.0fs with every knee at the top one; budget %s, hard limit %s",
		pl.Backends, pl.Searched, pl.ProbeSearched, o.TputSteps, pl.Estimate(study.ReserveKnee).Seconds(), planEstimate(pl, -1).Seconds(), o.Budget, o.Limit)
	rs := newStudyResults(o)
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
	order := o.runOrder()
	for i, name := range order {
		if ctx.Err() != nil {
			break
		}
		spec := specs[name]
		b := study.Backend{Name: spec.Name, Type: spec.Type, Nodes: spec.Nodes, Note: spec.Note, Embedded: spec.embeddedBroker(), Killed: spec.victimName()}
		if !bud.Fits() {
			b.Skipped = fmt.Sprintf("not run: the study's time budget (%s) was spent", o.Budget)
			p.printf("=== %s: skipped (time budget)", name)
		} else if ok, why := supported(ctx, bin, tmp, spec.Type); !ok {
			b.Skipped = "broker.type " + spec.Type + " is not accepted by this gateway build"
			p.printf("=== %s: skipped (%s)", name, why)
		} else {
			t0 := time.Now()
			optional, probeTime, berrs := runBackend(ctx, o, spec, bin, tmp, bud.Allowance(len(order)-i, o.reserve(order[i:])), &b, p)
			errs = append(errs, berrs...)
			// The estimate is of a backend without the probe: the
			// probe's agreement runs are reserved apart (reserve).
			bud.Record(time.Since(t0) - optional - probeTime)
		}
		rs.Backends = append(rs.Backends, b)
	}
	// The tables keep the order of -backends, not the run's.
	slices.SortStableFunc(rs.Backends, func(a, b study.Backend) int {
		return slices.Index(o.Backends, a.Name) - slices.Index(o.Backends, b.Name)
	})
	rs.Finished = time.Now().UTC()
	errs = append(errs, finishStudy(ctx, o, root, rs, out)...)
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("stopped: %w", ctx.Err()))
	}
	return rs, errors.Join(errs...)
}

// newStudyResults is the results of a study about to run, with its
// parameters.
func newStudyResults(o studyOptions) *study.Results {
	return &study.Results{
		Scenario: "study", Mode: o.mode(), Command: commandLine(o.Args), Started: time.Now().UTC(), Machine: proc.ReadMachine(),
		Params: map[string]any{
			"latency_rates": o.Rates, "latency_channels": o.Channels, "latency_subs_per_channel": o.SubsPerChannel,
			"latency_duration_s": o.LatencyFor.Seconds(), "crash_rate": o.CrashRate, "crash_channels": o.CrashChannels,
			"crash_subs_per_channel": o.CrashSubs, "crash_duration_s": o.CrashFor.Seconds(), "crash_at_s": o.CrashAt.Seconds(),
			"crash_pause_s": o.CrashPause.Seconds(), "drain_s": o.Drain.Seconds(),
			"latency_reps": o.Reps, "throughput_steps": o.TputSteps, "throughput_duration_s": o.TputFor.Seconds(),
			"budget_s": o.Budget.Seconds(), "limit_s": o.Limit.Seconds(), "publish_overrun_s": studyOverrun.Seconds(),
			"probe_subs_per_channel": o.ProbeSubs, "probe_runs": o.ProbeRuns,
			"throughput_stride": o.TputStride, "throughput_search": o.Search,
			"warm_s": o.WarmFor.Seconds(), "confirm": o.Confirm, "confirm_factor": study.ConfirmFactor,
			"plan_estimate_top_s": planEstimate(o.plan(), -1).Round(time.Second).Seconds(),
		},
	}
}

// runBackend runs one backend's latency runs and throughput search, its
// agreement probe (the -probe rows; with the probe's own search
// where the study searches) and its crash run, filling b. allowance is
// the backend's optional time: the study's search may use it less what
// the probe's search is guaranteed (study.Plan.Reserve), the probe's
// search what the study's left. It returns the time spent on optional
// runs (both searches' new steps), the time of the probe's agreement
// runs, and the errors.
func runBackend(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, allowance time.Duration, b *study.Backend, p *progress) (
	optional, probeTime time.Duration, errs []error) {
	name := spec.Name
	search, probeSearch := o.searches(name)
	pl := o.plan()
	own := max(0, allowance-pl.Reserve(false, probeSearch))
	if search {
		p.printf("=== %s: latency and knee search (allowance %.0fs, the probe's search included: %.0fs) ===", name, own.Seconds(), allowance.Seconds())
	} else {
		p.printf("=== %s: latency (no knee search) ===", name)
	}
	var pa *probeAgreement
	var between func(context.Context)
	if o.probes(name) {
		pa = newProbeAgreement(o, spec, bin, tmp, p)
		between = pa.runNext
	}
	lat, tp, optional, err := studyLatencyThroughput(ctx, o, spec, bin, tmp, search, own, between, p)
	b.Latency, b.Throughput = lat, tp
	if err != nil {
		b.Errors = append(b.Errors, err.Error())
		errs = append(errs, fmt.Errorf("%s latency: %w", name, err))
		p.printf("%s latency failed: %v", name, err)
	}
	if ctx.Err() != nil {
		return optional, 0, errs
	}
	if pa != nil {
		// The probe's time: its agreement runs interleaved with the
		// latency runs, then the rest of it.
		t0, interleaved := time.Now(), pa.spent
		b.Agreement = studyAgreement(ctx, pa, lat, tp, probeSearch, allowance-optional)
		probeTime = interleaved + time.Since(t0)
		if pt := b.Agreement.ProbeTput; pt != nil {
			// The probe's new steps are optional time.
			n := min(probeTime, time.Duration(newSteps(pt))*pl.ProbeStepCost())
			optional, probeTime = optional+n, probeTime-n
		}
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
	return optional, probeTime, errs
}

// runOrder is the order the backends run in: those with a knee search
// first, so that the optional time the budget hands out greedily goes
// to the searches, and the backends that only need their mandatory runs
// (guaranteed by the budget) last.
func (o studyOptions) runOrder() []string {
	var first, last []string
	for _, b := range o.Backends {
		if s, _ := o.searches(b); s {
			first = append(first, b)
		} else {
			last = append(last, b)
		}
	}
	return append(first, last...)
}

// newSteps is how many runs of their own a search's steps took (a step
// run again counts twice).
func newSteps(t *study.Tput) int {
	n := 0
	for _, s := range t.Steps {
		if !s.FromLatency {
			n++
		}
		if s.FirstRun != nil {
			n++
		}
	}
	return n
}

// reserve is what the backends after the first of rest are guaranteed
// for their searches, and the probe's agreement runs of all of rest
// (the budget's per-backend estimate leaves them out).
func (o studyOptions) reserve(rest []string) time.Duration {
	pl := o.plan()
	var d time.Duration
	for i, n := range rest {
		s, pr := o.searches(n)
		if i > 0 {
			d += pl.Reserve(s, pr)
		}
		if o.probes(n) {
			d += pl.ProbeMandatory()
		}
	}
	return d
}

// planEstimate is the plan's estimate with every knee at the highest
// step at or below rate (rate < 0: the top step).
func planEstimate(pl study.Plan, rate float64) time.Duration {
	k := -1
	for i, r := range pl.Ladder {
		if r <= rate {
			k = i
		}
	}
	if rate < 0 {
		k = len(pl.Ladder) - 1
	}
	return pl.Estimate(k)
}

// finishStudy prints the tables and writes the JSON results and, unless
// the run was cut short, the document and its plots.
func finishStudy(ctx context.Context, o studyOptions, root string, rs *study.Results, out io.Writer) []error {
	var errs []error
	report.PrintStudy(out, rs)
	dir := o.Out
	if dir == "" {
		dir = filepath.Join(root, "bench", "results")
	}
	path, err := report.WriteStudyJSON(dir, rs)
	if err != nil {
		errs = append(errs, err)
	} else {
		fmt.Fprintf(out, "\nraw results: %s\n", path)
	}
	if o.Docs && ctx.Err() == nil {
		if err := report.WriteStudyDocs(root, rs); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintln(out, "docs: docs/benchmarks-study.md, docs/plots/study-latency-cdf.svg, docs/plots/study-crash-lost.svg, docs/plots/study-throughput.svg, docs/plots/study-latency-rate.svg")
		}
	}
	return errs
}

// runDir makes a fresh directory for one run's processes.
func runDir(tmp, name string) (string, error) {
	d, err := os.MkdirTemp(tmp, name+"-")
	return d, err
}

// studyLatencyThroughput runs the latency runs (every rate, Reps times)
// and then the throughput search on one set of processes: the cluster's
// nodes and brokers, and the loadgen processes connected to them once
// (studyRig). between, if set, runs after each latency run at the first
// rate (the probe's agreement runs, interleaved; the study's processes
// wait idle meanwhile). It returns the time spent on throughput steps
// that were not latency runs.
func studyLatencyThroughput(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, search bool, allowance time.Duration,
	between func(context.Context), p *progress) (lat []study.Run, tp *study.Tput, optional time.Duration, err error) {
	// The processes: the cluster and the loadgens connected to it
	// (studyRig). A run that failed (not sustained, or an error) may
	// leave them spent: a backlog in a broker or a gateway, publisher or
	// subscriber connections closed (an overloaded redis-sharded left a
	// third of the publishers gone, so that the next step, 500 msg/s,
	// "fell behind"); the run after it starts on fresh ones, as every
	// probe run does.
	var (
		c     *cluster
		rig   *studyRig
		spent bool
	)
	stop := func() {
		if rig != nil {
			rig.close()
		}
		if c != nil {
			c.close()
		}
		c, rig = nil, nil
	}
	defer stop()
	// start brings up fresh processes and, with o.WarmFor, has them carry
	// the next run's rate (not measured) first, as the probe's are.
	start := func(rate float64) error {
		dir, err := runDir(tmp, spec.Name+"-latency")
		if err != nil {
			return err
		}
		if c, err = startCluster(ctx, spec, bin, dir, false, p); err != nil {
			return err
		}
		if rig, err = newStudyRig(ctx, c, o.Channels, o.SubsPerChannel, p); err != nil {
			return err
		}
		if o.WarmFor > 0 {
			_, err = rig.run(ctx, rate, o.WarmFor, fmt.Sprintf("%s warm-up at %g msg/s, not measured", spec.Name, rate))
		}
		return err
	}
	first := 0.0
	if len(o.Rates) > 0 {
		first = o.Rates[0]
	} else if len(o.TputSteps) > 0 {
		first = o.TputSteps[0]
	}
	if err := start(first); err != nil {
		return nil, nil, 0, err
	}
	var errs []error
	run := func(rate float64, d time.Duration, label string) (study.Run, error) {
		if spent {
			p.printf("%s: fresh processes after the run that failed", spec.Name)
			stop()
			if err := start(rate); err != nil {
				return study.Run{Rate: rate, Error: err.Error()}, err
			}
			spent = false
		}
		r, err := rig.run(ctx, rate, d, label)
		if ok, _ := study.StepVerdict(r, spec.Nodes); err != nil || !ok {
			spent = true
		}
		return r, err
	}
	byRate := map[float64][]study.Run{}
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
			if between != nil && rate == o.Rates[0] {
				between(ctx) // the probe's agreement run, interleaved
			}
			if ctx.Err() != nil {
				return lat, nil, 0, errors.Join(append(errs, ctx.Err())...)
			}
		}
	}
	if len(o.TputSteps) == 0 {
		return lat, nil, 0, errors.Join(errs...)
	}
	if !search {
		return lat, &study.Tput{Stopped: fmt.Sprintf("not searched in %s mode (-search names the backends searched; -full searches all)", o.mode())}, 0, errors.Join(errs...)
	}
	p.printf("=== %s: throughput search over %v msg/s ===", spec.Name, o.TputSteps)
	t0 := time.Now()
	step := o.plan().StepCost()
	res := study.Search{Ladder: o.TputSteps, Stride: o.TputStride, Nodes: spec.Nodes, Confirm: o.Confirm,
		Reuse: func(rate float64) (study.Run, bool) {
			rs, ok := byRate[rate]
			if !ok {
				return study.Run{}, false
			}
			return study.MedianRun(rs), true
		},
		Allow: func(rate float64) bool {
			return ctx.Err() == nil && time.Since(t0)+step <= allowance
		},
		Run: func(rate float64) (study.Run, error) {
			return run(rate, o.TputFor, fmt.Sprintf("%s throughput %g msg/s", spec.Name, rate))
		}}.Coarse()
	optional = time.Since(t0)
	res.AllowanceS = allowance.Seconds()
	p.printf("%s: throughput: %s; knee: %s", spec.Name, res.Stopped, res.Knee())
	return lat, &res, optional, errors.Join(errs...)
}

func studyCrash(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, p *progress) (study.Run, error) {
	dir, err := runDir(tmp, spec.Name+"-crash")
	if err != nil {
		return study.Run{}, err
	}
	c, err := startCluster(ctx, spec, bin, dir, true, p)
	if err != nil {
		return study.Run{}, err
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

// studyFromFile prints the tables of a results file and, with docs,
// writes the docs from it (the document keeps the command and date of the
// run).
func studyFromFile(path string, docs bool, out io.Writer) error {
	root, err := proc.FindRepoRoot()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rs study.Results
	if err := json.Unmarshal(b, &rs); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	report.PrintStudy(out, &rs)
	if !docs {
		return nil
	}
	return report.WriteStudyDocs(root, &rs)
}

// studyHardMargin is kept free before the hard limit for writing the
// results and the docs.
const studyHardMargin = 15 * time.Second
