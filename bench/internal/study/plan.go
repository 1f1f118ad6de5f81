package study

import "time"

// Budget keeps a study within its time limits: a backend whose mandatory
// runs (latency, the probe's agreement run, crash) no longer fit before
// the hard deadline is skipped, and each backend may spend on optional
// runs (throughput steps, the probe's search) its share of what the
// mandatory runs of the remaining backends leave before the soft
// deadline.
type Budget struct {
	Deadline   time.Time     // soft
	Hard       time.Time     // the hard limit less a margin for the report
	PerBackend time.Duration // first guess of one backend's mandatory runs
	Now        func() time.Time
	measured   []time.Duration
}

// Estimate is the mean of the measured mandatory times, or the first
// guess before any.
func (b *Budget) Estimate() time.Duration {
	if len(b.measured) == 0 {
		return b.PerBackend
	}
	var sum time.Duration
	for _, d := range b.measured {
		sum += d
	}
	return sum / time.Duration(len(b.measured))
}

// Left is the time before the soft deadline.
func (b *Budget) Left() time.Duration { return b.Deadline.Sub(b.Now()) }

// Fits: the next backend's mandatory runs (estimate + 10%) fit before
// the hard deadline.
func (b *Budget) Fits() bool { return b.Hard.Sub(b.Now()) >= b.Estimate()*11/10 }

// Allowance is the optional time of the next backend: the time left
// before the soft deadline less the mandatory runs of the remaining
// backends (this one included) and reserve, what the later backends'
// searches are guaranteed (Plan.Reserve) and any other mandatory time
// not in the estimate. Greedy by design: a backend may use whatever the
// others are not guaranteed, so a high knee early in the run is found
// and what it leaves goes to the next.
func (b *Budget) Allowance(remaining int, reserve time.Duration) time.Duration {
	return max(0, b.Left()-time.Duration(remaining)*b.Estimate()-reserve)
}

// Record adds the mandatory time one backend took.
func (b *Budget) Record(mandatory time.Duration) { b.measured = append(b.measured, mandatory) }

// Costs are what the study's pieces take beyond the measured time they
// publish for; measured on a loaded 2-core machine.
type Costs struct {
	Build time.Duration // building the gateway
	Setup time.Duration // one backend's processes started, loadgens connected
	Run   time.Duration // one run on connected loadgens: readiness, drain, collect
	Probe time.Duration // one probe run: fresh gateway, broker and loadgens, settle, drain
	Crash time.Duration // one crash run: own processes, drain, stop
}

// DefaultCosts were measured on the 2-core study machine under load
// (load average 2-5): a run of d took d + 0.6 s, a probe run d + 3.5 s
// (memory) to d + 5 s (redis), a crash run CrashFor + 3 to 5 s.
var DefaultCosts = Costs{Build: 10 * time.Second, Setup: 1500 * time.Millisecond, Run: time.Second,
	Probe: 4500 * time.Millisecond, Crash: 5 * time.Second}

// Plan is what a study runs, for estimating its wall time.
type Plan struct {
	Backends int // run
	Searched int // with a throughput search
	Probed   int // with the probe's agreement runs
	// ProbeSearched: probed backends whose knee the probe searches too
	// (a subset of Searched and of Probed).
	ProbeSearched int
	LatencyRuns   int // per backend: rates x repetitions
	ProbeRuns     int // agreement runs per probed backend
	LatencyFor    time.Duration
	StepFor       time.Duration
	CrashFor      time.Duration
	Ladder        []float64 // the search's steps
	Stride        int
	Reused        float64 // the ladder rate the latency (and agreement) runs measured already; 0: none
	// Confirm: the searches run a narrow miss again (Search.Confirm).
	Confirm bool
	// WarmFor: the load at a run's rate on fresh processes before its
	// measured window (every probe run; the study's after each start).
	WarmFor time.Duration
	Costs   Costs
}

// NewSteps is how many runs the study's search (Search.Coarse) takes
// beyond the reused step when every step up to ladder index knee passes
// and the others fail (narrowly: with Confirm, the failing steps are run
// twice); knee -1: none passes, len(Ladder)-1: all do.
func (p Plan) NewSteps(knee int) int {
	n := 0
	p.standIn(knee, &n).Coarse()
	return n
}

// ProbeNewSteps is how many runs the probe's search (Search.From the
// study's knee) takes when its knee is the study's, at ladder index
// knee.
func (p Plan) ProbeNewSteps(knee int) int {
	n := 0
	p.standIn(knee, &n).From(knee)
	return n
}

// standIn is a search on stand-in runs (stand) with the knee at ladder
// index knee; it counts the runs in *n.
func (p Plan) standIn(knee int, n *int) Search {
	return Search{Ladder: p.Ladder, Stride: p.Stride, Nodes: 1, Confirm: p.Confirm,
		Reuse: func(rate float64) (Run, bool) {
			if rate == p.Reused && p.Reused > 0 {
				return stand(knee, p.Ladder, rate), true
			}
			return Run{}, false
		},
		Allow: func(float64) bool { return true },
		Run: func(rate float64) (Run, error) {
			*n++
			return stand(knee, p.Ladder, rate), nil
		}}
}

// stand is a stand-in run at rate that passes when rate is at or below
// the knee's.
func stand(knee int, ladder []float64, rate float64) Run {
	p99 := 1.0
	if knee < 0 || rate > ladder[knee] {
		p99 = 2 * TputP99Limit
	}
	st := LatStats{Count: 1, P50: 1, P99: p99}
	return Run{Rate: rate, Scheduled: 1, Acked: 1, SameNode: st, CrossNode: st, All: st}
}

// Mandatory is one backend's mandatory time: its processes, latency runs
// and crash run; with probe, the probe's agreement runs too.
func (p Plan) Mandatory(probe bool) time.Duration {
	c := p.Costs
	d := c.Setup + time.Duration(p.LatencyRuns)*(p.LatencyFor+c.Run) + p.CrashFor + c.Crash
	if p.WarmFor > 0 {
		d += p.WarmFor + c.Run // the warm-up after the processes start
	}
	if probe {
		d += p.ProbeMandatory()
	}
	return d
}

// ProbeMandatory is the probe's agreement runs on one backend.
func (p Plan) ProbeMandatory() time.Duration {
	return time.Duration(max(1, p.ProbeRuns)) * (p.LatencyFor + p.WarmFor + p.Costs.Probe)
}

// ReserveKnee is the knee (ladder index) every search is guaranteed the
// time to bracket: the second step, found with NewSteps(1) new steps.
const ReserveKnee = 1

// Reserve is what one backend's searches are guaranteed of the optional
// time: the steps to bracket a knee at ReserveKnee, for the study's
// search and, with probe, the probe's.
func (p Plan) Reserve(search, probe bool) time.Duration {
	var d time.Duration
	if search {
		d += time.Duration(p.NewSteps(ReserveKnee)) * p.StepCost()
	}
	if probe {
		d += time.Duration(p.ProbeNewSteps(ReserveKnee)) * p.ProbeStepCost()
	}
	return d
}

// StepCost is one new step of the study's search; ProbeStepCost one of
// the probe's (fresh processes each, warmed up).
func (p Plan) StepCost() time.Duration      { return p.StepFor + p.Costs.Run }
func (p Plan) ProbeStepCost() time.Duration { return p.StepFor + p.WarmFor + p.Costs.Probe }

// Estimate is the study's wall time when every search's knee is at
// ladder index knee: the build, every backend's mandatory runs, and the
// searches' new steps.
func (p Plan) Estimate(knee int) time.Duration {
	d := p.Costs.Build
	d += time.Duration(p.Backends-p.Probed)*p.Mandatory(false) + time.Duration(p.Probed)*p.Mandatory(true)
	d += time.Duration(p.Searched*p.NewSteps(knee)) * p.StepCost()
	d += time.Duration(p.ProbeSearched*p.ProbeNewSteps(knee)) * p.ProbeStepCost()
	return d
}
