package study

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

var ladder = []float64{1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000}

// kneeSearch searches ladder with stride where every step up to knee
// (ladder index) passes, the 1000 step reused; it returns the result and
// the rates run, in order.
func kneeSearch(knee, stride int, allow func(float64) bool) (Tput, []float64) {
	var ran []float64
	at := func(rate float64) Run {
		if knee >= 0 && rate <= ladder[knee] {
			return okRun(rate, 10)
		}
		return okRun(rate, 80)
	}
	t := coarse(ladder, stride, 2,
		func(rate float64) (Run, bool) { return at(rate), rate == 1000 },
		allow,
		func(rate float64) (Run, error) { ran = append(ran, rate); return at(rate), nil })
	return t, ran
}

func always(float64) bool { return true }

func TestCoarseSteps(t *testing.T) {
	for _, c := range []struct {
		n, stride int
		want      []int
	}{
		{9, 2, []int{0, 2, 4, 6, 8}},
		{8, 2, []int{0, 2, 4, 6, 7}},
		{4, 1, []int{0, 1, 2, 3}},
		{4, 0, []int{0, 1, 2, 3}},
		{5, 3, []int{0, 3, 4}},
		{1, 2, []int{0}},
		{0, 2, nil},
	} {
		if got := CoarseSteps(c.n, c.stride); !slices.Equal(got, c.want) {
			t.Errorf("CoarseSteps(%d, %d) = %v, want %v", c.n, c.stride, got, c.want)
		}
	}
}

// TestSearchCoarseFine: every other step first, then the one skipped
// below the first failure; the knee to one step, whatever it is.
func TestSearchCoarseFine(t *testing.T) {
	for _, c := range []struct {
		knee int
		ran  []float64
		text string
	}{
		{-1, []float64{}, "none of the steps (1000 msg/s not sustained)"},
		{0, []float64{2000, 1500}, "1000 msg/s sustained, 1500 msg/s not"},
		{1, []float64{2000, 1500}, "1500 msg/s sustained, 2000 msg/s not"},
		{4, []float64{2000, 4000, 8000, 6000}, "4000 msg/s sustained, 6000 msg/s not"},
		{5, []float64{2000, 4000, 8000, 6000}, "6000 msg/s sustained, 8000 msg/s not"},
		{8, []float64{2000, 4000, 8000, 16000}, "sustained up to the top step (16000 msg/s)"},
	} {
		tp, ran := kneeSearch(c.knee, 2, always)
		if fmt.Sprint(ran) != fmt.Sprint(c.ran) || tp.Knee() != c.text {
			t.Errorf("knee at %d: ran %v, knee %q; want %v, %q", c.knee, ran, tp.Knee(), c.ran, c.text)
		}
		lo, hi, ok := tp.KneeRange()
		if !ok || lo != c.knee || hi != c.knee {
			t.Errorf("knee at %d: range %d-%d %v", c.knee, lo, hi, ok)
		}
		if !slices.IsSortedFunc(tp.Steps, func(a, b TputStep) int { return int(a.Rate - b.Rate) }) {
			t.Errorf("knee at %d: steps not sorted by rate: %+v", c.knee, tp.Steps)
		}
		if b := tp.Best(); c.knee >= 0 && (b == nil || b.Rate != ladder[c.knee]) {
			t.Errorf("knee at %d: best %+v", c.knee, b)
		}
	}
	// Stride 1 is the plain search: every step in order.
	if _, ran := kneeSearch(4, 1, always); fmt.Sprint(ran) != "[1500 2000 3000 4000 6000]" {
		t.Errorf("stride 1 ran %v", ran)
	}
}

// TestSearchCutShort: a search the budget stops says so, and its knee is
// a lower bound (KneeRange open above).
func TestSearchCutShort(t *testing.T) {
	n := 0
	tp, ran := kneeSearch(5, 2, func(float64) bool { n++; return n <= 2 })
	if fmt.Sprint(ran) != "[2000 4000]" || tp.Knee() != "at least 4000 msg/s (search cut short)" || !strings.HasPrefix(tp.Stopped, "time budget: 8000 msg/s not run") {
		t.Fatalf("cut in the coarse pass: ran %v, %q, %q", ran, tp.Knee(), tp.Stopped)
	}
	if lo, hi, _ := tp.KneeRange(); lo != 4 || hi != 8 {
		t.Errorf("cut in the coarse pass: range %d-%d", lo, hi)
	}
	// Cut in the fine pass: the failing coarse step bounds the range.
	n = 0
	tp, _ = kneeSearch(5, 2, func(float64) bool { n++; return n <= 3 })
	if lo, hi, _ := tp.KneeRange(); lo != 4 || hi != 5 || !strings.Contains(tp.Stopped, "(8000 msg/s not sustained") {
		t.Errorf("cut in the fine pass: range %d-%d, %q", lo, hi, tp.Stopped)
	}
	// Results files from before the ladder: the steps' rates are the
	// ladder, and a search the budget stopped is open above.
	old := Tput{Steps: []TputStep{{Rate: 1000, Pass: true}}, Max: 1000, Stopped: "time budget: 1500 msg/s and up not run"}
	if old.Knee() != "at least 1000 msg/s (search cut short)" {
		t.Errorf("old file cut short: %q", old.Knee())
	}
	old.Stopped = "every step sustained up to the search's bound (1000 msg/s)"
	if old.Knee() != "sustained up to the top step (1000 msg/s)" {
		t.Errorf("old file at its bound: %q", old.Knee())
	}
	old = Tput{Steps: []TputStep{{Rate: 1000, Pass: true}, {Rate: 1500}}, Max: 1000, Stopped: "1500 msg/s not sustained"}
	if old.Knee() != "1000 msg/s sustained, 1500 msg/s not" {
		t.Errorf("old file with a failed step: %q", old.Knee())
	}
	if _, _, ok := (&Tput{Stopped: "not searched"}).KneeRange(); ok {
		t.Error("an unsearched backend has a knee range")
	}
}

func TestCompareKnees(t *testing.T) {
	search := func(knee int) *Tput { tp, _ := kneeSearch(knee, 2, always); return &tp }
	cut := func() *Tput {
		n := 0
		tp, _ := kneeSearch(6, 2, func(float64) bool { n++; return n <= 1 })
		return &tp // at least 2000 msg/s
	}
	for _, c := range []struct {
		s, p    *Tput
		verdict string
		apart   int
	}{
		{search(4), search(4), "agree", 0},
		{search(4), search(5), "agree", 1},
		{search(1), search(0), "agree", 1},
		{search(4), search(2), "FLAG", 2},
		{search(-1), search(8), "FLAG", 9},
		{search(8), cut(), "unresolved", 0},   // the probe may be anywhere from 2000 up
		{search(0), cut(), "FLAG", 2},         // the probe sustained 2000, two steps above 1000
		{search(4), &Tput{}, "unresolved", 0}, // the probe did not search
		{search(4), &Tput{Ladder: []float64{1000}, Steps: []TputStep{{Rate: 1000}}}, "unresolved", 0},
	} {
		k := CompareKnees(c.s, c.p)
		if k.Verdict != c.verdict || k.Apart != c.apart {
			t.Errorf("study %q, probe %q: %s %d apart (%s); want %s %d", c.s.Knee(), c.p.Knee(), k.Verdict, k.Apart, k.Why, c.verdict, c.apart)
		}
		if (k.Verdict == "FLAG") != strings.Contains(k.Why, "steps apart") {
			t.Errorf("flag without its reason: %+v", k)
		}
	}
}

func TestBudget(t *testing.T) {
	now := time.Unix(1000, 0)
	b := &Budget{Deadline: now.Add(100 * time.Second), Hard: now.Add(120 * time.Second), PerBackend: 20 * time.Second, Now: func() time.Time { return now }}
	// 4 backends left: 80 s mandatory, 20 s spare, 5 s of it reserved for
	// the later searches.
	if !b.Fits() || b.Allowance(4, 5*time.Second) != 15*time.Second {
		t.Fatalf("allowance %s", b.Allowance(4, 5*time.Second))
	}
	b.Record(10 * time.Second)
	b.Record(30 * time.Second)
	if b.Estimate() != 20*time.Second {
		t.Errorf("estimate %s", b.Estimate())
	}
	// Past the soft deadline's share but before the hard one: the
	// backend runs, without optional steps.
	now = now.Add(90 * time.Second)
	if !b.Fits() || b.Allowance(1, 0) != 0 {
		t.Errorf("late: fits %v, allowance %s", b.Fits(), b.Allowance(1, 0))
	}
	now = now.Add(10 * time.Second)
	if b.Fits() {
		t.Error("too late: fits")
	}
}

func TestPlan(t *testing.T) {
	p := Plan{Backends: 10, Searched: 5, Probed: 2, ProbeSearched: 2, LatencyRuns: 1, ProbeRuns: 1,
		LatencyFor: 2 * time.Second, StepFor: 2 * time.Second, CrashFor: 8 * time.Second, Ladder: ladder, Stride: 2, Reused: 1000,
		Costs: Costs{Build: 10 * time.Second, Setup: time.Second, Run: time.Second, Probe: 4 * time.Second, Crash: 5 * time.Second}}
	// NewSteps is what the search runs (TestSearchCoarseFine).
	for knee, want := range map[int]int{-1: 0, 0: 2, 1: 2, 4: 4, 8: 4} {
		if got := p.NewSteps(knee); got != want {
			t.Errorf("NewSteps(%d) = %d, want %d", knee, got, want)
		}
	}
	if p.Mandatory(false) != 17*time.Second || p.Mandatory(true) != 23*time.Second || p.ProbeMandatory() != 6*time.Second {
		t.Errorf("mandatory %s, with the probe %s", p.Mandatory(false), p.Mandatory(true))
	}
	// Reserve: two steps each, the study's 3 s, the probe's 6 s.
	if p.Reserve(true, true) != 18*time.Second || p.Reserve(true, false) != 6*time.Second || p.Reserve(false, false) != 0 {
		t.Errorf("reserve %s %s", p.Reserve(true, true), p.Reserve(true, false))
	}
	// The probe's search starts at the study's knee: two steps there
	// and above (Search.From), none below a knee at the bottom.
	for knee, want := range map[int]int{-1: 0, 0: 1, 1: 2, 4: 2, 8: 1} {
		if got := p.ProbeNewSteps(knee); got != want {
			t.Errorf("ProbeNewSteps(%d) = %d, want %d", knee, got, want)
		}
	}
	// 10 s build + 8 x 17 s + 2 x 23 s + 5 searches x 4 steps x 3 s + 2
	// probe searches x 2 steps x 6 s.
	if got, want := p.Estimate(4), 10*time.Second+8*17*time.Second+2*23*time.Second+60*time.Second+24*time.Second; got != want {
		t.Errorf("Estimate(4) = %s, want %s", got, want)
	}
	// Confirm runs each failing (stand-in: narrowly, p99 100 ms) step
	// twice; the warm-up adds to each probe run and to each backend's
	// start.
	p.Confirm, p.WarmFor = true, time.Second
	if got := p.NewSteps(4); got != 6 {
		t.Errorf("NewSteps(4) with Confirm = %d, want 6", got)
	}
	if got := p.ProbeNewSteps(4); got != 3 {
		t.Errorf("ProbeNewSteps(4) with Confirm = %d, want 3", got)
	}
	if p.Mandatory(false) != 19*time.Second || p.ProbeStepCost() != 7*time.Second || p.ProbeMandatory() != 7*time.Second {
		t.Errorf("warm-up: mandatory %s, probe step %s, probe mandatory %s", p.Mandatory(false), p.ProbeStepCost(), p.ProbeMandatory())
	}
	p.Confirm, p.WarmFor = false, 0
	// Without a reused step, the first step is a run of its own.
	p.Reused = 0
	if got := p.NewSteps(0); got != 3 {
		t.Errorf("NewSteps(0) without reuse = %d, want 3", got)
	}
}

// TestSearchFrom: from any guess, the knee to one step, the same as the
// coarse search's; from the right guess, in at most two runs.
func TestSearchFrom(t *testing.T) {
	for knee := -1; knee < len(ladder); knee++ {
		for _, guess := range []int{-1, 0, 3, knee, 8} {
			var ran []float64
			at := func(rate float64) Run {
				if knee >= 0 && rate <= ladder[knee] {
					return okRun(rate, 10)
				}
				return okRun(rate, 80)
			}
			tp := Search{Ladder: ladder, Nodes: 2, Allow: always,
				Reuse: func(rate float64) (Run, bool) { return at(rate), rate == 1000 },
				Run:   func(rate float64) (Run, error) { ran = append(ran, rate); return at(rate), nil }}.From(guess)
			coarse, _ := kneeSearch(knee, 2, always)
			lo, hi, ok := tp.KneeRange()
			if !ok || lo != knee || hi != knee || tp.Knee() != coarse.Knee() {
				t.Errorf("knee %d, guess %d: range %d-%d, %q (coarse: %q)", knee, guess, lo, hi, tp.Knee(), coarse.Knee())
			}
			if guess == knee && len(ran) > 2 {
				t.Errorf("knee %d guessed right: ran %v", knee, ran)
			}
			if !slices.IsSortedFunc(tp.Steps, func(a, b TputStep) int { return int(a.Rate - b.Rate) }) {
				t.Errorf("knee %d, guess %d: steps not sorted", knee, guess)
			}
		}
	}
	// Cut short going down: the knee is unknown below the last step run.
	n := 0
	tp := Search{Ladder: ladder, Nodes: 2, Reuse: func(float64) (Run, bool) { return Run{}, false },
		Allow: func(float64) bool { n++; return n <= 2 },
		Run:   func(rate float64) (Run, error) { return okRun(rate, 80), nil }}.From(5)
	if tp.Knee() != "unknown (search cut short)" || !strings.HasPrefix(tp.Stopped, "time budget: 3000 msg/s not run") {
		t.Errorf("cut going down: %q, %q", tp.Knee(), tp.Stopped)
	}
}

// TestSearchConfirm: a narrow miss is run again and the second run
// judges the step; a wide miss, a loss, a step judged on the latency
// runs and a second run the budget refuses are not.
func TestSearchConfirm(t *testing.T) {
	lossy := okRun(2000, 10)
	lossy.Lost, lossy.Delivered = 3, 997
	for _, c := range []struct {
		name  string
		runs  []Run // the runs of the 2000 step, in order
		reuse bool
		allow int // runs allowed
		ran   int
		pass  bool
		first bool
		inWhy string
	}{
		{"narrow then ok", []Run{okRun(2000, 64), okRun(2000, 30)}, false, 9, 2, true, true, ""},
		{"narrow twice", []Run{okRun(2000, 64), okRun(2000, 114)}, false, 9, 2, false, true, "run twice; the first: cross p99 64.0 ms"},
		{"wide", []Run{okRun(2000, 300), okRun(2000, 30)}, false, 9, 1, false, false, "cross p99 300.0 ms"},
		{"loss", []Run{lossy, okRun(2000, 30)}, false, 9, 1, false, false, "3 deliveries lost"},
		{"reused", []Run{okRun(2000, 64)}, true, 9, 0, false, false, "cross p99 64.0 ms"},
		{"no time", []Run{okRun(2000, 64), okRun(2000, 30)}, false, 1, 1, false, false, "cross p99 64.0 ms"},
	} {
		ran, allowed := 0, 0
		tp := Search{Ladder: []float64{2000}, Nodes: 2, Confirm: true,
			Reuse: func(float64) (Run, bool) { return c.runs[0], c.reuse },
			Allow: func(float64) bool { allowed++; return allowed <= c.allow },
			Run:   func(float64) (Run, error) { ran++; return c.runs[ran-1], nil }}.Coarse()
		st := tp.Steps[0]
		if ran != c.ran || st.Pass != c.pass || (st.FirstRun != nil) != c.first || !strings.Contains(st.Why, c.inWhy) {
			t.Errorf("%s: ran %d, pass %v, first run %v, why %q; want %d, %v, %v, %q", c.name, ran, st.Pass, st.FirstRun != nil, st.Why, c.ran, c.pass, c.first, c.inWhy)
		}
		if c.first && st.Result.CrossNode.P99 != c.runs[1].CrossNode.P99 {
			t.Errorf("%s: judged by p99 %g, not the second run's", c.name, st.Result.CrossNode.P99)
		}
	}
	// Without Confirm, a narrow miss is final.
	ran := 0
	tp := Search{Ladder: []float64{2000}, Nodes: 2, Allow: always, Reuse: func(float64) (Run, bool) { return Run{}, false },
		Run: func(float64) (Run, error) { ran++; return okRun(2000, 64), nil }}.Coarse()
	if ran != 1 || tp.Steps[0].Pass {
		t.Errorf("without Confirm: ran %d", ran)
	}
}
