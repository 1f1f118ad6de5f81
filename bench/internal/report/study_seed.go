//go:build linux

// study_seed.go: what the harness adds (the calibration row and the
// agreement check) and the plain answer to the study's question.

package report

import (
	"fmt"
	"math"
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
			out = append(out, fmt.Sprintf("Calibration (memory broker, one node, %.0f msg/s): the study measures p50 %.2f ms / p99 %.2f ms, the probe p50 %.2f ms / p99 %.2f ms on the same path (its subscribers per channel: see the agreement table); what the study's load (its subscribers, its load generator on the same CPUs) adds is about %s ms at p50 and %s ms at p99, and its load generator spent %s CPU s per million deliveries (latency table, *harness CPU*).",
				a.Rate, a.StudyP50, a.StudyP99, a.ProbeP50, a.ProbeP99, signedMs(a.StudyP50-a.ProbeP50), signedMs(a.StudyP99-a.ProbeP99), harnessAt(b, a.Rate)))
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
// Every verdict is computed from the run: a latency difference within
// the agreement check's limits (25 % at p50, 50 % at p99: what the
// harness is trusted to) is called no difference.
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
		out = append(out, latencyBought(byName, rates[0], overloaded(rs))...)
	}
	out = append(out, crashBought(byName)...)
	out = append(out, kneeReading(rs)...)
	if f := agreementFailed(rs); len(out) > 0 && len(f) > 0 {
		out = append(out, "Caution: the agreement check flagged "+strings.Join(f, "; ")+", so the latency differences and knees above still carry the study harness's own cost; the probe's figures are the reference for those rows.")
	}
	return out
}

// latencyBought says, for Redis Pub/Sub and NATS core, what they buy in
// latency over each log at rate: the differences, and a verdict per log.
func latencyBought(byName map[string]study.Backend, rate float64, overloaded bool) []string {
	var out []string
	for _, f := range fastBackends {
		fl, ok := byName[f].HeadLat(rate)
		if !ok {
			continue
		}
		var parts, faster, same, slower []string
		for _, l := range logBackends {
			ll, ok := byName[l].HeadLat(rate)
			if !ok {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s %s ms at p50, %s ms at p99", l, signedMs(ll.P50-fl.P50), signedMs(ll.P99-fl.P99)))
			// Both percentiles: the verdict may rest on either.
			vs := fmt.Sprintf("%s (p50 %.2f against %.2f ms, p99 %.2f against %.2f ms)", l, fl.P50, ll.P50, fl.P99, ll.P99)
			switch latencyOrder(fl, ll) {
			case -1:
				faster = append(faster, vs)
			case 1:
				slower = append(slower, vs)
			default:
				same = append(same, l)
			}
		}
		if len(parts) == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("Latency bought by %s (p50 %.2f ms, p99 %.2f ms at %g msg/s) over the logs — what each log adds (negative: the log was faster in this run): %s.", f, fl.P50, fl.P99, rate, strings.Join(parts, "; ")))
		var v []string
		if len(faster) > 0 {
			v = append(v, "it is faster than "+strings.Join(faster, ", "))
		}
		if len(same) > 0 {
			v = append(v, "it buys nothing this study can resolve over "+strings.Join(same, ", ")+" (differences within 25 % at p50 and 50 % at p99, the agreement check's limits)")
		}
		if len(slower) > 0 {
			v = append(v, "it is slower than "+strings.Join(slower, ", "))
		}
		caveat := ""
		if overloaded {
			caveat = " (but the machine was overloaded during this run, see the last point: these verdicts are CPU contention as much as the backends)"
		}
		out = append(out, fmt.Sprintf("So, at %g msg/s, %s: %s%s.", rate, f, strings.Join(v, "; "), caveat))
	}
	return out
}

// latencyOrder compares a fast backend's latency with a log's: -1 when
// the fast one is lower beyond the agreement limits (at p50 or at p99,
// and not higher beyond them at the other), 1 when it is higher, 0 when
// the differences are within them or contradict each other.
func latencyOrder(f, l study.LatStats) int {
	cmp := func(a, b, limit float64) int {
		switch {
		case b > a*(1+limit):
			return -1
		case a > b*(1+limit):
			return 1
		}
		return 0
	}
	c50, c99 := cmp(f.P50, l.P50, study.AgreeP50Limit), cmp(f.P99, l.P99, study.AgreeP99Limit)
	switch {
	case c50 == -c99 && c50 != 0:
		return 0
	case c50 != 0:
		return c50
	}
	return c99
}

// crashBought says what the logs buy through the broker crash: acked
// messages lost by the fast brokers against the logs.
func crashBought(byName map[string]study.Backend) []string {
	var kept, fastLost, fastKept, logKept, logLost []string
	lost := func(n string) (string, bool, bool) {
		c := byName[n].Crash
		if c == nil || c.Scheduled == 0 {
			return "", false, false
		}
		return fmt.Sprintf("%s lost %d of %d acked", n, c.LostMsgs, c.Acked), c.LostMsgs == 0, true
	}
	for _, n := range fastBackends {
		if t, ok0, ok := lost(n); ok {
			kept = append(kept, t)
			if !ok0 {
				fastLost = append(fastLost, n)
			} else {
				fastKept = append(fastKept, n)
			}
		}
	}
	for _, n := range logBackends {
		if t, ok0, ok := lost(n); ok {
			kept = append(kept, t)
			if ok0 {
				logKept = append(logKept, n)
			} else {
				logLost = append(logLost, n)
			}
		}
	}
	if len(kept) == 0 {
		return nil
	}
	out := []string{"What the logs buy through a broker crash (acked messages missing at one subscriber or more): " + strings.Join(kept, ", ") + "."}
	var v []string
	if len(logKept) > 0 {
		v = append(v, "kept every acked message with "+strings.Join(logKept, ", "))
	}
	if len(logLost) > 0 {
		v = append(v, "lost acked messages with "+strings.Join(logLost, ", ")+" too")
	}
	what := "the logs " + strings.Join(v, "; ")
	var fast []string
	if len(fastLost) > 0 {
		fast = append(fast, strings.Join(fastLost, " and ")+" lost acked messages")
	}
	if len(fastKept) > 0 {
		fast = append(fast, strings.Join(fastKept, " and ")+" kept every acked message")
	}
	if len(v) > 0 {
		fast = append(fast, what)
	}
	if len(fast) > 0 {
		out = append(out, fmt.Sprintf("So, in this crash run, %s.", strings.Join(fast, "; ")))
	}
	return out
}

// kneeReading says where each backend's knee is, with the probe's where
// it searched, and which backends were not searched.
func kneeReading(rs *study.Results) []string {
	var knees, not []string
	for _, b := range rs.Backends {
		t := b.Throughput
		if b.Skipped != "" || t == nil {
			continue
		}
		if len(t.Steps) == 0 {
			not = append(not, b.Name)
			continue
		}
		k := b.Name + ": " + t.Knee()
		if a := b.Agreement; a != nil && a.ProbeTput != nil {
			k += " (the probe: " + a.ProbeTput.Knee()
			if a.Knee != nil {
				k += ", " + a.Knee.Verdict
			}
			k += ")"
		}
		knees = append(knees, k)
	}
	var out []string
	if len(knees) > 0 {
		out = append(out, fmt.Sprintf("Knees (highest offered rate with p99 under %.0f ms and nothing lost, and the step above where it broke): %s.", study.TputP99Limit, strings.Join(knees, "; ")))
	}
	if len(not) > 0 {
		out = append(out, "Not searched in this run: "+strings.Join(not, ", ")+".")
	}
	return out
}

// signedMs is a difference in milliseconds to two decimals with its
// sign, and 0.00 (no sign) when it rounds to nothing ("-0.00" read as a
// loss where there is none).
func signedMs(d float64) string {
	if math.Abs(d) < 0.005 {
		return "0.00"
	}
	return fmt.Sprintf("%+.2f", d)
}
