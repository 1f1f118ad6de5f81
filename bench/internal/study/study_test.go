package study

import (
	"errors"
	"strings"
	"testing"
)

// okRun is a made-up run at rate that passes every check.
func okRun(rate float64, p99 float64) Run {
	st := LatStats{Count: 100, P50: 1, P99: p99}
	return Run{Rate: rate, Scheduled: 100, Acked: 100, Expected: 1000, Delivered: 1000, SameNode: st, CrossNode: st, All: st,
		DeliveriesPerS: rate * 10, Deliveries: 1000, GatewayCPUS: 0.5, BrokerCPUS: 0.25}
}

func TestStepVerdict(t *testing.T) {
	if ok, why := StepVerdict(okRun(1000, 10), 2); !ok {
		t.Fatalf("ok run failed: %s", why)
	}
	stall := okRun(1000, 10)
	stall.PublishLagMaxMs, stall.PublishLagP99Ms = 140, 2 // one stall of the publisher process
	if ok, why := StepVerdict(stall, 2); !ok {
		t.Errorf("one publisher stall failed the step: %s", why)
	}
	slow := okRun(1000, 10)
	slow.CrossNode.P99 = 60
	if ok, why := StepVerdict(slow, 2); ok || !strings.Contains(why, "cross p99 60.0 ms") {
		t.Errorf("slow cross: %v %q", ok, why)
	}
	// One node: judged by the same-node p99.
	if ok, _ := StepVerdict(slow, 1); !ok {
		t.Error("one node judged by the cross-node p99")
	}
	for name, mod := range map[string]func(*Run){
		"unsent":  func(r *Run) { r.Unsent = 5 },
		"behind":  func(r *Run) { r.PublishLagP99Ms = 50 },
		"refused": func(r *Run) { r.Refused = 1 },
		"lost":    func(r *Run) { r.Lost = 1 },
		"error":   func(r *Run) { r.Error = "boom\nmore" },
		"empty":   func(r *Run) { r.CrossNode = LatStats{} },
		"nothing": func(r *Run) { r.Scheduled = 0 },
	} {
		r := okRun(1000, 10)
		mod(&r)
		if ok, why := StepVerdict(r, 2); ok || why == "" {
			t.Errorf("%s: passed", name)
		}
	}
}

func TestSearchThroughput(t *testing.T) {
	steps := []float64{1000, 2000, 5000, 10000}
	p99s := map[float64]float64{1000: 5, 2000: 20, 5000: 70, 10000: 5}
	var ran []float64
	run := func(rate float64) (Run, error) { ran = append(ran, rate); return okRun(rate, p99s[rate]), nil }
	reuse := func(rate float64) (Run, bool) {
		if rate == 1000 {
			return okRun(rate, p99s[rate]), true
		}
		return Run{}, false
	}
	always := func(float64) bool { return true }
	// Stops at the first failing step; the 1000 step reuses the latency run.
	r := coarse(steps, 1, 2, reuse, always, run)
	if r.Max != 2000 || len(r.Steps) != 3 || !r.Steps[0].FromLatency || r.Steps[1].FromLatency || r.Steps[2].Pass ||
		len(ran) != 2 || !strings.Contains(r.Stopped, "5000 msg/s not sustained") {
		t.Fatalf("search: max %g, steps %+v, ran %v, stopped %q", r.Max, r.Steps, ran, r.Stopped)
	}
	if b := r.Best(); b == nil || b.Rate != 2000 {
		t.Errorf("best: %+v", b)
	}
	// Every step passes: the bound ends the search.
	p99s[5000] = 10
	ran = nil
	if r = coarse(steps, 1, 2, reuse, always, run); r.Max != 10000 || len(ran) != 3 || !strings.Contains(r.Stopped, "bound") {
		t.Errorf("all pass: max %g ran %v %q", r.Max, ran, r.Stopped)
	}
	// No time: only the reused step.
	ran = nil
	r = coarse(steps, 1, 2, reuse, func(float64) bool { return false }, run)
	if r.Max != 1000 || len(ran) != 0 || len(r.Steps) != 1 || !strings.Contains(r.Stopped, "time budget: 2000") {
		t.Errorf("no time: max %g ran %v %q", r.Max, ran, r.Stopped)
	}
	// The first step fails: nothing sustained, best is the first step;
	// a run error counts as a failure.
	p99s[1000] = 80
	if r = coarse(steps, 1, 2, reuse, always, run); r.Max != 0 || len(r.Steps) != 1 || r.Best().Rate != 1000 {
		t.Errorf("first fails: %+v", r)
	}
	r = coarse([]float64{500}, 1, 2, reuse, always, func(float64) (Run, error) { return Run{}, errors.New("gone") })
	if r.Max != 0 || !strings.Contains(r.Stopped, "error: gone") {
		t.Errorf("run error: %+v", r)
	}
}

func TestMedianRun(t *testing.T) {
	a, b, c := okRun(1000, 30), okRun(1000, 10), okRun(1000, 20)
	a.Lost, b.Dup, c.Unsent = 2, 3, 4
	a.GatewayCPUS, b.GatewayCPUS, c.GatewayCPUS = 3, 1, 2
	c.CrossNode.CDF = [][2]float64{{99, 20}}
	m := MedianRun([]Run{a, b, c})
	if m.CrossNode.P99 != 20 || len(m.CrossNode.CDF) != 1 || m.GatewayCPUS != 2 || m.Lost != 2 || m.Dup != 3 || m.Unsent != 4 || m.Scheduled != 300 {
		t.Fatalf("median: %+v", m)
	}
	c.BrokerCPUS = -1
	if m = MedianRun([]Run{a, b, c}); m.BrokerCPUS != -1 {
		t.Errorf("unknown CPU: %g", m.BrokerCPUS)
	}
	if m = MedianRun([]Run{a}); m.CrossNode.P99 != 30 {
		t.Error("one run")
	}
	if CPUPerM(2, 4_000_000) != 0.5 || CPUPerM(-1, 10) != -1 || CPUPerM(1, 0) != -1 {
		t.Error("CPUPerM")
	}
}

func TestSpread(t *testing.T) {
	a, b, c := okRun(1000, 30), okRun(1000, 10), okRun(1000, 20)
	a.CrossNode.P50, b.CrossNode.P50, c.CrossNode.P50 = 2, 1, 3
	bk := Backend{Nodes: 2, Latency: []Run{a, b, c, okRun(2000, 99)}}
	p50, p99, n := bk.Spread(1000)
	if n != 3 || p50 != [2]float64{1, 3} || p99 != [2]float64{10, 30} {
		t.Fatalf("spread: p50 %v p99 %v n %d", p50, p99, n)
	}
	if _, _, n := bk.Spread(500); n != 0 {
		t.Errorf("no runs at 500: n %d", n)
	}
}

func TestMedian(t *testing.T) {
	v := []float64{3, 1, 2}
	if Median(v) != 2 || Median([]float64{4, 1, 3, 2}) != 2.5 || Median(nil) != 0 || v[0] != 3 {
		t.Errorf("median: %g %g %g, input %v", Median(v), Median([]float64{4, 1, 3, 2}), Median(nil), v)
	}
}

// coarse is Search.Coarse without confirmation, on a ladder, a stride
// and a node count.
func coarse(steps []float64, stride, nodes int, reuse func(float64) (Run, bool), allow func(float64) bool, run func(float64) (Run, error)) Tput {
	return Search{Ladder: steps, Stride: stride, Nodes: nodes, Reuse: reuse, Allow: allow, Run: run}.Coarse()
}
