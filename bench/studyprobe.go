//go:build linux

// studyprobe.go keeps the study honest about its own harness: the payload
// codec the study's subscribers use without a reflective decode, and the
// agreement check between the study's latency and a second, minimal probe
// (the fanout scenario's raw-frame loadgen processes, one subscriber per
// channel) run in the same invocation.
package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// appendStudyMsg appends the payload {"i":I,"t":T} to b: the same bytes
// encoding/json makes for studyMsg, built without reflection.
func appendStudyMsg(b []byte, i int, t int64) []byte {
	b = append(b, `{"i":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t, 10)
	return append(b, '}')
}

// scanStudyMsg finds the message id and send time in a payload
// {"i":I,"t":T} by scanning its bytes, allowing the keys in either order
// and blanks around them. Anything else (another key, a string, a negative
// or oversized number) returns ok = false: the caller counts it as a bad
// payload.
func scanStudyMsg(b []byte) (i int, t int64, ok bool) {
	var haveI, haveT bool
	p := skipBlank(b, 0)
	if p >= len(b) || b[p] != '{' {
		return 0, 0, false
	}
	p = skipBlank(b, p+1)
	for {
		if p+4 > len(b) || b[p] != '"' || b[p+2] != '"' {
			return 0, 0, false
		}
		key := b[p+1]
		p = skipBlank(b, p+3)
		if p >= len(b) || b[p] != ':' {
			return 0, 0, false
		}
		p = skipBlank(b, p+1)
		var v int64
		n := 0
		for ; p < len(b) && b[p] >= '0' && b[p] <= '9'; p, n = p+1, n+1 {
			d := int64(b[p] - '0')
			if v > (math.MaxInt64-d)/10 {
				return 0, 0, false
			}
			v = v*10 + d
		}
		if n == 0 {
			return 0, 0, false
		}
		switch {
		case key == 'i' && !haveI:
			i, haveI = int(v), true
		case key == 't' && !haveT:
			t, haveT = v, true
		default:
			return 0, 0, false
		}
		p = skipBlank(b, p)
		if p >= len(b) {
			return 0, 0, false
		}
		switch b[p] {
		case ',':
			p = skipBlank(b, p+1)
		case '}':
			if skipBlank(b, p+1) != len(b) || !haveI || !haveT {
				return 0, 0, false
			}
			return i, t, true
		default:
			return 0, 0, false
		}
	}
}

func skipBlank(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
		p++
	}
	return p
}

// Agreement limits: the study's p50 may differ from the probe's by 25 %,
// its p99 by 50 %.
const (
	agreeP50 = 0.25
	agreeP99 = 0.50
)

// agreement compares one backend's study latency with the probe's at the
// same offered rate.
type agreement struct {
	Backend  string  `json:"backend"`
	Rate     float64 `json:"rate"`
	StudyP50 float64 `json:"study_p50_ms"`
	StudyP99 float64 `json:"study_p99_ms"`
	ProbeP50 float64 `json:"probe_p50_ms"`
	ProbeP99 float64 `json:"probe_p99_ms"`
	// Relative differences (study - probe) / probe.
	DiffP50 float64 `json:"diff_p50"`
	DiffP99 float64 `json:"diff_p99"`
	// ProbeLost: deliveries the probe lost (its latency then is not a
	// reference).
	ProbeLost int64  `json:"probe_lost"`
	OK        bool   `json:"ok"`
	Flag      string `json:"flag,omitempty"` // why not OK
	Error     string `json:"error,omitempty"`
}

// checkAgreement fills the differences and the verdict of a.
func checkAgreement(a agreement) agreement {
	rel := func(s, p float64) float64 {
		if p <= 0 {
			if s <= 0 {
				return 0
			}
			return 1e9
		}
		return (s - p) / p
	}
	a.DiffP50, a.DiffP99 = rel(a.StudyP50, a.ProbeP50), rel(a.StudyP99, a.ProbeP99)
	a.OK, a.Flag = true, ""
	switch {
	case a.Error != "":
		a.OK, a.Flag = false, "probe failed: "+a.Error
	case a.ProbeLost > 0:
		a.OK, a.Flag = false, fmt.Sprintf("probe lost %d deliveries", a.ProbeLost)
	case a.StudyP50 <= 0 || a.ProbeP50 <= 0:
		a.OK, a.Flag = false, "no latency measured"
	case abs(a.DiffP50) > agreeP50:
		a.OK, a.Flag = false, fmt.Sprintf("p50 differs by %+.0f %% (limit %.0f %%)", 100*a.DiffP50, 100*agreeP50)
	case abs(a.DiffP99) > agreeP99:
		a.OK, a.Flag = false, fmt.Sprintf("p99 differs by %+.0f %% (limit %.0f %%)", 100*a.DiffP99, 100*agreeP99)
	}
	return a
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// probeBackends are the rows the probe runs on.
var probeBackends = map[string]bool{"memory": true, "redis": true}

// runProbe runs the fanout scenario as the minimal probe for one backend:
// the same channels and total rate as the study's latency run, one
// subscriber per channel spread over the backend's nodes, raw frames from
// loadgen processes of their own.
func runProbe(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, rate float64, p *progress) (agreement, error) {
	a := agreement{Backend: spec.Name, Rate: rate}
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
	p.printf("%s probe: p50 %.2f ms p99 %.2f ms lost %d (%.0fs)", spec.Name, a.ProbeP50, a.ProbeP99, a.ProbeLost, time.Since(t0).Seconds())
	return a, nil
}

// studyAgreement runs the probe for one backend and compares it with the
// study's (median) latency at the first latency rate; a failed probe is
// an agreement that does not hold, with the error.
func studyAgreement(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, lat []loadResult, p *progress) *agreement {
	rate := o.Rates[0]
	a, err := runProbe(ctx, o, spec, bin, tmp, rate, p)
	if err != nil {
		a.Error = err.Error()
		p.printf("%s probe failed: %v", spec.Name, err)
	}
	if r, ok := latencyAt(studyBackend{Latency: lat}, rate); ok {
		a.StudyP50, a.StudyP99 = r.All.P50, r.All.P99
	}
	a = checkAgreement(a)
	return &a
}

// agreementRows is the agreement table: the study's latency over all its
// subscribers against the probe's, per probed backend.
func agreementRows(rs *studyResults) [][]string {
	rows := [][]string{{"backend", "msg/s", "study p50", "probe p50", "p50 diff", "study p99", "probe p99", "p99 diff", "verdict"}}
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
			f2(a.StudyP99), f2(a.ProbeP99), pct(a.DiffP99), verdict})
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
