//go:build linux

// studyreport.go prints the study's tables and writes its JSON, its
// generated document and its plots.
package main

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/syncgate/syncgate/bench/internal/report"
)

func writeStudyJSON(dir string, rs *studyResults) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "study-"+rs.Started.Format("20060102-150405")+".json")
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

func f2(v float64) string { return fmt.Sprintf("%.2f", v) }

// latencyAt is the backend's latency result at a rate: the run, or with
// repetitions their medians (medianRun).
func latencyAt(b studyBackend, rate float64) (loadResult, bool) {
	var runs []loadResult
	for _, r := range b.Latency {
		if r.Rate == rate {
			runs = append(runs, r)
		}
	}
	if len(runs) == 0 {
		return loadResult{}, false
	}
	return medianRun(runs), true
}

// repsAt is how many latency runs the backend has at a rate.
func repsAt(b studyBackend, rate float64) int {
	n := 0
	for _, r := range b.Latency {
		if r.Rate == rate {
			n++
		}
	}
	return n
}

// cpuCells are the gateway and broker CPU seconds per million deliveries
// of a run; a broker inside the gateway has no column of its own.
func cpuCells(b studyBackend, r loadResult) (string, string) {
	cell := func(v float64) string {
		if v < 0 {
			return "-"
		}
		return f2(v)
	}
	gw := cell(cpuPerM(r.GatewayCPUS, r.Deliveries))
	if b.Embedded != "" {
		return gw, b.Embedded
	}
	return gw, cell(cpuPerM(r.BrokerCPUS, r.Deliveries))
}

// harnessCell is the study process's own CPU seconds per million
// deliveries (older result files have none: "-").
func harnessCell(r loadResult) string {
	if r.HarnessCPUS <= 0 {
		return "-"
	}
	return f2(cpuPerM(r.HarnessCPUS, r.Deliveries))
}

// latencyRows is the latency table at one rate.
func latencyRows(rs *studyResults, rate float64) [][]string {
	rows := [][]string{{"backend", "nodes", "acked/sent/sched", "A p50", "A p99", "cross p50", "cross p90", "cross p99", "cross p99.9", "cross max", "lost", "dup", "out of order",
		"deliveries/s", "gateway CPU s per M deliveries", "broker CPU s per M deliveries", "harness CPU s per M deliveries", "load avg"}}
	for _, b := range rs.Backends {
		if b.Skipped != "" {
			continue
		}
		if r, ok := latencyAt(b, rate); ok {
			if r.Error != "" && r.Scheduled == 0 {
				rows = append(rows, []string{b.Name, fmt.Sprint(b.Nodes), "error", "", "", "", "", "", "", "", "", "", "", "", "", "", "", ""})
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
				fmt.Sprintf("%.0f", r.DeliveriesPerS), gw, br, harnessCell(r), fmt.Sprintf("%.1f-%.1f", r.LoadStart, r.LoadEnd)})
		}
	}
	return rows
}

func crashRows(rs *studyResults) [][]string {
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
func tputRows(rs *studyResults) [][]string {
	rows := [][]string{{"backend", "highest sustained msg/s", "deliveries/s there", "p99 there (cross-node; memory: its node)", "gateway CPU s per M deliveries", "broker CPU s per M deliveries", "steps (msg/s: deliveries/s, p99 ms)", "search ended"}}
	for _, b := range rs.Backends {
		t := b.Throughput
		if b.Skipped != "" || t == nil {
			continue
		}
		best := t.best()
		if best == nil {
			rows = append(rows, []string{b.Name, "-", "-", "-", "-", "-", "none run", t.Stopped})
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
		var steps []string
		for _, s := range t.Steps {
			v := "ok"
			if !s.Pass {
				v = "fail"
			}
			p99 := stepP99(s.Result, b.Nodes)
			src := ""
			if s.FromLatency {
				src = ", latency run"
			}
			steps = append(steps, fmt.Sprintf("%g: %.0f/s, %.1f, %s%s", s.Rate, s.Result.DeliveriesPerS, p99.P99, v, src))
		}
		p99 := stepP99(r, b.Nodes)
		p99s := f2(p99.P99)
		if p99.Count == 0 {
			p99s = "-"
		}
		if b.Embedded == "" {
			br += mark
		}
		rows = append(rows, []string{b.Name, maxS, fmt.Sprintf("%.0f%s", r.DeliveriesPerS, mark), p99s + mark, gw + mark, br,
			strings.Join(steps, "; "), t.Stopped})
	}
	return rows
}

func printStudy(w io.Writer, rs *studyResults) {
	m := rs.Machine
	fmt.Fprintf(w, "\ncommand: %s\nmachine: nproc=%d kernel=%s %s\ngateway: %s\n", rs.Command, m.NumCPU, m.Kernel, m.GoVersion, rs.GatewaySource)
	for _, rate := range studyRates(rs) {
		fmt.Fprintf(w, "\nlatency, %g msg/s on node A, ms from the scheduled send time (A = subscribers on node A, cross = on node B):\n", rate)
		report.PrintRows(w, latencyRows(rs, rate))
	}
	if rows := agreementRows(rs); len(rows) > 1 {
		fmt.Fprintf(w, "\nagreement with the minimal probe (all subscribers; flag: p50 off by > %.0f %% or p99 by > %.0f %%):\n", 100*report.P50Limit, 100*report.P99Limit)
		report.PrintRows(w, rows)
	}
	if rows := tputRows(rs); len(rows) > 1 {
		fmt.Fprintf(w, "\nthroughput: highest offered rate with p99 < %.0f ms and no loss:\n", tputP99Limit)
		report.PrintRows(w, rows)
	}
	fmt.Fprintln(w, "\ncrash: broker killed with SIGKILL mid-run and restarted on the same port and data:")
	report.PrintRows(w, crashRows(rs))
	for _, b := range rs.Backends {
		if b.Skipped != "" {
			fmt.Fprintf(w, "%s: skipped: %s\n", b.Name, b.Skipped)
		}
		for _, e := range b.Errors {
			fmt.Fprintf(w, "%s: error: %s\n", b.Name, firstLine(e))
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func studyRates(rs *studyResults) []float64 {
	var rates []float64
	for _, b := range rs.Backends {
		for _, r := range b.Latency {
			if !slices.Contains(rates, r.Rate) {
				rates = append(rates, r.Rate)
			}
		}
	}
	sort.Float64s(rates)
	return rates
}

// ---- the generated document ----

func writeStudyDocs(root string, rs *studyResults) error {
	plots := filepath.Join(root, "docs", "plots")
	if err := os.MkdirAll(plots, 0o755); err != nil {
		return err
	}
	if err := plotLatencyCDF(rs, filepath.Join(plots, "study-latency-cdf.svg")); err != nil {
		return fmt.Errorf("latency plot: %w", err)
	}
	if err := plotCrashLost(rs, filepath.Join(plots, "study-crash-lost.svg")); err != nil {
		return fmt.Errorf("crash plot: %w", err)
	}
	hasTput := len(tputRows(rs)) > 1
	if hasTput {
		if err := plotThroughput(rs, filepath.Join(plots, "study-throughput.svg")); err != nil {
			return fmt.Errorf("throughput plot: %w", err)
		}
		if err := plotLatencyRate(rs, filepath.Join(plots, "study-latency-rate.svg")); err != nil {
			return fmt.Errorf("latency-rate plot: %w", err)
		}
	}
	var b strings.Builder
	w := &b
	m := rs.Machine
	fmt.Fprintf(w, "# Latency vs durability across backends\n\n")
	fmt.Fprintf(w, "*Generated by `%s`: do not edit by hand; rerun the command instead.*\n\n", rs.Command)
	fmt.Fprintf(w, "- date: %s (%s mode, %.0f s)\n", rs.Started.Format("2006-01-02 15:04 UTC"), rs.Mode, rs.Finished.Sub(rs.Started).Seconds())
	fmt.Fprintf(w, "- machine: nproc %d, kernel %s, %s, memory %s\n", m.NumCPU, m.Kernel, m.GoVersion, m.MemTotal)
	fmt.Fprintf(w, "- gateway source: %s\n", rs.GatewaySource)
	fmt.Fprintf(w, "- everything (brokers, gateways, clients) runs on this one machine over 127.0.0.1, so the numbers compare backends with each other, not with a network deployment.\n")
	fmt.Fprintf(w, "- what this run did: %s\n\n", modeSummary(rs))

	fmt.Fprintf(w, "## Backends\n\n| backend | broker.type | gateway nodes | broker and persistence |\n|---|---|---|---|\n")
	for _, bk := range rs.Backends {
		note := bk.Note
		if bk.Skipped != "" {
			note = "skipped: " + bk.Skipped
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s |\n", bk.Name, bk.Type, bk.Nodes, note)
	}
	fmt.Fprintf(w, "\nIn the latency and throughput runs nats and jetstream use the NATS server embedded in gateway node A (node B connects to it), so their broker CPU is counted in the gateway CPU. In the crash runs the NATS server is a separate process (`bench natsserver`) that both nodes connect to, so that it can be killed alone; for memory the broker lives in the only gateway node, so the gateway itself is killed. redis-sharded and redis-cluster lose one of their three redis-servers in the crash run (see *killed*); the other two keep running.\n\n")

	p := rs.Params
	fmt.Fprintf(w, "## Latency\n\n")
	fmt.Fprintf(w, "%v channels x %v subscribers (one connection each, alternating between node A and node B), one publisher connection per channel on node A publishing in order on an open-loop schedule for %v s. Latency is measured from the message's **scheduled** send time (corrected for coordinated omission: a publisher that falls behind does not hide the delay) to its arrival at the subscriber, recorded in an HdrHistogram. *A* columns are subscribers on the publishing node, *cross* columns subscribers on node B (the headline: a message crosses the broker). Loss, duplicates and reordering are counted per message id at every subscriber. A publisher still behind its schedule 5 s after the schedule's end stops: *sent* below *sched* means the backend (or the machine) could not keep up with the rate, and the latency columns cover the sent messages only. Milliseconds. *deliveries/s*: first copies delivered over the window from the start of publishing until every acked message had arrived; the CPU columns are the user+system CPU seconds (from /proc/<pid>/stat) of the two gateway processes and of the broker processes (redis-server, or none where the broker is embedded) in that window, per million deliveries; *harness CPU* is the study process's own (its publishers and subscribers), so a reader can see what the load generator spends beside what it measures. %s\n\n",
		p["latency_channels"], p["latency_subs_per_channel"], p["latency_duration_s"], repsNote(rs))
	for _, rate := range studyRates(rs) {
		fmt.Fprintf(w, "### %g msg/s\n\n", rate)
		report.MarkdownRows(w, latencyRows(rs, rate))
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "![latency CDF](plots/study-latency-cdf.svg)\n\n")
	if rows := agreementRows(rs); len(rows) > 1 {
		fmt.Fprintf(w, "### Agreement with a minimal probe\n\n")
		fmt.Fprintf(w, "In the same invocation, on the memory and redis rows, a second load generator measures the same total rate over the same channels: the fanout scenario (`go run ./bench fanout`), raw WebSocket frames from loadgen processes of their own (subscribers and publishers in separate processes, each with its own loopback source addresses), payloads found by scanning bytes, **one** subscriber per channel spread over the same gateway nodes, on gateway and broker processes of its own. Its figures are the reference for what the gateway and broker add; a row is flagged when the study's p50 (all subscribers) differs from the probe's by more than %.0f %% or its p99 by more than %.0f %%, or when the probe lost anything.\n\n", 100*report.P50Limit, 100*report.P99Limit)
		report.MarkdownRows(w, rows)
		if f := agreementFailed(rs); len(f) > 0 {
			fmt.Fprintf(w, "\n**Flagged:** %s. The study's latency on these rows is not the backend's alone: read them against the probe's.\n", strings.Join(f, "; "))
		} else {
			fmt.Fprintf(w, "\nNo row is flagged: on the probed rows the study's latency is the gateway's and broker's, within the limits above.\n")
		}
		fmt.Fprintln(w)
	}

	if hasTput {
		fmt.Fprintf(w, "## Throughput\n\n")
		fmt.Fprintf(w, "The same setup (%v channels x %v subscribers split over the two nodes, publishers on node A) at increasing offered rates %v msg/s in total, each step %v s on the same gateway and broker processes (channels of its own per step), stopping at the first step that is not sustained: a step is sustained when every message was published on schedule and acked, none was lost at any subscriber, and the cross-node p99 (the only node's for memory) stayed under %.0f ms. A step at a rate the latency runs already measured reuses them instead of running again (*latency run*). *Highest sustained*: the last sustained step; deliveries/s and CPU per million deliveries are those of that step (when even the first step failed, of the first step, marked with its rate). Where the broker is embedded (memory; nats and jetstream in gateway A) its CPU is inside the gateway CPU. Steps left out for time are said in *search ended*.\n\n",
			p["latency_channels"], p["latency_subs_per_channel"], p["throughput_steps"], p["throughput_duration_s"], tputP99Limit)
		report.MarkdownRows(w, tputRows(rs))
		fmt.Fprintf(w, "\n![deliveries/s vs offered rate](plots/study-throughput.svg)\n\n")
		fmt.Fprintf(w, "Latency against offered rate (p50, p99, p99.9 of each step; cross-node, the only node's for memory): the knee is where the curves turn up.\n\n![latency vs offered rate](plots/study-latency-rate.svg)\n\n")
	}

	fmt.Fprintf(w, "## Crash\n\n")
	pause, _ := p["crash_pause_s"].(float64)
	fmt.Fprintf(w, "%v msg/s over %v channels (%v subscribers per channel, alternating between the nodes) for %v s. At t=%v s the broker process is killed with SIGKILL; %v s later it is restarted on the same port and data directory. Every publish is either acked or refused (error or no answer within 2 s); every acked message is looked for at every subscriber of its channel. *acked msgs lost*: acked messages missing at one subscriber or more; *missing deliveries*: (acked message, subscriber) pairs never delivered, split into subscribers that stayed subscribed (their client may reconnect on its own) and the half of the subscribers that closed their connection %g s into the outage and subscribed again with `since` 2 s after the restart. *recovered*: catch-up events after a client reconnected (`sub` with `since` answered `recovered: true`), with the messages they replayed; *reset*: `recovered: false`. The subscribers use the Go client package, which applies the `was` rule of docs/protocol.md: a message that comes back after a broker outage under its durable position, naming a provisional position (epoch `~...`) the subscriber already received it under, is taken as a confirmation and not delivered again, so it is not counted in *dup*; *dup* counts copies the client did deliver twice (by message id). *out of order*: messages a subscriber got after a later message of the same publisher; with the redis and jetstream backends these are the publishes that were in flight when the broker connection failed: they may already be stored, so the node acks them but does not deliver them provisionally, and they arrive once, under their real position, after the publisher's next messages had arrived provisionally (docs/protocol.md).\n\n",
		p["crash_rate"], p["crash_channels"], p["crash_subs_per_channel"], p["crash_duration_s"], p["crash_at_s"], p["crash_pause_s"], pause/2)
	report.MarkdownRows(w, crashRows(rs))
	fmt.Fprintln(w)
	for _, bk := range rs.Backends {
		if bk.Crash == nil {
			continue
		}
		r := bk.Crash
		fmt.Fprintf(w, "- %s: %s; subscribers that reconnected: recovered on node A %d, node B %d; reset on node A %d, node B %d",
			bk.Name, strings.Join(r.Events, "; "), r.RecoveredByNode[0], r.RecoveredByNode[1], r.ResetsByNode[0], r.ResetsByNode[1])
		if len(bk.Crash.Reasons) > 0 {
			fmt.Fprintf(w, "; refusals: %s", reasonsString(bk.Crash.Reasons))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\n![messages lost in the crash](plots/study-crash-lost.svg)\n\n")

	fmt.Fprintf(w, "## Reading\n\n")
	for _, line := range studyReading(rs) {
		fmt.Fprintf(w, "- %s\n", line)
	}
	var errs []string
	for _, bk := range rs.Backends {
		for _, e := range bk.Errors {
			errs = append(errs, fmt.Sprintf("- %s: %s", bk.Name, firstLine(e)))
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(w, "\n## Errors during the run\n\n%s\n", strings.Join(errs, "\n"))
	}
	fmt.Fprintf(w, "\nRaw results: `bench/results/study-%s.json` on the machine that ran it (not committed).\n", rs.Started.Format("20060102-150405"))
	return os.WriteFile(filepath.Join(root, "docs", "benchmarks-study.md"), []byte(b.String()), 0o644)
}

func reasonsString(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s x%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// studyReading is the short reading of the trade-off, written from the
// numbers.
func studyReading(rs *studyResults) []string {
	out := append(harnessReading(rs), seedReading(rs)...)
	rates := studyRates(rs)
	if len(rates) > 0 {
		rate := rates[0]
		type lp struct {
			name     string
			p50, p99 float64
		}
		var ls []lp
		for _, b := range rs.Backends {
			for _, r := range latencySummary(b) {
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
	}
	out = append(out, tputReading(rs)...)
	var safe, lossy, refusing []string
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
	// The trade-off, from the numbers: the p99 of the backends that lost
	// no acked message against the lowest cross-node p99 (a one-node
	// backend has no broker hop to compare).
	p99 := map[string]float64{}
	best, bestP99 := "", 0.0
	for _, b := range rs.Backends {
		if b.Nodes < 2 {
			continue
		}
		for _, r := range latencySummary(b) {
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
	overloaded := false
	for _, b := range rs.Backends {
		for _, r := range b.Latency {
			overloaded = overloaded || max(r.LoadStart, r.LoadEnd) > 2*float64(max(1, rs.Machine.NumCPU))
		}
	}
	if overloaded && len(safe) > 0 && best != "" {
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
	var resetA []string
	for _, b := range rs.Backends {
		if r := b.Crash; r != nil && r.ResetsByNode[0] > 0 && r.ResetsByNode[1] == 0 && r.RecoveredByNode[1] > 0 {
			resetA = append(resetA, b.Name)
		}
	}
	if len(resetA) > 0 {
		out = append(out, fmt.Sprintf("Catch-up across the broker restart was asymmetric with %s: subscribers that reconnected to node B recovered the gap (`recovered: true`), those that reconnected to node A (the publishing node) got `recovered: false`, and their gap counts as lost above. Worth a look in the gateway.", strings.Join(resetA, ", ")))
	}
	var loads []float64
	for _, b := range rs.Backends {
		for _, r := range b.Latency {
			loads = append(loads, r.LoadStart, r.LoadEnd)
		}
	}
	if len(loads) > 0 {
		hi := slices.Max(loads)
		if hi > 2*float64(rs.Machine.NumCPU) {
			out = append(out, fmt.Sprintf("The machine was overloaded during this run: load average %.1f to %.1f on %d CPUs (brokers, gateways, the 1,100 client connections and other processes share them). Even the medians are dominated by CPU contention here; the latency ranking above is not reliable, the crash accounting (counts by message id) is. Rerun on an idle machine before drawing conclusions on latency.", slices.Min(loads), hi, rs.Machine.NumCPU))
		} else {
			out = append(out, fmt.Sprintf("The machine's load average was %.1f to %.1f during the latency runs on %d CPUs (brokers, gateways, the 1,100 client connections and other processes share them): medians are comparable, the tails (p99 and above) carry scheduling noise. Rerun on an idle machine, or with -full, before drawing fine conclusions.", slices.Min(loads), hi, rs.Machine.NumCPU))
		}
	}
	return out
}

// ---- plots ----

func plotLatencyCDF(rs *studyResults, path string) error {
	p := plot.New()
	rate := 0.0
	if rates := studyRates(rs); len(rates) > 0 {
		rate = rates[0]
	}
	p.Title.Text = fmt.Sprintf("Delivery latency CDF at %g msg/s (cross-node where 2 nodes)", rate)
	p.X.Label.Text = "latency from scheduled send (ms, log scale)"
	p.Y.Label.Text = "percentile"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 100
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	i := 0
	for _, b := range rs.Backends {
		for _, r := range latencySummary(b) {
			if r.Rate != rate {
				continue
			}
			s := r.CrossNode
			if s.Count == 0 {
				s = r.SameNode
			}
			if len(s.CDF) == 0 {
				continue
			}
			var xys plotter.XYs
			for _, pt := range s.CDF {
				xys = append(xys, plotter.XY{X: max(pt[1], 0.001), Y: pt[0]})
			}
			l, err := plotter.NewLine(xys)
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(i)
			l.Dashes = plotutil.Dashes(i)
			l.Width = vg.Points(1.5)
			p.Add(l)
			p.Legend.Add(b.Name, l)
			i++
		}
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

func plotCrashLost(rs *studyResults, path string) error {
	p := plot.New()
	p.Title.Text = "Broker crash: acked messages lost, publishes refused"
	p.Y.Label.Text = "messages"
	var names []string
	var lost, stayed, refused plotter.Values
	for _, b := range rs.Backends {
		if b.Crash == nil || b.Crash.Scheduled == 0 {
			continue
		}
		names = append(names, b.Name)
		lost = append(lost, float64(b.Crash.LostMsgs))
		stayed = append(stayed, float64(b.Crash.LostStayed))
		refused = append(refused, float64(b.Crash.Refused))
	}
	if len(names) == 0 {
		names, lost, stayed, refused = []string{"none"}, plotter.Values{0}, plotter.Values{0}, plotter.Values{0}
	}
	w := vg.Points(14)
	bl, err := plotter.NewBarChart(lost, w)
	if err != nil {
		return err
	}
	bl.Color = color.RGBA{R: 200, G: 40, B: 40, A: 255}
	bl.Offset = -w
	bs, err := plotter.NewBarChart(stayed, w)
	if err != nil {
		return err
	}
	bs.Color = color.RGBA{R: 240, G: 160, B: 40, A: 255}
	br, err := plotter.NewBarChart(refused, w)
	if err != nil {
		return err
	}
	br.Color = color.RGBA{R: 120, G: 120, B: 120, A: 255}
	br.Offset = w
	p.Add(bl, bs, br)
	p.Legend.Add("acked messages lost (any subscriber)", bl)
	p.Legend.Add("missing deliveries at subscribers that stayed", bs)
	p.Legend.Add("refused", br)
	p.Legend.Top = true
	p.NominalX(names...)
	return p.Save(8*vg.Inch, 4*vg.Inch, path)
}

// modeSummary says what the run measured, from its parameters.
func modeSummary(rs *studyResults) string {
	p := rs.Params
	reps := 1.0
	if v, ok := p["latency_reps"].(float64); ok && v > 0 {
		reps = v
	} else if v, ok := p["latency_reps"].(int); ok && v > 0 {
		reps = float64(v)
	}
	s := fmt.Sprintf("%s mode: latency at %v msg/s, %g run(s) of %v s per rate", rs.Mode, p["latency_rates"], reps, p["latency_duration_s"])
	if reps > 1 {
		s += " (medians shown)"
	}
	if steps, ok := p["throughput_steps"]; ok && fmt.Sprint(steps) != "[]" && steps != nil {
		s += fmt.Sprintf("; throughput search over %v msg/s, new steps of %v s each, as far as the time budget allows", steps, p["throughput_duration_s"])
	}
	s += fmt.Sprintf("; one crash run of %v s", p["crash_duration_s"])
	if b, ok := p["budget_s"]; ok {
		s += fmt.Sprintf("; time budget %v s for the whole study (hard limit %v s)", b, p["limit_s"])
	}
	return s + "."
}

// repsNote explains the repetitions when there are some.
func repsNote(rs *studyResults) string {
	n := 0
	for _, b := range rs.Backends {
		for _, rate := range studyRates(rs) {
			n = max(n, repsAt(b, rate))
		}
	}
	if n <= 1 {
		return "One run per rate."
	}
	return fmt.Sprintf("%d runs per rate on the same processes: the latency, deliveries/s and CPU columns are the medians of the runs, the counts (acked/sent/sched, lost, dup, out of order) their sums.", n)
}

// plotThroughput draws deliveries/s against the offered rate, one panel
// per backend, with the deliveries the offered rate asks for as a dashed
// line.
func plotThroughput(rs *studyResults, path string) error {
	var bs []studyBackend
	for _, b := range rs.Backends {
		if b.Skipped == "" && b.Throughput != nil && len(b.Throughput.Steps) > 0 {
			bs = append(bs, b)
		}
	}
	if len(bs) == 0 {
		return nil
	}
	subs := 10.0
	if v, ok := rs.Params["latency_subs_per_channel"].(float64); ok && v > 0 {
		subs = v
	} else if v, ok := rs.Params["latency_subs_per_channel"].(int); ok && v > 0 {
		subs = float64(v)
	}
	cols := min(3, len(bs))
	rowsN := (len(bs) + cols - 1) / cols
	grid := make([][]*plot.Plot, rowsN)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, b := range bs {
		p := plot.New()
		p.Title.Text = b.Name
		p.X.Label.Text = "offered msg/s"
		p.Y.Label.Text = "deliveries/s"
		p.Add(plotter.NewGrid())
		var pts, ok, bad plotter.XYs
		hi := 0.0
		for _, s := range b.Throughput.Steps {
			xy := plotter.XY{X: s.Rate, Y: s.Result.DeliveriesPerS}
			pts = append(pts, xy)
			if s.Pass {
				ok = append(ok, xy)
			} else {
				bad = append(bad, xy)
			}
			hi = max(hi, s.Rate)
		}
		ideal, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: hi, Y: hi * subs}})
		if err != nil {
			return err
		}
		ideal.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		ideal.Color = color.Gray{Y: 140}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Width = vg.Points(1.5)
		line.Color = plotutil.Color(0)
		p.Add(ideal, line)
		if i == 0 {
			p.Legend.Add("offered x subscribers per channel", ideal)
			p.Legend.Top, p.Legend.Left = false, false
		}
		for _, set := range []struct {
			xys plotter.XYs
			c   color.Color
			n   string
		}{{ok, color.RGBA{G: 150, A: 255}, "sustained"}, {bad, color.RGBA{R: 200, G: 30, B: 30, A: 255}, "not sustained"}} {
			if len(set.xys) == 0 {
				continue
			}
			sc, err := plotter.NewScatter(set.xys)
			if err != nil {
				return err
			}
			sc.Color = set.c
			sc.Radius = vg.Points(3.5)
			p.Add(sc)
			if i == 0 {
				p.Legend.Add(set.n, sc)
			}
		}
		p.X.Min, p.Y.Min = 0, 0
		grid[i/cols][i%cols] = p
	}
	return report.WriteGrid(grid, cols, rowsN, path)
}

// plotLatencyRate draws, per backend, p50, p99 and p99.9 (cross-node; the
// only node's for memory) against the offered rate of its throughput
// steps, on a log scale: where the curve turns up is the backend's knee.
func plotLatencyRate(rs *studyResults, path string) error {
	var bs []studyBackend
	for _, b := range rs.Backends {
		if b.Skipped == "" && b.Throughput != nil && len(b.Throughput.Steps) > 0 {
			bs = append(bs, b)
		}
	}
	if len(bs) == 0 {
		return nil
	}
	cols := min(3, len(bs))
	rowsN := (len(bs) + cols - 1) / cols
	grid := make([][]*plot.Plot, rowsN)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, b := range bs {
		p := plot.New()
		p.Title.Text = b.Name
		p.X.Label.Text = "offered msg/s"
		p.Y.Label.Text = "ms (log)"
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{}
		p.Add(plotter.NewGrid())
		sets := []struct {
			name string
			f    func(latStats) float64
		}{{"p50", func(s latStats) float64 { return s.P50 }}, {"p99", func(s latStats) float64 { return s.P99 }}, {"p99.9", func(s latStats) float64 { return s.P999 }}}
		for k, set := range sets {
			var pts plotter.XYs
			for _, st := range b.Throughput.Steps {
				if v := set.f(stepP99(st.Result, b.Nodes)); v > 0 {
					pts = append(pts, plotter.XY{X: st.Rate, Y: v})
				}
			}
			if len(pts) == 0 {
				continue
			}
			line, sc, err := plotter.NewLinePoints(pts)
			if err != nil {
				return err
			}
			line.Color, sc.Color = plotutil.Color(k), plotutil.Color(k)
			p.Add(line, sc)
			if i == 0 {
				p.Legend.Add(set.name, line)
				p.Legend.Top, p.Legend.Left = true, true
			}
		}
		p.X.Min = 0
		grid[i/cols][i%cols] = p
	}
	return report.WriteGrid(grid, cols, rowsN, path)
}

// latencySummary is one result per rate (medians of the repetitions).
func latencySummary(b studyBackend) []loadResult {
	var out []loadResult
	var seen []float64
	for _, r := range b.Latency {
		if slices.Contains(seen, r.Rate) {
			continue
		}
		seen = append(seen, r.Rate)
		if m, ok := latencyAt(b, r.Rate); ok {
			out = append(out, m)
		}
	}
	return out
}

// tputReading sums up the throughput search and the CPU cost per delivery.
func tputReading(rs *studyResults) []string {
	var out, sustained, none []string
	for _, b := range rs.Backends {
		t := b.Throughput
		if b.Skipped != "" || t == nil || len(t.Steps) == 0 {
			continue
		}
		if t.Max > 0 {
			sustained = append(sustained, fmt.Sprintf("%s %g msg/s (%.0f deliveries/s)", b.Name, t.Max, t.best().Result.DeliveriesPerS))
		} else {
			none = append(none, b.Name)
		}
	}
	if len(sustained) > 0 {
		out = append(out, fmt.Sprintf("Highest offered rate sustained with p99 under %.0f ms and no loss: %s.", tputP99Limit, strings.Join(sustained, ", ")))
	}
	if len(none) > 0 {
		out = append(out, fmt.Sprintf("Not even the lowest step was sustained by %s on this machine in this run (see the steps column for the p99 that failed it).", strings.Join(none, ", ")))
	}
	if rates := studyRates(rs); len(rates) > 0 {
		type c struct {
			name  string
			total float64
			text  string
		}
		var cs []c
		for _, b := range rs.Backends {
			r, ok := latencyAt(b, rates[0])
			gw, br := cpuPerM(r.GatewayCPUS, r.Deliveries), cpuPerM(r.BrokerCPUS, r.Deliveries)
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
func refusedClause(rs *studyResults, name string) string {
	for _, b := range rs.Backends {
		if b.Name == name && b.Crash != nil && b.Crash.Refused > 0 {
			return fmt.Sprintf(" (and, during the outage, in %d refused publishes)", b.Crash.Refused)
		}
	}
	return ""
}
