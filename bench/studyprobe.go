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
	args := []string{"fanout", "-broker", spec.Type,
		"-subs", strconv.Itoa(subs), "-channels", strconv.Itoa(o.Channels),
		"-rate", strconv.FormatFloat(rate/float64(o.Channels), 'f', -1, 64),
		"-duration", d.String(), "-settle", "1s"}
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

// studyAgreement runs the probe for one backend: o.ProbeRuns runs at the
// first latency rate (their median against the study's median latency
// there: study.Check) and, with search, the probe's own throughput search
// on the study's ladder, its first step the agreement runs, its new
// steps within allowance, compared with the study's (tp:
// study.CompareKnees). A failed probe run is an agreement that does not
// hold, with the error.
func studyAgreement(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, lat []study.Run, tp *study.Tput,
	search bool, allowance time.Duration, p *progress) *study.Agreement {
	rate := o.Rates[0]
	a := study.Agreement{Backend: spec.Name, Rate: rate, ProbeSubsPerChannel: o.ProbeSubs}
	var runs []study.Run
	var p50s, p99s, cpus []float64
	for run := range max(1, o.ProbeRuns) {
		label := fmt.Sprintf("%s probe %d/%d", spec.Name, run+1, max(1, o.ProbeRuns))
		r, err := probeRun(ctx, o, spec, bin, tmp, rate, o.LatencyFor, label, p)
		if err == nil && r.All.Count == 0 {
			err = fmt.Errorf("no deliveries measured")
		}
		if err != nil {
			// Not a reference (loss, publishers behind, a failure):
			// the agreement does not hold; a run that measured
			// latency still is the search's first step, judged by
			// the step rule.
			a.Error = err.Error()
			p.printf("%s probe failed: %v", spec.Name, err)
		}
		if r.All.Count == 0 {
			break
		}
		runs = append(runs, r)
		p50s, p99s = append(p50s, r.All.P50), append(p99s, r.All.P99)
		cpus = append(cpus, study.CPUPerM(r.HarnessCPUS, r.Deliveries))
		a.ProbeLost += int64(r.Lost)
		a.ProbeRuns++
	}
	if a.ProbeRuns > 0 {
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
	p.printf("=== %s: the probe's throughput search over %v msg/s (allowance %.0fs) ===", spec.Name, o.TputSteps, allowance.Seconds())
	t0 := time.Now()
	step := o.plan().ProbeStepCost()
	res := study.SearchThroughput(o.TputSteps, o.TputStride, spec.Nodes,
		func(r float64) (study.Run, bool) {
			if r != rate || len(runs) == 0 {
				return study.Run{}, false
			}
			return study.MedianRun(runs), true
		},
		func(float64) bool { return ctx.Err() == nil && time.Since(t0)+step <= allowance },
		func(r float64) (study.Run, error) {
			return probeRun(ctx, o, spec, bin, tmp, r, o.TputFor, fmt.Sprintf("%s probe throughput %g msg/s", spec.Name, r), p)
		})
	res.AllowanceS = allowance.Seconds()
	a.ProbeTput = &res
	k := study.CompareKnees(tp, &res)
	a.Knee = &k
	p.printf("%s: the probe's knee: %s; the study's: %s; %s %s", spec.Name, res.Knee(), tp.Knee(), k.Verdict, k.Why)
	return &a
}
