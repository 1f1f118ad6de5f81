//go:build linux

// studyprobe.go keeps the study honest about its own harness: it runs a
// second, minimal probe (the fanout scenario's raw-frame loadgen
// processes, one subscriber per channel) in the same invocation, checks
// the study's latency against it (internal/report), and writes what the
// harness adds and the plain answer to the study's question into the
// reading.
package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/syncgate/syncgate/bench/internal/report"
)

// probeBackends are the rows the probe runs on.
var probeBackends = map[string]bool{"memory": true, "redis": true}

// runProbe runs the fanout scenario as the minimal probe for one backend:
// the same channels and total rate as the study's latency run, one
// subscriber per channel spread over the backend's nodes, raw frames from
// loadgen processes of their own.
func runProbe(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, rate float64, p *progress) (report.Agreement, error) {
	a := report.Agreement{Backend: spec.Name, Rate: rate}
	args := []string{"fanout", "-broker", spec.Type,
		"-subs", strconv.Itoa(o.Channels), "-channels", strconv.Itoa(o.Channels),
		"-rate", strconv.FormatFloat(rate/float64(o.Channels), 'f', -1, 64),
		"-duration", o.LatencyFor.String(), "-settle", "1s"}
	fo, err := parseArgs(args)
	if err != nil {
		return a, fmt.Errorf("probe: %w", err)
	}
	// The fanout command takes one node; runFanout spreads the subscribers
	// over as many as the backend's row has (publishers on node A).
	fo.Gateways = spec.Nodes
	dir, err := runDir(tmp, "probe-"+spec.Name)
	if err != nil {
		return a, err
	}
	p.printf("%s probe: fanout %d subscribers, %d channels, %.0f msg/s for %s", spec.Name, o.Channels, o.Channels, rate, o.LatencyFor)
	t0 := time.Now()
	res, _, err := runFanout(ctx, fo, fo.IO, spec.Type, bin, dir, p)
	if err != nil {
		return a, fmt.Errorf("probe: %w", err)
	}
	a.ProbeP50, a.ProbeP99, a.ProbeLost = res.Latency.P50, res.Latency.P99, res.Lost
	a.ProbeHarnessCPU = cpuPerM(res.LoadgenCPUS, res.Received)
	p.printf("%s probe: p50 %.2f ms p99 %.2f ms lost %d (%.0fs)", spec.Name, a.ProbeP50, a.ProbeP99, a.ProbeLost, time.Since(t0).Seconds())
	return a, nil
}

// studyAgreement runs the probe for one backend and compares it with the
// study's (median) latency at the first latency rate; a failed probe is
// an agreement that does not hold, with the error.
func studyAgreement(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, lat []loadResult, p *progress) *report.Agreement {
	rate := o.Rates[0]
	a, err := runProbe(ctx, o, spec, bin, tmp, rate, p)
	if err != nil {
		a.Error = err.Error()
		p.printf("%s probe failed: %v", spec.Name, err)
	}
	if r, ok := latencyAt(studyBackend{Latency: lat}, rate); ok {
		a.StudyP50, a.StudyP99 = r.All.P50, r.All.P99
		if r.HarnessCPUS > 0 {
			a.StudyHarnessCPU = cpuPerM(r.HarnessCPUS, r.Deliveries)
		}
	}
	a = report.Check(a)
	return &a
}

// agreementRows is the agreement table: the study's latency over all its
// subscribers against the probe's, per probed backend.
func agreementRows(rs *studyResults) [][]string {
	rows := [][]string{{"backend", "msg/s", "study p50", "probe p50", "p50 diff", "study p99", "probe p99", "p99 diff",
		"study harness CPU s per M", "probe harness CPU s per M", "verdict"}}
	for _, b := range rs.Backends {
		a := b.Agreement
		if a == nil {
			continue
		}
		verdict := "agree"
		if !a.OK {
			verdict = "FLAG: " + firstLine(a.Flag)
		}
		pct := func(v float64) string {
			if v > 1e6 || a.Error != "" {
				return "-"
			}
			return fmt.Sprintf("%+.0f %%", 100*v)
		}
		rows = append(rows, []string{b.Name, fmt.Sprintf("%.0f", a.Rate), f2(a.StudyP50), f2(a.ProbeP50), pct(a.DiffP50),
			f2(a.StudyP99), f2(a.ProbeP99), pct(a.DiffP99), cpuCell(a.StudyHarnessCPU), cpuCell(a.ProbeHarnessCPU), verdict})
	}
	return rows
}

// agreementFailed lists the flagged rows.
func agreementFailed(rs *studyResults) []string {
	var out []string
	for _, b := range rs.Backends {
		if b.Agreement != nil && !b.Agreement.OK {
			out = append(out, b.Name+": "+b.Agreement.Flag)
		}
	}
	return out
}

// harnessReading says what the harness itself adds, from the calibration
// row (memory, one node: the cheapest path there is) and its probe, and
// whether the probed rows agree; nil without a probed memory row.
func harnessReading(rs *studyResults) []string {
	var out []string
	for _, b := range rs.Backends {
		a := b.Agreement
		if a == nil || a.Error != "" {
			continue
		}
		if b.Name == "memory" {
			out = append(out, fmt.Sprintf("Calibration (memory broker, one node, %.0f msg/s): the study measures p50 %.2f ms / p99 %.2f ms, the minimal probe p50 %.2f ms / p99 %.2f ms on the same path; what the study's own load generator adds is about %+.2f ms at p50 and %+.2f ms at p99, and it spent %s CPU s per million deliveries (latency table, *harness CPU*).",
				a.Rate, a.StudyP50, a.StudyP99, a.ProbeP50, a.ProbeP99, a.StudyP50-a.ProbeP50, a.StudyP99-a.ProbeP99, harnessAt(b, a.Rate)))
		}
	}
	if rows := agreementRows(rs); len(rows) > 1 {
		if f := agreementFailed(rs); len(f) > 0 {
			out = append(out, "Agreement check FAILED on "+strings.Join(f, "; ")+": on those rows the study's figures include harness effects; the probe's are the reference.")
		} else {
			out = append(out, "Agreement check passed on every probed row (study within 25 % of the probe at p50 and 50 % at p99).")
		}
	}
	return out
}

func harnessAt(b studyBackend, rate float64) string {
	if r, ok := latencyAt(b, rate); ok {
		return harnessCell(r)
	}
	return "-"
}

// Which rows answer the seed question: the fire-and-forget brokers against
// the logs.
var (
	fastBackends = []string{"redis", "nats"}
	logBackends  = []string{"jetstream-file", "jetstream-memory", "redis-streams-aof-off", "redis-streams", "redis-streams-aof-always"}
)

// headLat is a backend's headline latency at rate: cross-node with two
// nodes, else its only node's (medians of the repetitions).
func headLat(b studyBackend, rate float64) (latStats, bool) {
	r, ok := latencyAt(b, rate)
	if !ok || r.All.Count == 0 {
		return latStats{}, false
	}
	return stepP99(r, b.Nodes), true
}

// seedReading answers the study's question plainly: what Redis Pub/Sub and
// NATS core buy in latency over the logs, what the logs buy in acked
// messages kept through the crash, and where each backend's knee is.
func seedReading(rs *studyResults) []string {
	rates := studyRates(rs)
	byName := map[string]studyBackend{}
	for _, b := range rs.Backends {
		if b.Skipped == "" {
			byName[b.Name] = b
		}
	}
	var out []string
	if len(rates) > 0 {
		rate := rates[0]
		for _, f := range fastBackends {
			fb, ok := byName[f]
			if !ok {
				continue
			}
			fl, ok := headLat(fb, rate)
			if !ok {
				continue
			}
			var parts []string
			for _, l := range logBackends {
				if ll, ok := headLat(byName[l], rate); ok {
					parts = append(parts, fmt.Sprintf("%s %+.2f ms at p50, %+.2f ms at p99", l, ll.P50-fl.P50, ll.P99-fl.P99))
				}
			}
			if len(parts) > 0 {
				out = append(out, fmt.Sprintf("Latency bought by %s (p50 %.2f ms, p99 %.2f ms at %g msg/s) over the logs — what each log adds (negative: the log was faster in this run): %s.", f, fl.P50, fl.P99, rate, strings.Join(parts, "; ")))
			}
		}
	}
	var kept []string
	for _, n := range append(append([]string{}, fastBackends...), logBackends...) {
		if c := byName[n].Crash; c != nil && c.Scheduled > 0 {
			kept = append(kept, fmt.Sprintf("%s lost %d of %d acked", n, c.LostMsgs, c.Acked))
		}
	}
	if len(kept) > 0 {
		out = append(out, "What the logs buy through a broker crash (acked messages missing at one subscriber or more): "+strings.Join(kept, ", ")+".")
	}
	var knees []string
	for _, b := range rs.Backends {
		t := b.Throughput
		if b.Skipped != "" || t == nil || len(t.Steps) == 0 {
			continue
		}
		k := fmt.Sprintf("%s sustained %.0f msg/s", b.Name, t.Max)
		if t.Max == 0 {
			k = fmt.Sprintf("%s none of the steps", b.Name)
		}
		if t.Stopped != "" {
			k += " (" + t.Stopped + ")"
		}
		knees = append(knees, k)
	}
	if len(knees) > 0 {
		out = append(out, "Knees (last step with p99 under 50 ms and nothing lost; the next step is where it broke): "+strings.Join(knees, "; ")+".")
	}
	if f := agreementFailed(rs); len(out) > 0 && len(f) > 0 {
		out = append(out, "Caution: the agreement check flagged "+strings.Join(f, "; ")+", so the latency differences and knees above still carry the study harness's own cost; the probe's figures are the reference for those rows.")
	}
	return out
}

// cpuCell is a CPU-per-million figure, "-" when not measured.
func cpuCell(v float64) string {
	if v <= 0 {
		return "-"
	}
	return f2(v)
}
