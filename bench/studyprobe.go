//go:build linux

// studyprobe.go keeps the study honest about its own harness: it runs a
// second, independent probe (the fanout scenario's raw-frame loadgen
// processes, at the study's subscribers per channel unless -probe-subs
// says otherwise) in the same invocation, checks the study's latency
// against it (internal/study's Check) and, where the study searches the
// backend's knee, searches the probe's on the same ladder with the same
// rule and compares the two (study.CompareKnees); internal/report writes
// the verdicts and what the harness adds into the reading.
package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/syncgate/syncgate/bench/internal/study"
)

// probeRun is one run of the fanout scenario as the probe for one
// backend: the same channels as the study's runs, rate msg/s in total for
// d, o.ProbeSubs subscribers per channel spread over the backend's nodes
// (publishers on node A), raw frames from loadgen processes of their own,
// on gateway and broker processes of their own started fresh for this
// run. Its result is in the study's terms (probeResult), so that the
// study's step rule (study.StepVerdict) judges it.
func probeRun(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, rate float64, d time.Duration, label string, p *progress) (study.Run, error) {
	subs := o.Channels * o.ProbeSubs
	settle := time.Second // without a warm-up; after one, the wait for idle nodes is enough
	if o.WarmFor > 0 {
		settle = 0
	}
	args := []string{"fanout", "-broker", spec.Type,
		"-subs", strconv.Itoa(subs), "-channels", strconv.Itoa(o.Channels),
		"-rate", strconv.FormatFloat(rate/float64(o.Channels), 'f', -1, 64),
		"-duration", d.String(), "-settle", settle.String()}
	fo, err := parseArgs(args)
	if err != nil {
		return study.Run{Rate: rate, Error: err.Error()}, fmt.Errorf("probe: %w", err)
	}
	// The fanout command takes one node; runFanout spreads the subscribers
	// over as many as the backend's row has (publishers on node A).
	fo.Gateways = spec.Nodes
	// The backend is the row's own, started as the study starts it: the
	// same broker processes and persistence (AOF, shards, cluster, NATS
	// storage) and the same gateway settings (studyEnv: no publish rate
	// cap, among others). The fanout scenario's own nodes would measure
	// an unpersisted single redis-server and gateways on their defaults
	// (a 100 msg/s publish cap per connection refused a third of the
	// publishes at 16000 msg/s over 100 channels).
	fo.Backend = func(ctx context.Context, s *session, dir string, p *progress) error {
		c, err := startCluster(ctx, spec, bin, dir, false, p)
		if err != nil {
			return err
		}
		s.gws, s.gw, s.brokers = c.nodes, c.nodes[0], c.brokers
		return nil
	}
	fo.Overrun = studyOverrun
	fo.Warmup = o.WarmFor
	dir, err := runDir(tmp, "probe-"+spec.Name)
	if err != nil {
		return study.Run{Rate: rate, Error: err.Error()}, err
	}
	p.printf("%s: fanout %d subscribers, %d channels, %.0f msg/s for %s", label, subs, o.Channels, rate, d)
	t0 := time.Now()
	load0 := loadAvg()
	res, _, err := runFanout(ctx, fo, fo.IO, spec.Type, bin, dir, p)
	r := probeResult(res, rate, d)
	r.LoadStart, r.LoadEnd = load0, loadAvg()
	if err != nil && (res == nil || res.Expected == 0 || (r.Lost == 0 && r.Unsent == 0 && r.Refused == 0)) {
		// Not a failure the counts already show (loss, unsent, unacked).
		r.Error = err.Error()
	}
	p.printf("%s: p50 %.2f ms p99 %.2f ms (cross %.2f), lost %d (%.0fs)", label, r.All.P50, r.All.P99, r.CrossNode.P99, r.Lost, time.Since(t0).Seconds())
	return r, err
}

// probeResult is a fanout run in the study's terms: its counts, its
// latency over all subscribers and per node (node B's is the cross-node
// one), its publishers' lag, and its CPU over the measured window.
func probeResult(res *fanoutResult, rate float64, d time.Duration) study.Run {
	r := study.Run{Rate: rate, DurationS: d.Seconds(), GatewayCPUS: -1, BrokerCPUS: -1, HarnessCPUS: -1}
	if res == nil {
		return r
	}
	lat := func(l latencyStats) study.LatStats {
		return study.LatStats{Count: l.Count, P50: l.P50, P90: l.P90, P99: l.P99, P999: l.P999, Max: l.Max}
	}
	r.Channels, r.Subs = res.Channels, res.Subs
	r.Scheduled, r.Unsent = res.Scheduled, max(0, res.Scheduled-res.Published)
	r.Acked = int(min(res.PubAcks, int64(res.Published)))
	r.Refused = res.Published - r.Acked
	r.PublishLagMaxMs, r.PublishLagP99Ms = res.MaxPubLagMs, res.PubLagP99Ms
	r.Expected, r.Delivered, r.Lost = int(res.Expected), int(res.Received), int(res.Lost)
	r.LostMsgs, r.Dup, r.OutOfOrder = res.ToLastMissing, int(res.Duplicates), int(res.OutOfOrder)
	r.All = lat(res.Latency)
	r.SameNode = r.All
	if len(res.NodeLatency) > 1 {
		r.SameNode, r.CrossNode = lat(res.NodeLatency[0]), lat(res.NodeLatency[1])
	}
	r.WindowS, r.Deliveries, r.DeliveriesPerS = res.WindowS, res.Received, res.DeliveriesPerSec
	if res.Received > 0 {
		r.GatewayCPUS, r.BrokerCPUS, r.HarnessCPUS = res.GatewayCPUS, res.BrokerCPUS, res.LoadgenCPUS
	}
	return r
}

// probeAgreement is the probe's agreement runs on one backend: o.ProbeRuns
// runs at the first latency rate, each on fresh processes (probeRun). The
// study runs them interleaved with its own latency runs at that rate (one
// after each: runNext), so that a drift of the machine over the minute
// the two take (a disk's flush times, another tenant's load) reaches both
// sides alike instead of the one measured later; studyAgreement runs any
// left.
type probeAgreement struct {
	o        studyOptions
	spec     backendSpec
	bin, tmp string
	p        *progress
	a        study.Agreement
	runs     []study.Run // those that measured latency
	tried    int
	stopped  bool          // a run measured nothing: no more runs
	spent    time.Duration // the runs' wall time
}

func newProbeAgreement(o studyOptions, spec backendSpec, bin, tmp string, p *progress) *probeAgreement {
	return &probeAgreement{o: o, spec: spec, bin: bin, tmp: tmp, p: p,
		a: study.Agreement{Backend: spec.Name, Rate: o.Rates[0], ProbeSubsPerChannel: o.ProbeSubs}}
}

// runNext runs the next agreement run, if any is left. A failed probe
// run is an agreement that does not hold, with the error; a run that
// measured latency still is the probe search's first step, judged by
// the step rule.
func (pa *probeAgreement) runNext(ctx context.Context) {
	n := max(1, pa.o.ProbeRuns)
	if pa.stopped || pa.tried >= n || ctx.Err() != nil {
		return
	}
	pa.tried++
	t0 := time.Now()
	defer func() { pa.spent += time.Since(t0) }()
	label := fmt.Sprintf("%s probe %d/%d", pa.spec.Name, pa.tried, n)
	r, err := probeRun(ctx, pa.o, pa.spec, pa.bin, pa.tmp, pa.a.Rate, pa.o.LatencyFor, label, pa.p)
	if err == nil && r.All.Count == 0 {
		err = fmt.Errorf("no deliveries measured")
	}
	if err != nil {
		pa.a.Error = err.Error()
		pa.p.printf("%s probe failed: %v", pa.spec.Name, err)
	}
	if r.All.Count == 0 {
		pa.stopped = true
		return
	}
	pa.runs = append(pa.runs, r)
	pa.a.ProbeLost += int64(r.Lost)
}

// studyAgreement finishes the probe for one backend: the agreement runs
// not run yet, their median against the study's median latency at that
// rate (study.Check) and, with search, the probe's own throughput search
// on the study's ladder, its step at that rate the agreement runs, its
// new steps within allowance, compared with the study's (tp:
// study.CompareKnees).
func studyAgreement(ctx context.Context, pa *probeAgreement, lat []study.Run, tp *study.Tput, search bool, allowance time.Duration) *study.Agreement {
	o, spec, bin, tmp, p := pa.o, pa.spec, pa.bin, pa.tmp, pa.p
	for pa.tried < max(1, o.ProbeRuns) && !pa.stopped && ctx.Err() == nil {
		pa.runNext(ctx)
	}
	rate, a, runs := pa.a.Rate, pa.a, pa.runs
	if a.ProbeRuns = len(runs); a.ProbeRuns > 0 {
		var p50s, p99s, cpus []float64
		for _, r := range runs {
			p50s, p99s = append(p50s, r.All.P50), append(p99s, r.All.P99)
			cpus = append(cpus, study.CPUPerM(r.HarnessCPUS, r.Deliveries))
		}
		a.ProbeP50, a.ProbeP99, a.ProbeHarnessCPU = study.Median(p50s), study.Median(p99s), study.Median(cpus)
	}
	if r, ok := (study.Backend{Latency: lat}).LatencyAt(rate); ok {
		a.StudyP50, a.StudyP99 = r.All.P50, r.All.P99
		if r.HarnessCPUS > 0 {
			a.StudyHarnessCPU = study.CPUPerM(r.HarnessCPUS, r.Deliveries)
		}
	}
	a = study.Check(a)
	if !search || ctx.Err() != nil {
		return &a
	}
	t0 := time.Now()
	step := o.plan().ProbeStepCost()
	s := study.Search{Ladder: o.TputSteps, Stride: o.TputStride, Nodes: spec.Nodes, Confirm: o.Confirm,
		Reuse: func(r float64) (study.Run, bool) {
			if r != rate || len(runs) == 0 {
				return study.Run{}, false
			}
			return study.MedianRun(runs), true
		},
		Allow: func(float64) bool { return ctx.Err() == nil && time.Since(t0)+step <= allowance },
		Run: func(r float64) (study.Run, error) {
			return probeRun(ctx, o, spec, bin, tmp, r, o.TputFor, fmt.Sprintf("%s probe throughput %g msg/s", spec.Name, r), p)
		}}
	// From the study's knee when it has one (two runs when the two
	// agree; step by step to the probe's own knee when they do not),
	// else coarse then fine as the study searches.
	var res study.Tput
	if lo, hi, ok := tp.KneeRange(); ok && lo == hi {
		p.printf("=== %s: the probe's throughput search over %v msg/s from the study's knee, %s (allowance %.0fs) ===", spec.Name, o.TputSteps, tp.Knee(), allowance.Seconds())
		res = s.From(lo)
	} else {
		p.printf("=== %s: the probe's throughput search over %v msg/s (allowance %.0fs) ===", spec.Name, o.TputSteps, allowance.Seconds())
		res = s.Coarse()
	}
	res.AllowanceS = allowance.Seconds()
	a.ProbeTput = &res
	k := study.CompareKnees(tp, &res)
	a.Knee = &k
	p.printf("%s: the probe's knee: %s; the study's: %s; %s %s", spec.Name, res.Knee(), tp.Knee(), k.Verdict, k.Why)
	return &a
}
