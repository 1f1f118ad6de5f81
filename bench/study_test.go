//go:build linux

package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/syncgate/syncgate/bench/internal/report"
)

// TestStudyTrack checks the per-subscriber accounting: first copies,
// duplicates and reordering by message id.
func TestStudyTrack(t *testing.T) {
	var tr subTrack
	for _, id := range []int{0, 1, 3, 2, 3, 5000} {
		tr.record(id)
	}
	if tr.ooo != 1 || tr.copies(3) != 2 || tr.copies(4) != 0 || tr.copies(5000) != 1 || tr.copies(99999) != 0 {
		t.Fatalf("ooo %d, copies(3) %d, copies(4) %d", tr.ooo, tr.copies(3), tr.copies(4))
	}
}

func TestStudyArgs(t *testing.T) {
	o, err := parseStudyArgs(nil)
	if err != nil || o.Full || len(o.Rates) != 1 || len(o.Backends) != len(allBackends) {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	if o.Reps != 1 || len(o.TputSteps) != 7 || o.TputSteps[0] != o.Rates[0] || o.Limit != 5*time.Minute || o.Budget >= o.Limit {
		t.Fatalf("quick: reps %d, steps %v, budget %s of %s", o.Reps, o.TputSteps, o.Budget, o.Limit)
	}
	// The mandatory runs of every backend fit in the quick budget.
	if n := time.Duration(len(allBackends)); n*o.backendEstimate() > o.Budget {
		t.Errorf("quick: %d backends x %s > budget %s", n, o.backendEstimate(), o.Budget)
	}
	if o, err = parseStudyArgs([]string{"-full", "-backends", "memory,redis"}); err != nil || len(o.Rates) != 3 || len(o.Backends) != 2 {
		t.Fatalf("-full: %+v, %v", o, err)
	}
	if o.Reps != 3 || o.Limit != 30*time.Minute || len(o.TputSteps) < 5 {
		t.Fatalf("-full: reps %d, limit %s, steps %v", o.Reps, o.Limit, o.TputSteps)
	}
	if o, err = parseStudyArgs([]string{"-backends", "redis-sharded,redis-cluster,redis-streams-aof-off,redis-streams-aof-always"}); err != nil || len(o.Backends) != 4 {
		t.Fatalf("new backends: %+v, %v", o.Backends, err)
	}
	specs := backendSpecs()
	for _, b := range allBackends {
		if specs[b].Name != b {
			t.Errorf("backend %q has no spec", b)
		}
	}
	if s := specs["redis-cluster"]; s.redisCount() != 3 || !s.RedisCluster || s.victimName() != "redis-server master 3 of 3" {
		t.Errorf("redis-cluster: %d servers, %q", s.redisCount(), s.victimName())
	}
	if s := specs["redis-sharded"]; s.redisCount() != 3 || s.RedisCluster || s.victimName() != "redis-server shard 3 of 3" {
		t.Errorf("redis-sharded: %d servers, %q", s.redisCount(), s.victimName())
	}
	if specs["redis"].redisCount() != 1 || specs["nats"].redisCount() != 0 || specs["nats"].embeddedBroker() == "" || specs["redis"].embeddedBroker() != "" {
		t.Error("redis/nats spec helpers")
	}
	if !strings.Contains(strings.Join(specs["redis-streams-aof-off"].Redis, " "), "--appendonly no") ||
		!strings.Contains(strings.Join(specs["redis-streams-aof-always"].Redis, " "), "--appendfsync always") ||
		!strings.Contains(strings.Join(specs["redis-streams"].Redis, " "), "--appendfsync everysec") {
		t.Error("redis-streams AOF variants")
	}
	if o, err = parseStudyArgs([]string{"-full", "-latency-for", "2s", "-step-for", "1s"}); err != nil || o.LatencyFor != 2*time.Second || o.TputFor != time.Second || o.Reps != 3 {
		t.Fatalf("overrides: %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-quick", "-full"}, {"-backends", "kafka"}, {"extra"}, {"-latency-for", "-1s"}} {
		if _, err := parseStudyArgs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestStudyDocs writes the document and the plots of made-up results into
// a temporary directory.
func TestStudyDocs(t *testing.T) {
	h := hdrhistogram.New(1, 120_000_000, 3)
	for i := range 1000 {
		_ = h.RecordValue(int64(500 + i*10))
	}
	lat := statsOf(h)
	rs := &studyResults{
		Scenario: "study", Mode: "quick", Command: "go run ./bench study", Started: time.Now().UTC(), Finished: time.Now().UTC(),
		Machine: machine(), Params: map[string]any{"throughput_steps": []float64{1000, 2000}, "latency_rates": []float64{1000}, "latency_reps": 1},
		Backends: []studyBackend{
			{Name: "memory", Type: "memory", Nodes: 1, Latency: []loadResult{{Rate: 1000, Acked: 10, Scheduled: 10, SameNode: lat, All: lat}},
				Crash:     &loadResult{Scheduled: 100, Acked: 90, Refused: 10, LostMsgs: 5, Events: []string{"t=1s kill"}},
				Agreement: &report.Agreement{Backend: "memory", Rate: 1000, StudyP50: 0.9, StudyP99: 5.2, ProbeP50: 0.18, ProbeP99: 1.33}},
			{Name: "redis", Type: "redis", Nodes: 2, Latency: []loadResult{{Rate: 1000, Acked: 10, Scheduled: 10, SameNode: lat, CrossNode: lat, All: lat}},
				Crash:     &loadResult{Scheduled: 100, Acked: 100},
				Agreement: &report.Agreement{Backend: "redis", Rate: 1000, StudyP50: 1.1, StudyP99: 3, ProbeP50: 1, ProbeP99: 2.5, StudyHarnessCPU: 30, ProbeHarnessCPU: 12.5}},
			{Name: "redis-cluster", Type: "redis", Nodes: 2, Killed: "redis-server master 3 of 3",
				Latency: []loadResult{okRun(1000, 10), okRun(1000, 12), okRun(1000, 11)},
				Throughput: &tputResult{Steps: []tputStep{{Rate: 1000, Pass: true, FromLatency: true, Result: okRun(1000, 11)},
					{Rate: 2000, Result: okRun(2000, 70), Why: "cross p99 70.0 ms >= 50 ms"}}, Max: 1000, Stopped: "2000 msg/s not sustained"},
				Crash: &loadResult{Scheduled: 100, Acked: 100}},
			{Name: "nats", Type: "nats", Nodes: 2, Embedded: "in gateway A",
				Latency:    []loadResult{okRun(1000, 60)},
				Throughput: &tputResult{Steps: []tputStep{{Rate: 1000, FromLatency: true, Result: okRun(1000, 60)}}, Stopped: "1000 msg/s not sustained"}},
			{Name: "redis-streams", Type: "redis-streams", Nodes: 2, Skipped: "not built"},
		},
	}
	for i, b := range rs.Backends {
		if b.Agreement != nil {
			a := report.Check(*b.Agreement)
			rs.Backends[i].Agreement = &a
		}
	}
	root := t.TempDir()
	if err := writeStudyDocs(root, rs); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(root, "docs", "benchmarks-study.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| redis | 2 | 10/10/10 |", "no acked message was lost with: redis", "memory 5 of 90 acked", "skipped: not built",
		"## Throughput", "| redis-cluster | 1000 | 10000 | 11.00 | 500.00 | 250.00 |", "| nats | none (< 1000) |", "in gateway A",
		"| redis-cluster | 2 | 300/300/300 |", "redis-server master 3 of 3", "what this run did: quick mode", "study-throughput.svg",
		"| memory | 1000 | 0.90 | 0.18 | +400 % | 5.20 | 1.33 | +291 % | - | - | FLAG: p50 differs by +400 % (limit 25 %) |",
		"| redis | 1000 | 1.10 | 1.00 | +10 % | 3.00 | 2.50 | +20 % | 30.00 | 12.50 | agree |", "**Flagged:** memory: p50",
		"Calibration (memory broker, one node, 1000 msg/s)", "Agreement check FAILED on memory", "study-latency-rate.svg",
		"What the logs buy through a broker crash (acked messages missing at one subscriber or more): redis lost 0 of 100 acked.",
		"Knees (last step with p99 under 50 ms and nothing lost; the next step is where it broke): redis-cluster sustained 1000 msg/s (2000 msg/s not sustained)",
		"Caution: the agreement check flagged memory"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("document lacks %q:\n%s", want, md)
		}
	}
	for _, f := range []string{"study-latency-cdf.svg", "study-crash-lost.svg", "study-throughput.svg", "study-latency-rate.svg"} {
		if b, err := os.ReadFile(filepath.Join(root, "docs", "plots", f)); err != nil || !strings.Contains(string(b), "<svg") {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// okRun is a made-up run at rate that passes every check.
func okRun(rate float64, p99 float64) loadResult {
	st := latStats{Count: 100, P50: 1, P99: p99}
	return loadResult{Rate: rate, Scheduled: 100, Acked: 100, Expected: 1000, Delivered: 1000, SameNode: st, CrossNode: st, All: st,
		DeliveriesPerS: rate * 10, Deliveries: 1000, GatewayCPUS: 0.5, BrokerCPUS: 0.25}
}

func TestStepVerdict(t *testing.T) {
	if ok, why := stepVerdict(okRun(1000, 10), 2); !ok {
		t.Fatalf("ok run failed: %s", why)
	}
	slow := okRun(1000, 10)
	slow.CrossNode.P99 = 60
	if ok, why := stepVerdict(slow, 2); ok || !strings.Contains(why, "cross p99 60.0 ms") {
		t.Errorf("slow cross: %v %q", ok, why)
	}
	// One node: judged by the same-node p99.
	if ok, _ := stepVerdict(slow, 1); !ok {
		t.Error("one node judged by the cross-node p99")
	}
	for name, mod := range map[string]func(*loadResult){
		"unsent":  func(r *loadResult) { r.Unsent = 5 },
		"refused": func(r *loadResult) { r.Refused = 1 },
		"lost":    func(r *loadResult) { r.Lost = 1 },
		"error":   func(r *loadResult) { r.Error = "boom\nmore" },
		"empty":   func(r *loadResult) { r.CrossNode = latStats{} },
		"nothing": func(r *loadResult) { r.Scheduled = 0 },
	} {
		r := okRun(1000, 10)
		mod(&r)
		if ok, why := stepVerdict(r, 2); ok || why == "" {
			t.Errorf("%s: passed", name)
		}
	}
}

func TestSearchThroughput(t *testing.T) {
	steps := []float64{1000, 2000, 5000, 10000}
	p99s := map[float64]float64{1000: 5, 2000: 20, 5000: 70, 10000: 5}
	var ran []float64
	run := func(rate float64) (loadResult, error) { ran = append(ran, rate); return okRun(rate, p99s[rate]), nil }
	reuse := func(rate float64) (loadResult, bool) {
		if rate == 1000 {
			return okRun(rate, p99s[rate]), true
		}
		return loadResult{}, false
	}
	always := func(float64) bool { return true }
	// Stops at the first failing step; the 1000 step reuses the latency run.
	r := searchThroughput(steps, 2, reuse, always, run)
	if r.Max != 2000 || len(r.Steps) != 3 || !r.Steps[0].FromLatency || r.Steps[1].FromLatency || r.Steps[2].Pass ||
		len(ran) != 2 || !strings.Contains(r.Stopped, "5000 msg/s not sustained") {
		t.Fatalf("search: max %g, steps %+v, ran %v, stopped %q", r.Max, r.Steps, ran, r.Stopped)
	}
	if b := r.best(); b == nil || b.Rate != 2000 {
		t.Errorf("best: %+v", b)
	}
	// Every step passes: the bound ends the search.
	p99s[5000] = 10
	ran = nil
	if r = searchThroughput(steps, 2, reuse, always, run); r.Max != 10000 || len(ran) != 3 || !strings.Contains(r.Stopped, "bound") {
		t.Errorf("all pass: max %g ran %v %q", r.Max, ran, r.Stopped)
	}
	// No time: only the reused step.
	ran = nil
	r = searchThroughput(steps, 2, reuse, func(float64) bool { return false }, run)
	if r.Max != 1000 || len(ran) != 0 || len(r.Steps) != 1 || !strings.Contains(r.Stopped, "time budget: 2000") {
		t.Errorf("no time: max %g ran %v %q", r.Max, ran, r.Stopped)
	}
	// The first step fails: nothing sustained, best is the first step;
	// a run error counts as a failure.
	p99s[1000] = 80
	if r = searchThroughput(steps, 2, reuse, always, run); r.Max != 0 || len(r.Steps) != 1 || r.best().Rate != 1000 {
		t.Errorf("first fails: %+v", r)
	}
	r = searchThroughput([]float64{500}, 2, reuse, always, func(float64) (loadResult, error) { return loadResult{}, errors.New("gone") })
	if r.Max != 0 || !strings.Contains(r.Stopped, "error: gone") {
		t.Errorf("run error: %+v", r)
	}
}

func TestMedianRun(t *testing.T) {
	a, b, c := okRun(1000, 30), okRun(1000, 10), okRun(1000, 20)
	a.Lost, b.Dup, c.Unsent = 2, 3, 4
	a.GatewayCPUS, b.GatewayCPUS, c.GatewayCPUS = 3, 1, 2
	c.CrossNode.CDF = [][2]float64{{99, 20}}
	m := medianRun([]loadResult{a, b, c})
	if m.CrossNode.P99 != 20 || len(m.CrossNode.CDF) != 1 || m.GatewayCPUS != 2 || m.Lost != 2 || m.Dup != 3 || m.Unsent != 4 || m.Scheduled != 300 {
		t.Fatalf("median: %+v", m)
	}
	c.BrokerCPUS = -1
	if m = medianRun([]loadResult{a, b, c}); m.BrokerCPUS != -1 {
		t.Errorf("unknown CPU: %g", m.BrokerCPUS)
	}
	if m = medianRun([]loadResult{a}); m.CrossNode.P99 != 30 {
		t.Error("one run")
	}
	if cpuPerM(2, 4_000_000) != 0.5 || cpuPerM(-1, 10) != -1 || cpuPerM(1, 0) != -1 {
		t.Error("cpuPerM")
	}
}

func TestStudyBudget(t *testing.T) {
	now := time.Unix(1000, 0)
	b := &studyBudget{deadline: now.Add(100 * time.Second), hard: now.Add(120 * time.Second), perBackend: 20 * time.Second, now: func() time.Time { return now }}
	// 4 backends left: 80 s mandatory, 20 s spare, 5 s each.
	if !b.fits() || b.allowance(4) != 5*time.Second {
		t.Fatalf("allowance %s", b.allowance(4))
	}
	b.record(10 * time.Second)
	b.record(30 * time.Second)
	if b.estimate() != 20*time.Second {
		t.Errorf("estimate %s", b.estimate())
	}
	// Past the soft deadline's share but before the hard one: the
	// backend runs, without throughput steps.
	now = now.Add(90 * time.Second)
	if !b.fits() || b.allowance(1) != 0 {
		t.Errorf("late: fits %v, allowance %s", b.fits(), b.allowance(1))
	}
	now = now.Add(10 * time.Second)
	if b.fits() {
		t.Error("too late: fits")
	}
}
