//go:build linux

// study_tables.go: the study's tables, as rows of cells for PrintRows
// and MarkdownRows.

package report

import (
	"fmt"
	"io"
	"strings"

	"github.com/syncgate/syncgate/bench/internal/study"
)

func f2(v float64) string { return fmt.Sprintf("%.2f", v) }

// cpuCell is a CPU-per-million figure, "-" when not measured.
func cpuCell(v float64) string {
	if v <= 0 {
		return "-"
	}
	return f2(v)
}

// cpuCells are the gateway and broker CPU seconds per million deliveries
// of a run; a broker inside the gateway has no column of its own.
func cpuCells(b study.Backend, r study.Run) (string, string) {
	cell := func(v float64) string {
		if v < 0 {
			return "-"
		}
		return f2(v)
	}
	gw := cell(study.CPUPerM(r.GatewayCPUS, r.Deliveries))
	if b.Embedded != "" {
		return gw, b.Embedded
	}
	return gw, cell(study.CPUPerM(r.BrokerCPUS, r.Deliveries))
}

// harnessCell is the load generator's own CPU seconds per million
// deliveries: the loadgen processes' (older result files: the study
// process's; none: "-").
func harnessCell(r study.Run) string {
	if r.HarnessCPUS <= 0 {
		return "-"
	}
	return f2(study.CPUPerM(r.HarnessCPUS, r.Deliveries))
}

// spreadCell is the range of the headline p50 and p99 over the runs at a
// rate ("1 run" without repetitions), so a noisy run shows its noise.
func spreadCell(b study.Backend, rate float64) string {
	p50, p99, n := b.Spread(rate)
	if n <= 1 {
		return fmt.Sprintf("%d run", n)
	}
	return fmt.Sprintf("%d runs: %.2f-%.2f / %.2f-%.2f", n, p50[0], p50[1], p99[0], p99[1])
}

// latencyRows is the latency table at one rate.
func latencyRows(rs *study.Results, rate float64) [][]string {
	rows := [][]string{{"backend", "nodes", "acked/sent/sched", "A p50", "A p99", "cross p50", "cross p90", "cross p99", "cross p99.9", "cross max", "lost", "dup", "out of order",
		"deliveries/s", "gateway CPU s per M deliveries", "broker CPU s per M deliveries", "harness CPU s per M deliveries", "runs: p50 / p99 range", "CPUs busy", "load avg"}}
	for _, b := range rs.Backends {
		if b.Skipped != "" {
			continue
		}
		if r, ok := b.LatencyAt(rate); ok {
			if r.Error != "" && r.Scheduled == 0 {
				rows = append(rows, []string{b.Name, fmt.Sprint(b.Nodes), "error", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", ""})
				continue
			}
			cross := r.CrossNode
			dash := func(v float64) string {
				if cross.Count == 0 {
					return "-"
				}
				return f2(v)
			}
			gw, br := cpuCells(b, r)
			rows = append(rows, []string{b.Name, fmt.Sprint(b.Nodes), fmt.Sprintf("%d/%d/%d", r.Acked, r.Scheduled-r.Unsent, r.Scheduled),
				f2(r.SameNode.P50), f2(r.SameNode.P99),
				dash(cross.P50), dash(cross.P90), dash(cross.P99), dash(cross.P999), dash(cross.Max),
				fmt.Sprint(r.Lost), fmt.Sprint(r.Dup), fmt.Sprint(r.OutOfOrder),
				fmt.Sprintf("%.0f", r.DeliveriesPerS), gw, br, harnessCell(r), spreadCell(b, rate), busyCell(r), fmt.Sprintf("%.1f-%.1f", r.LoadStart, r.LoadEnd)})
		}
	}
	return rows
}

func crashRows(rs *study.Results) [][]string {
	rows := [][]string{{"backend", "killed", "published", "acked", "refused", "acked msgs lost", "missing deliveries (stayed+resubscribed)", "dup", "out of order", "refused but delivered", "auto reconnects", "resubscribed", "recovered", "reset", "gap", "max latency ms"}}
	for _, b := range rs.Backends {
		if b.Skipped != "" || b.Crash == nil {
			continue
		}
		r := b.Crash
		killed := b.Killed
		switch {
		case killed != "":
		case b.Type == "memory":
			killed = "gateway (holds the broker)"
		case strings.HasPrefix(b.Type, "nats") || b.Type == "jetstream":
			killed = "nats-server"
		}
		rows = append(rows, []string{b.Name, killed, fmt.Sprint(r.Scheduled), fmt.Sprint(r.Acked), fmt.Sprint(r.Refused),
			fmt.Sprint(r.LostMsgs), fmt.Sprintf("%d (%d+%d)", r.Lost, r.LostStayed, r.LostDropped), fmt.Sprint(r.Dup), fmt.Sprint(r.OutOfOrder), fmt.Sprint(r.RefusedDelivered),
			fmt.Sprint(r.Reconnects), fmt.Sprintf("%d/%d", r.Resubscribed, r.Resubscribed+r.ResubscribeFailed),
			fmt.Sprintf("%d (%d msgs)", r.Recovered, r.RecoveredMissed), fmt.Sprint(r.Resets), fmt.Sprint(r.Gaps), f2(r.All.Max)})
	}
	return rows
}

// tputRows is the throughput table.
func tputRows(rs *study.Results) [][]string {
	rows := [][]string{{"backend", "knee", "highest sustained msg/s", "deliveries/s there", "p99 there (cross-node; memory: its node)", "gateway CPU s per M deliveries", "broker CPU s per M deliveries", "steps (msg/s: deliveries/s, p99 ms)", "search ended"}}
	for _, b := range rs.Backends {
		t := b.Throughput
		if b.Skipped != "" || t == nil {
			continue
		}
		best := t.Best()
		if best == nil {
			rows = append(rows, []string{b.Name, t.Knee(), "-", "-", "-", "-", "-", "none run", t.Stopped})
			continue
		}
		maxS := fmt.Sprintf("%g", t.Max)
		mark := ""
		if t.Max == 0 {
			maxS = fmt.Sprintf("none (< %g)", t.Steps[0].Rate)
			mark = fmt.Sprintf(" (at %g)", best.Rate)
		}
		r := best.Result
		gw, br := cpuCells(b, r)
		p99 := study.StepLatency(r, b.Nodes)
		p99s := f2(p99.P99)
		if p99.Count == 0 {
			p99s = "-"
		}
		if b.Embedded == "" {
			br += mark
		}
		rows = append(rows, []string{b.Name, t.Knee(), maxS, fmt.Sprintf("%.0f%s", r.DeliveriesPerS, mark), p99s + mark, gw + mark, br,
			stepsCell(t, b.Nodes, "latency run"), t.Stopped})
	}
	return rows
}

// stepsCell lists a search's steps: rate, deliveries/s, the p99 that
// judges it, the verdict, and whether it reused earlier runs (named by
// reused).
func stepsCell(t *study.Tput, nodes int, reused string) string {
	var steps []string
	for _, s := range t.Steps {
		v := "ok"
		if !s.Pass {
			v = "fail"
		}
		p99 := study.StepLatency(s.Result, nodes)
		src := ""
		if s.FromLatency {
			src = ", " + reused
		}
		if s.FirstRun != nil {
			src += fmt.Sprintf(" (first run %.1f, run again)", study.StepLatency(*s.FirstRun, nodes).P99)
		}
		steps = append(steps, fmt.Sprintf("%g: %.0f/s, %.1f, %s%s", s.Rate, s.Result.DeliveriesPerS, p99.P99, v, src))
	}
	return strings.Join(steps, "; ")
}

// kneeRows is the knee agreement table: the study's search against the
// probe's on the same ladder, per probed backend that both searched.
func kneeRows(rs *study.Results) [][]string {
	rows := [][]string{{"backend", "study: knee", "probe: knee", "steps apart", "verdict", "probe steps (msg/s: deliveries/s, p99 ms)", "probe search ended"}}
	for _, b := range rs.Backends {
		a := b.Agreement
		if a == nil || a.ProbeTput == nil || a.Knee == nil {
			continue
		}
		v := a.Knee.Verdict
		if a.Knee.Why != "" {
			v += ": " + a.Knee.Why
		}
		rows = append(rows, []string{b.Name, b.Throughput.Knee(), a.ProbeTput.Knee(), fmt.Sprint(a.Knee.Apart), v,
			stepsCell(a.ProbeTput, b.Nodes, "agreement run"), a.ProbeTput.Stopped})
	}
	return rows
}

// agreementRows is the agreement table: the study's latency over all its
// subscribers against the probe's, per probed backend.
func agreementRows(rs *study.Results) [][]string {
	rows := [][]string{{"backend", "msg/s", "probe subs per channel, runs", "study p50", "probe p50", "p50 diff", "study p99", "probe p99", "p99 diff",
		"study harness CPU s per M", "probe harness CPU s per M", "verdict"}}
	for _, b := range rs.Backends {
		a := b.Agreement
		if a == nil {
			continue
		}
		verdict := "agree"
		if !a.OK {
			verdict = "FLAG: " + study.FirstLine(a.Flag)
		}
		pct := func(v float64) string {
			if v > 1e6 || a.Error != "" {
				return "-"
			}
			return fmt.Sprintf("%+.0f %%", 100*v)
		}
		rows = append(rows, []string{b.Name, fmt.Sprintf("%.0f", a.Rate), fmt.Sprintf("%d, %d", max(1, a.ProbeSubsPerChannel), max(1, a.ProbeRuns)), f2(a.StudyP50), f2(a.ProbeP50), pct(a.DiffP50),
			f2(a.StudyP99), f2(a.ProbeP99), pct(a.DiffP99), cpuCell(a.StudyHarnessCPU), cpuCell(a.ProbeHarnessCPU), verdict})
	}
	return rows
}

// agreementFailed lists the flagged rows: latency (Check) and knee
// (CompareKnees) flags.
func agreementFailed(rs *study.Results) []string {
	var out []string
	for _, b := range rs.Backends {
		if b.Agreement != nil && !b.Agreement.OK {
			out = append(out, b.Name+": "+b.Agreement.Flag)
		}
		if b.Agreement != nil && b.Agreement.Knee != nil && b.Agreement.Knee.Verdict == "FLAG" {
			out = append(out, b.Name+": "+b.Agreement.Knee.Why)
		}
	}
	return out
}

func PrintStudy(w io.Writer, rs *study.Results) {
	m := rs.Machine
	fmt.Fprintf(w, "\ncommand: %s\nmachine: nproc=%d kernel=%s %s\ngateway: %s\n", rs.Command, m.NumCPU, m.Kernel, m.GoVersion, rs.GatewaySource)
	for _, rate := range rs.Rates() {
		fmt.Fprintf(w, "\nlatency, %g msg/s on node A, ms from the send time (A = subscribers on node A, cross = on node B):\n", rate)
		PrintRows(w, latencyRows(rs, rate))
	}
	if rows := agreementRows(rs); len(rows) > 1 {
		fmt.Fprintf(w, "\nagreement with the probe (all subscribers; flag: p50 off by > %.0f %% or p99 by > %.0f %%):\n", 100*study.AgreeP50Limit, 100*study.AgreeP99Limit)
		PrintRows(w, rows)
	}
	if rows := kneeRows(rs); len(rows) > 1 {
		fmt.Fprintln(w, "\nknee agreement with the probe (same ladder, same rule; flag: more than one step apart):")
		PrintRows(w, rows)
	}
	if rows := tputRows(rs); len(rows) > 1 {
		fmt.Fprintf(w, "\nthroughput: highest offered rate with p99 < %.0f ms and no loss:\n", study.TputP99Limit)
		PrintRows(w, rows)
	}
	fmt.Fprintln(w, "\ncrash: broker killed with SIGKILL mid-run and restarted on the same port and data:")
	PrintRows(w, crashRows(rs))
	for _, b := range rs.Backends {
		if b.Skipped != "" {
			fmt.Fprintf(w, "%s: skipped: %s\n", b.Name, b.Skipped)
		}
		for _, e := range b.Errors {
			fmt.Fprintf(w, "%s: error: %s\n", b.Name, study.FirstLine(e))
		}
	}
}

// busyCell is the machine's busy CPU fraction over a run's window ("-":
// not measured).
func busyCell(r study.Run) string {
	if f, ok := r.CPUBusy(); ok {
		return fmt.Sprintf("%.0f %%", 100*f)
	}
	return "-"
}
