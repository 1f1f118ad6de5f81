//go:build linux

// report.go prints the header (command line, machine) and the results
// table, one column per run, and writes the raw results as JSON to
// <dir>/<scenario>-<timestamp>.json.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/syncgate/syncgate/bench/internal/proc"
	"github.com/syncgate/syncgate/bench/internal/report"
)

// resultsFile is the JSON written for one bench invocation.
type resultsFile struct {
	Scenario string       `json:"scenario"`
	Command  string       `json:"command"`
	Args     []string     `json:"args"`
	Started  time.Time    `json:"started"`
	Finished time.Time    `json:"finished"`
	Machine  proc.Machine `json:"machine"`
	// GatewaySource is the commit the gateway was built from, "+dirty"
	// when the working tree had uncommitted changes outside bench/.
	GatewaySource string         `json:"gateway_source"`
	Options       map[string]any `json:"options"`
	Runs          []runResult    `json:"runs"`
}

// runResult is one scenario run against one gateway process.
type runResult struct {
	Scenario string        `json:"scenario"`
	IO       string        `json:"io"`
	Broker   string        `json:"broker,omitempty"` // -broker; "" = gateway default
	Run      int           `json:"run"`              // 1..-runs
	Error    string        `json:"error,omitempty"`
	Conns    *connsResult  `json:"conns,omitempty"`
	Fanout   *fanoutResult `json:"fanout,omitempty"`
	Gateway  gatewayInfo   `json:"gateway"`            // the first (or only) gateway
	Gateways []gatewayInfo `json:"gateways,omitempty"` // all of them, when more than one
	problems int           // a median column: runs that reported a problem
}

// runLabel names one run in progress lines and errors.
func runLabel(mode, broker string, n, runs int) string {
	l := "io=" + mode
	if broker != "" {
		l += " broker=" + broker
	}
	if runs > 1 {
		l += fmt.Sprintf(" run %d/%d", n, runs)
	}
	return l
}

// commandLine is how bench was invoked, as the user would type it.
func commandLine(args []string) string {
	exe := filepath.Base(os.Args[0])
	if exe == "bench" && strings.Contains(os.Args[0], "go-build") {
		exe = "go run ./bench" // built by go run into a temporary directory
	}
	// -out names a directory of this machine and changes no figure: a
	// document shows the command without it.
	var kept []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-out" || a == "--out":
			i++ // and its value
		case strings.HasPrefix(a, "-out=") || strings.HasPrefix(a, "--out="):
		default:
			kept = append(kept, a)
		}
	}
	return strings.TrimSpace(exe + " " + strings.Join(kept, " "))
}

// sourceVersion describes the gateway source in root: commit, and whether
// files outside bench/ and docs/ (which do not go into the gateway binary)
// had uncommitted changes.
func sourceVersion(ctx context.Context, root string) string {
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	commit := git("rev-parse", "--short", "HEAD")
	if commit == "" {
		return "working tree (not a git checkout)"
	}
	if git("status", "--porcelain", "--", ".", ":(exclude)bench", ":(exclude)docs") != "" {
		commit += "+dirty"
	}
	return commit
}

func printHeader(w io.Writer, rf *resultsFile) {
	m := rf.Machine
	fmt.Fprintf(w, "command: %s\n", rf.Command)
	fmt.Fprintf(w, "machine: nproc=%d GOMAXPROCS=%d kernel=%s %s mem=%s nofile=%d\n",
		m.NumCPU, m.GOMAXPROCS, m.Kernel, m.GoVersion, m.MemTotal, m.NoFile)
	fmt.Fprintf(w, "started: %s\n", rf.Started.Format(time.RFC3339))
}

// row is one line of the table: a label and how to show it for a run.
type row struct {
	label string
	show  func(r *runResult) string
}

// column is one column of the table: one run, or (bigroom) the median of
// the runs of one broker.
type column struct {
	label string
	run   *runResult
}

// tableCells is the table as a grid: a header line and one line per row.
func tableCells(rf *resultsFile) [][]string {
	var rows []row
	var cols []column
	switch rf.Scenario {
	case "conns":
		rows = connsRows(rf)
	case "bigroom":
		rows = bigroomRows()
	default:
		rows = fanoutRows()
	}
	if rf.Scenario == "bigroom" {
		cols = medianColumns(rf.Runs)
	} else {
		for i := range rf.Runs {
			r := &rf.Runs[i]
			l := "io=" + r.IO
			if r.Broker != "" && rf.Scenario != "conns" {
				l += ", " + r.Broker
			}
			cols = append(cols, column{l, r})
		}
	}
	if rf.Scenario != "bigroom" {
		rows = append(rows, row{"after clients closed: conns, goroutines", func(r *runResult) string {
			g := r.Gateway
			if g.ConnsAfterClose < 0 {
				return "-"
			}
			if len(r.Gateways) > 1 {
				conns, gr := 0, 0
				for _, g := range r.Gateways {
					conns, gr = conns+max(0, g.ConnsAfterClose), gr+max(0, g.GoroutinesAfterClose)
				}
				return fmt.Sprintf("%d, %d (all %d processes)", conns, gr, len(r.Gateways))
			}
			return fmt.Sprintf("%d, %d (%.1fs)", g.ConnsAfterClose, g.GoroutinesAfterClose, g.CloseWaitS)
		}})
	}
	cells := [][]string{{rf.Scenario}}
	for _, c := range cols {
		cells[0] = append(cells[0], c.label)
	}
	for _, rw := range rows {
		line := []string{rw.label}
		for _, c := range cols {
			line = append(line, rw.show(c.run))
		}
		cells = append(cells, line)
	}
	return cells
}

func printTable(w io.Writer, rf *resultsFile) {
	fmt.Fprintf(w, "\ngateway: %s\n\n", rf.GatewaySource)
	cells := tableCells(rf)
	for _, line := range cells {
		line[0] = strings.ReplaceAll(line[0], "**", "") // markdown bold, for -docs
	}
	report.PrintColumns(w, cells)
	runs := 1
	for _, r := range rf.Runs {
		runs = max(runs, r.Run)
	}
	for _, r := range rf.Runs {
		label := runLabel(r.IO, r.Broker, r.Run, runs)
		if r.Error != "" {
			fmt.Fprintf(w, "\n%s: PROBLEM:\n%s\n", label, proc.Indent(r.Error))
		}
		gws := r.Gateways
		if len(gws) == 0 {
			gws = []gatewayInfo{r.Gateway}
		}
		for _, g := range gws {
			if s := strings.TrimSpace(dropKnownWarnings(g.Stderr)); s != "" && !strings.Contains(r.Error, s) {
				fmt.Fprintf(w, "\n%s: gateway %s stderr:\n%s\n", label, g.Addr, proc.Indent(s))
			}
			if g.Exit != "" && !strings.Contains(g.Exit, "SIGTERM: exit status 0") {
				fmt.Fprintf(w, "\n%s: gateway %s %s\n", label, g.Addr, g.Exit)
			}
		}
	}
}

// dropKnownWarnings removes from a gateway's stderr the warning every
// bench gateway prints: it runs without authentication on purpose.
func dropKnownWarnings(stderr string) string {
	var b strings.Builder
	for line := range strings.Lines(stderr) {
		if !strings.Contains(line, `msg="authentication is OFF`) {
			b.WriteString(line)
		}
	}
	return b.String()
}

func connsRows(rf *resultsFile) []row {
	c := func(f func(c *connsResult) string) func(*runResult) string {
		return func(r *runResult) string {
			if r.Conns == nil {
				return "-"
			}
			return f(r.Conns)
		}
	}
	multi := false
	for _, r := range rf.Runs {
		multi = multi || r.Conns != nil && r.Conns.Gateways > 1
	}
	var rows []row
	if multi {
		rows = append(rows, connsGatewayRows()...)
	}
	rows = append(rows, connsTotalRows(c)...)
	if multi {
		for i := range rows {
			if l := rows[i].label; strings.HasPrefix(l, "RSS ") || strings.HasPrefix(l, "goroutines") ||
				strings.HasPrefix(l, "threads") || strings.HasPrefix(l, "gateway CPU") {
				rows[i].label = l + " (sum of processes)"
			}
		}
	}
	return rows
}

func connsTotalRows(c func(f func(c *connsResult) string) func(*runResult) string) []row {
	return []row{
		{"connections subscribed", c(func(c *connsResult) string { return fmt.Sprintf("%d/%d", c.Dial.OK, c.Conns) })},
		{"channels", c(func(c *connsResult) string { return fmt.Sprint(c.Channels) })},
		{"loadgen procs x source addrs", c(func(c *connsResult) string { return fmt.Sprintf("%d x %d", c.LoadgenProcs, c.SourceAddrs) })},
		{"dial rate (conn/s)", c(func(c *connsResult) string { return fmt.Sprintf("%.0f in %.1fs", c.Dial.Rate, c.Dial.Seconds) })},
		{"upgrades refused (503, retried)", c(func(c *connsResult) string { return fmt.Sprint(c.Dial.Refused) })},
		{"RSS baseline", c(func(c *connsResult) string { return mib(c.RSSBaselineKiB) })},
		{"RSS all subscribed", c(func(c *connsResult) string { return mib(c.RSSConnectedKiB) })},
		{"RSS after settle", c(func(c *connsResult) string { return mib(c.RSSSettledKiB) })},
		{"RSS after window", c(func(c *connsResult) string { return mib(c.RSSLaterKiB) })},
		{"RSS peak (VmHWM)", c(func(c *connsResult) string { return mib(c.HWMKiB) })},
		{"KiB/conn after settle", c(func(c *connsResult) string { return fmt.Sprintf("%.2f", c.KiBPerConnSettle) })},
		{"KiB/conn after window", c(func(c *connsResult) string { return fmt.Sprintf("%.2f", c.KiBPerConnLater) })},
		{"goroutines baseline -> loaded", c(func(c *connsResult) string {
			return fmt.Sprintf("%d -> %d", c.GoroutinesBaseline, c.GoroutinesLoaded)
		})},
		{"threads baseline -> loaded", c(func(c *connsResult) string { return fmt.Sprintf("%d -> %d", c.ThreadsBaseline, c.ThreadsLoaded) })},
		{"idle window", c(func(c *connsResult) string { return fmt.Sprintf("%.1fs", c.WindowSeconds) })},
		{"gateway CPU in window", c(func(c *connsResult) string { return fmt.Sprintf("%.2fs (%.1f%% core)", c.CPUSeconds, c.CPUPercent) })},
		{"pings in window", c(func(c *connsResult) string { return fmt.Sprintf("%d (%.0f/s)", c.PingsInWindow, c.PingsPerSec) })},
		{"window CPU / pings (all idle work)", c(func(c *connsResult) string {
			if c.PingsInWindow == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f µs", c.CPUSeconds*1e6/float64(c.PingsInWindow))
		})},
		{"**CPU per idle connection**", c(func(c *connsResult) string {
			// x µs of CPU per second per connection is x% of a core per
			// 10,000 connections.
			return fmt.Sprintf("%.2f µs/s (%.2f%% core per 10k conns)", c.CPUMicrosPerConnSec, c.CPUMicrosPerConnSec)
		})},
		{"kernel slab + TCP mem per conn (both ends)", c(func(c *connsResult) string { return fmt.Sprintf("%.2f KiB", c.KernelKiBPerConn) })},
		{"connections open / lost", c(func(c *connsResult) string { return fmt.Sprintf("%d / %d", c.Open, c.Lost) })},
		{"loadgen goroutines (all procs)", c(func(c *connsResult) string { return fmt.Sprint(c.LoadgenGoroutines) })},
	}
}

// connsGatewayRows are the per-process rows of a run with several
// gateway processes: the range over the processes.
func connsGatewayRows() []row {
	c := func(f func(c *connsResult) string) func(*runResult) string {
		return func(r *runResult) string {
			if r.Conns == nil || len(r.Conns.PerGateway) == 0 {
				return "-"
			}
			return f(r.Conns)
		}
	}
	rng := func(c *connsResult, v func(g gatewayConns) float64, format string) string {
		lo, hi := v(c.PerGateway[0]), v(c.PerGateway[0])
		for _, g := range c.PerGateway {
			lo, hi = min(lo, v(g)), max(hi, v(g))
		}
		if fmt.Sprintf(format, lo) == fmt.Sprintf(format, hi) {
			return fmt.Sprintf(format, lo)
		}
		return fmt.Sprintf(format+" - "+format, lo, hi)
	}
	return []row{
		{"gateway processes x connections", c(func(c *connsResult) string {
			return fmt.Sprintf("%d x %s", c.Gateways, rng(c, func(g gatewayConns) float64 { return float64(g.HealthConns) }, "%.0f"))
		})},
		{"broker", c(func(c *connsResult) string { return c.Broker })},
		{"per process: RSS after window", c(func(c *connsResult) string {
			return rng(c, func(g gatewayConns) float64 { return float64(g.RSSLaterKiB) / 1024 }, "%.1f") + " MiB"
		})},
		{"**per process: KiB/conn after window**", c(func(c *connsResult) string {
			return rng(c, func(g gatewayConns) float64 { return g.KiBPerConn }, "%.2f")
		})},
		{"per process: goroutines", c(func(c *connsResult) string {
			return rng(c, func(g gatewayConns) float64 { return float64(g.Goroutines) }, "%.0f")
		})},
		{"per process: CPU in window", c(func(c *connsResult) string {
			return rng(c, func(g gatewayConns) float64 { return g.CPUPercent }, "%.1f") + "% core"
		})},
	}
}

func fanoutRows() []row {
	f := func(fn func(f *fanoutResult) string) func(*runResult) string {
		return func(r *runResult) string {
			if r.Fanout == nil {
				return "-"
			}
			return fn(r.Fanout)
		}
	}
	lat := func(l latencyStats) string {
		return fmt.Sprintf("%.2f / %.2f / %.2f / %.2f / %.2f", l.P50, l.P90, l.P99, l.P999, l.Max)
	}
	return []row{
		{"subscribers x channels", f(func(f *fanoutResult) string { return fmt.Sprintf("%d x %d", f.Subs, f.Channels) })},
		{"subscribed / publishers", f(func(f *fanoutResult) string { return fmt.Sprintf("%d / %d", f.Dial.OK, f.PubDial.OK) })},
		{"rate per channel, duration", f(func(f *fanoutResult) string { return fmt.Sprintf("%g/s, %gs", f.Rate, f.DurationS) })},
		{"loadgen procs x source addrs", f(func(f *fanoutResult) string { return fmt.Sprintf("%d+1 x %d", f.LoadgenProcs, f.SourceAddrs) })},
		{"dial rate (conn/s)", f(func(f *fanoutResult) string { return fmt.Sprintf("%.0f in %.1fs", f.Dial.Rate, f.Dial.Seconds) })},
		{"upgrades refused (503, retried)", f(func(f *fanoutResult) string { return fmt.Sprint(f.Dial.Refused + f.PubDial.Refused) })},
		{"quiet before publishing", f(func(f *fanoutResult) string { return fmt.Sprintf("%v after %.1fs", f.Quiet, f.QuietWaitS) })},
		{"messages published / scheduled", f(func(f *fanoutResult) string { return fmt.Sprintf("%d / %d", f.Published, f.Scheduled) })},
		{"publisher acks", f(func(f *fanoutResult) string { return fmt.Sprint(f.PubAcks) })},
		{"max publish lag (ms)", f(func(f *fanoutResult) string { return fmt.Sprintf("%.2f", f.MaxPubLagMs) })},
		{"deliveries expected", f(func(f *fanoutResult) string { return fmt.Sprint(f.Expected) })},
		{"deliveries received", f(func(f *fanoutResult) string { return fmt.Sprint(f.Received) })},
		{"lost (subs affected)", f(func(f *fanoutResult) string { return fmt.Sprintf("%d (%d)", f.Lost, f.SubsWithLoss) })},
		{"duplicates / out of order / gaps", f(func(f *fanoutResult) string {
			return fmt.Sprintf("%d / %d / %d", f.Duplicates, f.OutOfOrder, f.SeqGaps)
		})},
		{"deliveries/s", f(func(f *fanoutResult) string { return fmt.Sprintf("%.0f", f.DeliveriesPerSec) })},
		{"gateway CPU (window)", f(func(f *fanoutResult) string {
			return fmt.Sprintf("%.2fs / %.1fs (%.0f%% core)", f.GatewayCPUS, f.CPUWindowS, 100*f.GatewayCPUS/max(f.CPUWindowS, 1e-9))
		})},
		{"gateway CPU per delivery", f(func(f *fanoutResult) string { return fmt.Sprintf("%.2f µs", f.CPUMicrosPerDlv) })},
		{"loadgen CPU (same window)", f(func(f *fanoutResult) string { return fmt.Sprintf("%.2fs", f.LoadgenCPUS) })},
		{"latency ms p50/p90/p99/p99.9/max", f(func(f *fanoutResult) string { return lat(f.Latency) })},
		{"to last sub ms p50/p99/max", f(func(f *fanoutResult) string {
			return fmt.Sprintf("%.2f / %.2f / %.2f", f.ToLast.P50, f.ToLast.P99, f.ToLast.Max)
		})},
		{"messages not reaching all subs", f(func(f *fanoutResult) string { return fmt.Sprint(f.ToLastMissing) })},
		{"RSS baseline -> loaded -> after", f(func(f *fanoutResult) string {
			return fmt.Sprintf("%s -> %s -> %s", mib(f.RSSBaselineKiB), mib(f.RSSLoadedKiB), mib(f.RSSAfterKiB))
		})},
		{"gateway goroutines (loaded)", f(func(f *fanoutResult) string { return fmt.Sprint(f.GoroutinesLoaded) })},
		{"subscriber conns lost", f(func(f *fanoutResult) string { return fmt.Sprint(f.ConnsLost) })},
		{"other ops received", f(func(f *fanoutResult) string { return opsString(f.Ops) })},
	}
}

func opsString(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// writeResults writes rf as JSON into dir.
func writeResults(dir string, rf *resultsFile) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	name := fmt.Sprintf("%s-%s.json", rf.Scenario, rf.Started.Format("20060102-150405"))
	path := filepath.Join(dir, name)
	b, err := json.MarshalIndent(rf, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", err
	}
	return path, nil
}
