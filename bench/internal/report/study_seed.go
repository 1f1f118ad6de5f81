//go:build linux

// study_seed.go: what the harness adds (the calibration row and the
// agreement check) and the plain answer to the study's question.

package report

import (
	"fmt"
	"strings"

	"github.com/syncgate/syncgate/bench/internal/study"
)

// harnessReading says what the harness itself adds, from the calibration
// row (memory, one node: the cheapest path there is) and its probe, and
// whether the probed rows agree; nil without a probed memory row.
func harnessReading(rs *study.Results) []string {
	var out []string
	for _, b := range rs.Backends {
		a := b.Agreement
		if a == nil || a.Error != "" {
			continue
		}
		if b.Name == "memory" {
			out = append(out, fmt.Sprintf("Calibration (memory broker, one node, %.0f msg/s): the study measures p50 %.2f ms / p99 %.2f ms, the probe p50 %.2f ms / p99 %.2f ms on the same path (its subscribers per channel: see the agreement table); what the study's load (its subscribers, its load generator on the same CPUs) adds is about %+.2f ms at p50 and %+.2f ms at p99, and its load generator spent %s CPU s per million deliveries (latency table, *harness CPU*).",
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

func harnessAt(b study.Backend, rate float64) string {
	if r, ok := b.LatencyAt(rate); ok {
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

// seedReading answers the study's question plainly: what Redis Pub/Sub and
// NATS core buy in latency over the logs, what the logs buy in acked
// messages kept through the crash, and where each backend's knee is.
func seedReading(rs *study.Results) []string {
	rates := rs.Rates()
	byName := map[string]study.Backend{}
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
			fl, ok := fb.HeadLat(rate)
			if !ok {
				continue
			}
			var parts []string
			for _, l := range logBackends {
				if ll, ok := byName[l].HeadLat(rate); ok {
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
