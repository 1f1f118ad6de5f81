//go:build linux

// study_reading.go: the reading of a study, written from its numbers.

package report

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/syncgate/syncgate/bench/internal/study"
)

// studyReading is the short reading of the trade-off, written from the
// numbers: what the harness adds, the seed question's answer, the
// latency ranking, the throughput search, the crash, what durability
// costs, and how loaded the machine was.
func studyReading(rs *study.Results) []string {
	out := append(harnessReading(rs), seedReading(rs)...)
	out = append(out, rankingReading(rs)...)
	out = append(out, tputReading(rs)...)
	crash, safe := crashReading(rs)
	out = append(out, crash...)
	out = append(out, tradeoffReading(rs, safe)...)
	out = append(out, resetReading(rs)...)
	return append(out, loadReading(rs)...)
}

// rankingReading ranks the backends by p99 at the first latency rate.
func rankingReading(rs *study.Results) []string {
	var out []string
	rates := rs.Rates()
	if len(rates) == 0 {
		return nil
	}
	rate := rates[0]
	type lp struct {
		name     string
		p50, p99 float64
	}
	var ls []lp
	for _, b := range rs.Backends {
		for _, r := range b.LatencySummary() {
			if r.Rate != rate || r.All.Count == 0 {
				continue
			}
			s := r.CrossNode
			if s.Count == 0 {
				s = r.SameNode
			}
			ls = append(ls, lp{b.Name, s.P50, s.P99})
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].p99 < ls[j].p99 })
	if len(ls) > 0 {
		var parts []string
		for _, l := range ls {
			parts = append(parts, fmt.Sprintf("%s %.2f / %.2f ms", l.name, l.p50, l.p99))
		}
		out = append(out, fmt.Sprintf("At %g msg/s, p50 / p99 delivery latency (cross-node where there are two nodes), lowest p99 first: %s.", rate, strings.Join(parts, ", ")))
		out = append(out, fmt.Sprintf("%s has the lowest tail; %s the highest, a factor %.1f at p99.", ls[0].name, ls[len(ls)-1].name, ls[len(ls)-1].p99/max(ls[0].p99, 0.001)))
	}

	return out
}

// crashReading says which backends kept every acked message through the
// crash (safe), which lost some, and which refused publishes.
func crashReading(rs *study.Results) (out, safe []string) {
	var lossy, refusing []string
	for _, b := range rs.Backends {
		r := b.Crash
		if r == nil || r.Scheduled == 0 {
			continue
		}
		if r.LostMsgs == 0 {
			safe = append(safe, b.Name)
		} else {
			lossy = append(lossy, fmt.Sprintf("%s %d of %d acked (%.1f%%)", b.Name, r.LostMsgs, r.Acked, 100*float64(r.LostMsgs)/float64(max(1, r.Acked))))
		}
		if r.Refused > 0 {
			refusing = append(refusing, fmt.Sprintf("%s %d", b.Name, r.Refused))
		}
	}
	if len(safe) > 0 {
		out = append(out, fmt.Sprintf("Through the broker crash of this run (one crash run per backend: not a guarantee; see docs/brokers.md for each backend's), no acked message was lost with: %s.", strings.Join(safe, ", ")))
	}
	if len(lossy) > 0 {
		out = append(out, fmt.Sprintf("Acked messages lost across the crash: %s.", strings.Join(lossy, ", ")))
	}
	if len(refusing) > 0 {
		out = append(out, fmt.Sprintf("Publishes refused (error or no ack within 2 s) during the outage: %s; a refused publish is the client's to retry, unlike a lost acked one.", strings.Join(refusing, ", ")))
	}
	return out, safe
}

// tradeoffReading sets the p99 of the backends that lost no acked message
// (safe) against the lowest cross-node p99.
func tradeoffReading(rs *study.Results, safe []string) []string {
	var out []string
	rates := rs.Rates()
	// The trade-off, from the numbers: the p99 of the backends that lost
	// no acked message against the lowest cross-node p99 (a one-node
	// backend has no broker hop to compare).
	p99 := map[string]float64{}
	best, bestP99 := "", 0.0
	for _, b := range rs.Backends {
		if b.Nodes < 2 {
			continue
		}
		for _, r := range b.LatencySummary() {
			if len(rates) == 0 || r.Rate != rates[0] || r.All.Count == 0 {
				continue
			}
			s := r.CrossNode
			if s.Count == 0 {
				s = r.SameNode
			}
			p99[b.Name] = s.P99
			if best == "" || s.P99 < bestP99 {
				best, bestP99 = b.Name, s.P99
			}
		}
	}
	// On an overloaded machine the p99 differences are contention, not
	// the cost of durability: say so once instead of per backend.
	if overloaded(rs) && len(safe) > 0 && best != "" {
		out = append(out, fmt.Sprintf("Whether durability (%s kept every acked message) costs latency cannot be read from this run: the machine was overloaded (below), and the p99 differences between backends are mostly CPU contention.", strings.Join(safe, ", ")))
		safe = nil
	}
	for _, name := range safe {
		if v, ok := p99[name]; ok && best != "" && name != best && v/max(bestP99, 0.001) < 2 {
			out = append(out, fmt.Sprintf("%s kept every acked message through this run's crash at a p99 of %.2f ms, within 2x of the lowest cross-node p99 (%s, %.2f ms): in this run its durability cost little latency at this rate.", name, v, best, bestP99))
		} else if ok && best != "" && name != best {
			out = append(out, fmt.Sprintf("Trade-off: %s kept every acked message through this run's crash at a p99 of %.2f ms, %.1fx the lowest cross-node p99 (%s, %.2f ms): durability of the acked message is paid for in latency%s.", name, v, v/max(bestP99, 0.001), best, bestP99, refusedClause(rs, name)))
		}
	}
	return out
}

// busyLimit: a machine whose CPUs were busy this fraction of the time
// or more (the median over the latency runs) was saturated: runnable
// threads waited for a CPU, and the latency measured that wait.
const busyLimit = 0.9

// cpuBusy is the machine's CPU use over the latency runs that measured
// it: the busy fractions (of all CPUs' time), and the fractions the
// study's own processes (gateways, brokers, loadgens) and everything
// else took. ok is false when no run measured it (older files).
type cpuBusy struct {
	busy, own, other []float64
}

func latencyCPU(rs *study.Results) (c cpuBusy, ok bool) {
	for _, b := range rs.Backends {
		for _, r := range b.Latency {
			f, measured := r.CPUBusy()
			o, known := r.OtherCPUS()
			if !measured || !known {
				continue
			}
			c.busy = append(c.busy, f)
			c.other = append(c.other, o/r.MachineTotalS)
			c.own = append(c.own, f-o/r.MachineTotalS)
		}
	}
	return c, len(c.busy) > 0
}

// overloaded: the machine's CPUs were saturated during the latency runs
// (median busy fraction at busyLimit or more); for results that did not
// measure it, its load average exceeded twice its CPUs during one.
func overloaded(rs *study.Results) bool {
	if c, ok := latencyCPU(rs); ok {
		return study.Median(c.busy) >= busyLimit
	}
	for _, b := range rs.Backends {
		for _, r := range b.Latency {
			if max(r.LoadStart, r.LoadEnd) > 2*float64(max(1, rs.Machine.NumCPU)) {
				return true
			}
		}
	}
	return false
}

// resetReading flags catch-up that recovered on node B but not on node A.
func resetReading(rs *study.Results) []string {
	var out []string
	var resetA []string
	for _, b := range rs.Backends {
		if r := b.Crash; r != nil && r.ResetsByNode[0] > 0 && r.ResetsByNode[1] == 0 && r.RecoveredByNode[1] > 0 {
			resetA = append(resetA, b.Name)
		}
	}
	if len(resetA) > 0 {
		out = append(out, fmt.Sprintf("Catch-up across the broker restart was asymmetric with %s: subscribers that reconnected to node B recovered the gap (`recovered: true`), those that reconnected to node A (the publishing node) got `recovered: false`, and their gap counts as lost above. Worth a look in the gateway.", strings.Join(resetA, ", ")))
	}
	return out
}

// loadReading says how loaded the machine was during the latency runs:
// from the CPUs' busy time where the runs measured it, else from the
// load average.
func loadReading(rs *study.Results) []string {
	var loads []float64
	for _, b := range rs.Backends {
		for _, r := range b.Latency {
			loads = append(loads, r.LoadStart, r.LoadEnd)
		}
	}
	if len(loads) == 0 {
		return nil
	}
	lo, hi := slices.Min(loads), slices.Max(loads)
	n := rs.Machine.NumCPU
	if c, ok := latencyCPU(rs); ok {
		busy := fmt.Sprintf("During the latency runs the machine's %d CPUs were %.0f to %.0f %% busy (median %.0f %%; the gateways, brokers and loadgen processes %.0f %% of all CPU time at the median, everything else, the study process, other processes and interrupt work, %.0f %%); the load average was %.1f to %.1f.",
			n, 100*slices.Min(c.busy), 100*slices.Max(c.busy), 100*study.Median(c.busy), 100*study.Median(c.own), 100*study.Median(c.other), lo, hi)
		if study.Median(c.busy) >= busyLimit {
			return []string{busy + fmt.Sprintf(" The CPUs were saturated (median at or over %.0f %%): threads waited for a CPU, so even the medians carry that wait; the latency ranking above is not reliable, the crash accounting (counts by message id) is. Rerun on an idle machine before drawing conclusions on latency.", 100*busyLimit)}
		}
		return []string{busy + fmt.Sprintf(" The CPUs were not saturated (median under %.0f %%), so the latency figures are the backends' under the study's own load, as the agreement check above tests against a probe on processes of its own; the tails (p99 and above) still carry the scheduling noise of short bursts. The load average counts the runnable threads of the study's own processes too, so it is no measure of contention by itself.", 100*busyLimit)}
	}
	if hi > 2*float64(n) {
		return []string{fmt.Sprintf("The machine was overloaded during this run: load average %.1f to %.1f on %d CPUs (brokers, gateways, the 1,100 client connections and other processes share them). Even the medians are dominated by CPU contention here; the latency ranking above is not reliable, the crash accounting (counts by message id) is. Rerun on an idle machine before drawing conclusions on latency.", lo, hi, n)}
	}
	return []string{fmt.Sprintf("The machine's load average was %.1f to %.1f during the latency runs on %d CPUs (brokers, gateways, the 1,100 client connections and other processes share them): medians are comparable, the tails (p99 and above) carry scheduling noise. Rerun on an idle machine, or with -full, before drawing fine conclusions.", lo, hi, n)}
}

// ---- plots ----

// tputReading sums up the throughput search and the CPU cost per delivery.
func tputReading(rs *study.Results) []string {
	var out, sustained, none []string
	for _, b := range rs.Backends {
		t := b.Throughput
		if b.Skipped != "" || t == nil || len(t.Steps) == 0 {
			continue
		}
		if t.Max > 0 {
			sustained = append(sustained, fmt.Sprintf("%s %g msg/s (%.0f deliveries/s)", b.Name, t.Max, t.Best().Result.DeliveriesPerS))
		} else {
			none = append(none, b.Name)
		}
	}
	if len(sustained) > 0 {
		out = append(out, fmt.Sprintf("Highest offered rate sustained with p99 under %.0f ms and no loss: %s.", study.TputP99Limit, strings.Join(sustained, ", ")))
	}
	if len(none) > 0 {
		out = append(out, fmt.Sprintf("Not even the lowest step was sustained by %s on this machine in this run (see the steps column for the p99 that failed it).", strings.Join(none, ", ")))
	}
	if rates := rs.Rates(); len(rates) > 0 {
		type c struct {
			name  string
			total float64
			text  string
		}
		var cs []c
		for _, b := range rs.Backends {
			r, ok := b.LatencyAt(rates[0])
			gw, br := study.CPUPerM(r.GatewayCPUS, r.Deliveries), study.CPUPerM(r.BrokerCPUS, r.Deliveries)
			if b.Skipped != "" || !ok || gw < 0 {
				continue
			}
			if b.Embedded != "" {
				cs = append(cs, c{b.Name, gw, fmt.Sprintf("%s %.1f s (broker %s)", b.Name, gw, b.Embedded)})
			} else if br >= 0 {
				cs = append(cs, c{b.Name, gw + br, fmt.Sprintf("%s %.1f s (gateways %.1f + broker %.1f)", b.Name, gw+br, gw, br)})
			}
		}
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].total < cs[j].total })
		if len(cs) > 0 {
			var parts []string
			for _, x := range cs {
				parts = append(parts, x.text)
			}
			out = append(out, fmt.Sprintf("CPU per million deliveries at %g msg/s, gateways and broker processes together, cheapest first: %s. Part of the gateway CPU is the fan-out to 1,000 WebSocket connections, the same for every backend.", rates[0], strings.Join(parts, ", ")))
		}
	}
	return out
}

// refusedClause notes, for a backend that refused publishes during the
// crash, that durability cost those too.
func refusedClause(rs *study.Results, name string) string {
	for _, b := range rs.Backends {
		if b.Name == name && b.Crash != nil && b.Crash.Refused > 0 {
			return fmt.Sprintf(" (and, during the outage, in %d refused publishes)", b.Crash.Refused)
		}
	}
	return ""
}
