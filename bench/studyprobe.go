//go:build linux

// studyprobe.go keeps the study honest about its own harness: it runs a
// second, independent probe (the fanout scenario's raw-frame loadgen
// processes, at the study's subscribers per channel unless -probe-subs
// says otherwise) in the same invocation and checks
// the study's latency against it (internal/study's Check); internal/report
// writes the verdict and what the harness adds into the reading.
package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/syncgate/syncgate/bench/internal/study"
)

// probeBackends are the rows the probe runs on.
var probeBackends = map[string]bool{"memory": true, "redis": true}

// runProbe runs the fanout scenario as the probe for one backend:
// the same channels and total rate as the study's latency run,
// o.ProbeSubs subscribers per channel spread over the backend's nodes,
// raw frames from loadgen processes of their own, on gateway and broker
// processes of their own, started fresh for each of o.ProbeRuns runs; the
// latency is the median of the runs'.
func runProbe(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, rate float64, p *progress) (study.Agreement, error) {
	a := study.Agreement{Backend: spec.Name, Rate: rate, ProbeSubsPerChannel: o.ProbeSubs}
	subs := o.Channels * o.ProbeSubs
	args := []string{"fanout", "-broker", spec.Type,
		"-subs", strconv.Itoa(subs), "-channels", strconv.Itoa(o.Channels),
		"-rate", strconv.FormatFloat(rate/float64(o.Channels), 'f', -1, 64),
		"-duration", o.LatencyFor.String(), "-settle", "1s"}
	fo, err := parseArgs(args)
	if err != nil {
		return a, fmt.Errorf("probe: %w", err)
	}
	// The fanout command takes one node; runFanout spreads the subscribers
	// over as many as the backend's row has (publishers on node A).
	fo.Gateways = spec.Nodes
	var p50s, p99s, cpus []float64
	for run := range max(1, o.ProbeRuns) {
		dir, err := runDir(tmp, "probe-"+spec.Name)
		if err != nil {
			return a, err
		}
		p.printf("%s probe %d/%d: fanout %d subscribers, %d channels, %.0f msg/s for %s", spec.Name, run+1, max(1, o.ProbeRuns), subs, o.Channels, rate, o.LatencyFor)
		t0 := time.Now()
		res, _, err := runFanout(ctx, fo, fo.IO, spec.Type, bin, dir, p)
		if err != nil {
			return a, fmt.Errorf("probe: %w", err)
		}
		p50s, p99s = append(p50s, res.Latency.P50), append(p99s, res.Latency.P99)
		cpus = append(cpus, study.CPUPerM(res.LoadgenCPUS, res.Received))
		a.ProbeLost += res.Lost
		a.ProbeRuns++
		p.printf("%s probe: p50 %.2f ms p99 %.2f ms lost %d (%.0fs)", spec.Name, res.Latency.P50, res.Latency.P99, res.Lost, time.Since(t0).Seconds())
	}
	a.ProbeP50, a.ProbeP99, a.ProbeHarnessCPU = study.Median(p50s), study.Median(p99s), study.Median(cpus)
	return a, nil
}

// studyAgreement runs the probe for one backend and compares it with the
// study's (median) latency at the first latency rate; a failed probe is
// an agreement that does not hold, with the error.
func studyAgreement(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, lat []study.Run, p *progress) *study.Agreement {
	rate := o.Rates[0]
	a, err := runProbe(ctx, o, spec, bin, tmp, rate, p)
	if err != nil {
		a.Error = err.Error()
		p.printf("%s probe failed: %v", spec.Name, err)
	}
	if r, ok := (study.Backend{Latency: lat}).LatencyAt(rate); ok {
		a.StudyP50, a.StudyP99 = r.All.P50, r.All.P99
		if r.HarnessCPUS > 0 {
			a.StudyHarnessCPU = study.CPUPerM(r.HarnessCPUS, r.Deliveries)
		}
	}
	a = study.Check(a)
	return &a
}
