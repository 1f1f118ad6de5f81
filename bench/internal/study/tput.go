package study

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// TputP99Limit and the absence of loss make a step sustained.
const TputP99Limit = 50.0 // ms

// TputStep is one offered rate of the search.
type TputStep struct {
	Rate float64 `json:"rate"`
	// FromLatency: the step is the latency run(s) at this rate (their
	// medians), not a run of its own.
	FromLatency bool   `json:"from_latency,omitempty"`
	Pass        bool   `json:"pass"`
	Why         string `json:"why,omitempty"` // why it did not pass
	Result      Run    `json:"result"`
}

// Tput is one backend's throughput search.
type Tput struct {
	Steps []TputStep `json:"steps"`
	// Ladder is every step the search could try (lowest first): the
	// knee is read against it (KneeRange).
	Ladder []float64 `json:"ladder,omitempty"`
	// Max is the highest offered rate sustained (0: not even the first);
	// Next the lowest rate above it that was not (0: none tried).
	Max        float64 `json:"max_rate"`
	Next       float64 `json:"next_rate,omitempty"`
	Stopped    string  `json:"stopped"` // why the search ended
	AllowanceS float64 `json:"allowance_s"`
}

// Best is the step the table reports: the highest sustained one, else
// the first one run (nil if none).
func (t *Tput) Best() *TputStep {
	if t == nil || len(t.Steps) == 0 {
		return nil
	}
	for i := len(t.Steps) - 1; i >= 0; i-- {
		if t.Steps[i].Pass {
			return &t.Steps[i]
		}
	}
	return &t.Steps[0]
}

// StepLatency is the latency a step is judged by (by its p99):
// cross-node with two nodes, else the (only) node's.
func StepLatency(r Run, nodes int) LatStats {
	if nodes > 1 {
		return r.CrossNode
	}
	return r.SameNode
}

// StepVerdict says whether a run sustained its rate: no error, every
// message published and acked, the publishers' lag behind their
// schedule under the limit at p99 (latency is measured from the actual
// send, so a publisher held back would hide the delay: coordinated
// omission; judged like the latency, at p99, so that one stall of the
// publisher process does not decide), none lost, p99 under the limit.
func StepVerdict(r Run, nodes int) (bool, string) {
	s := StepLatency(r, nodes)
	which := "cross p99"
	if nodes <= 1 {
		which = "p99"
	}
	switch {
	case r.Error != "":
		return false, "error: " + FirstLine(r.Error)
	case r.Scheduled == 0:
		return false, "nothing published"
	case r.Unsent > 0:
		return false, fmt.Sprintf("publishers fell behind (%d of %d never sent)", r.Unsent, r.Scheduled)
	case r.PublishLagP99Ms >= TputP99Limit:
		return false, fmt.Sprintf("publishers fell behind their schedule: p99 %.0f ms (>= %.0f ms)", r.PublishLagP99Ms, TputP99Limit)
	case r.Refused > 0:
		return false, fmt.Sprintf("%d publishes refused", r.Refused)
	case r.Lost > 0:
		return false, fmt.Sprintf("%d deliveries lost", r.Lost)
	case s.Count == 0:
		return false, "no deliveries measured"
	case s.P99 >= TputP99Limit:
		return false, fmt.Sprintf("%s %.1f ms >= %.0f ms", which, s.P99, TputP99Limit)
	}
	return true, ""
}

// SearchThroughput looks for the knee on a ladder of offered rates
// (steps, lowest first): coarse, then fine. It first tries every
// stride-th step from the first one, and the top step, in order, until
// one fails; then the steps it skipped between the last coarse step that
// passed and the one that failed, in order, until one fails. The result
// is the knee to one step of the ladder (the highest step sustained and
// the lowest one above it that was not) with fewer runs than trying
// every step when the knee is high up; stride 1 tries every step in
// order. reuse gives the latency runs' result at a rate if there is one
// (it costs nothing); otherwise, if allow says there is time, run
// measures the rate. Steps are returned lowest rate first.
func SearchThroughput(steps []float64, stride, nodes int, reuse func(float64) (Run, bool), allow func(float64) bool,
	run func(float64) (Run, error)) Tput {
	res := Tput{Ladder: steps}
	if len(steps) == 0 {
		res.Stopped = "no steps"
		return res
	}
	pass, fail, cut := -1, -1, -1 // ladder indexes: highest passed, lowest failed, first not run for time
	why := ""
	try := func(i int) (ok, ran bool) {
		rate := steps[i]
		r, from := reuse(rate)
		if !from {
			if !allow(rate) {
				cut = i
				return false, false
			}
			var err error
			if r, err = run(rate); err != nil && r.Error == "" {
				r.Error = err.Error()
			}
		}
		ok, w := StepVerdict(r, nodes)
		r.SameNode.CDF, r.CrossNode.CDF, r.All.CDF = nil, nil, nil
		res.Steps = append(res.Steps, TputStep{Rate: rate, FromLatency: from, Pass: ok, Why: w, Result: r})
		if ok {
			pass = max(pass, i)
		} else if fail < 0 || i < fail {
			fail, why = i, w
		}
		return ok, true
	}
	for _, i := range CoarseSteps(len(steps), stride) {
		if ok, ran := try(i); !ran || !ok {
			break
		}
	}
	if cut < 0 && fail > 0 {
		for i := pass + 1; i < fail; i++ {
			if ok, ran := try(i); !ran || !ok {
				break
			}
		}
	}
	sort.SliceStable(res.Steps, func(i, j int) bool { return res.Steps[i].Rate < res.Steps[j].Rate })
	if pass >= 0 {
		res.Max = steps[pass]
	}
	if fail >= 0 {
		res.Next = steps[fail]
	}
	switch {
	case cut >= 0 && (fail < 0 || pass+1 < fail):
		res.Stopped = fmt.Sprintf("time budget: %g msg/s not run", steps[cut])
		if fail >= 0 {
			res.Stopped += fmt.Sprintf(" (%g msg/s not sustained: %s)", steps[fail], why)
		}
	case fail >= 0:
		res.Stopped = fmt.Sprintf("%g msg/s not sustained: %s", steps[fail], why)
	default:
		res.Stopped = fmt.Sprintf("every step sustained up to the search's bound (%g msg/s)", steps[len(steps)-1])
	}
	return res
}

// CoarseSteps are the ladder indexes the coarse pass of SearchThroughput
// tries, in order: 0, stride, 2 stride, ... and the top one (n-1).
func CoarseSteps(n, stride int) []int {
	stride = max(1, stride)
	var out []int
	for i := 0; i < n; i += stride {
		out = append(out, i)
	}
	if n > 0 && out[len(out)-1] != n-1 {
		out = append(out, n-1)
	}
	return out
}

// KneeRange is where on the ladder the knee of a search lies, as ladder
// indexes: lo is the highest step sustained (-1: none), hi the highest
// step that may still be sustained (the step below the lowest failing
// one above lo, or the top when nothing above lo failed). lo == hi: the
// knee is known to one step; lo < hi: the search was cut short (time
// budget) and lo is a lower bound. ok is false when nothing was run.
// Results from before the ladder was recorded use the steps' rates as
// their ladder (that search tried every step in order).
func (t *Tput) KneeRange() (lo, hi int, ok bool) {
	if t == nil || len(t.Steps) == 0 {
		return 0, 0, false
	}
	ladder := t.ladder()
	next := 0.0
	for _, st := range t.Steps {
		if !st.Pass && st.Rate > t.Max && (next == 0 || st.Rate < next) {
			next = st.Rate
		}
	}
	lo, hi = -1, len(ladder)-1
	if len(t.Ladder) == 0 && strings.HasPrefix(t.Stopped, "time budget") {
		hi = len(ladder) // an older search cut short: the steps above are unknown
	}
	for i, rate := range ladder {
		if t.Max > 0 && rate == t.Max {
			lo = i
		}
		if next > 0 && rate == next {
			hi = i - 1
		}
	}
	return lo, max(lo, hi), true
}

// ladder is the search's ladder, or its steps' rates for results files
// from before it was recorded.
func (t *Tput) ladder() []float64 {
	if len(t.Ladder) > 0 {
		return t.Ladder
	}
	var out []float64
	for _, st := range t.Steps {
		out = append(out, st.Rate)
	}
	return out
}

// Knee says where a search found the knee, in words: "sustained up to the
// top step (X msg/s)", "X msg/s sustained, Y not", "none of the steps
// (X not sustained)", with "at least" when the search was cut short.
func (t *Tput) Knee() string {
	lo, hi, ok := t.KneeRange()
	switch {
	case !ok:
		return "not searched"
	case lo == hi && lo == len(t.ladder())-1:
		return fmt.Sprintf("sustained up to the top step (%g msg/s)", t.Max)
	case lo == hi && lo < 0:
		return fmt.Sprintf("none of the steps (%g msg/s not sustained)", t.ladder()[0])
	case lo == hi:
		return fmt.Sprintf("%g msg/s sustained, %g msg/s not", t.Max, t.ladder()[lo+1])
	case lo < 0:
		return "unknown (search cut short)"
	}
	return fmt.Sprintf("at least %g msg/s (search cut short)", t.Max)
}

// KneeCheck compares the study's knee with the probe's on the same ladder.
type KneeCheck struct {
	StudyMax float64 `json:"study_max_rate"`
	ProbeMax float64 `json:"probe_max_rate"`
	// Apart: how many ladder steps at least separate the two knees.
	Apart int `json:"steps_apart"`
	// Verdict: "agree" (both known, at most one step apart), "FLAG" (more
	// than one step apart), "unresolved" (a search was cut short and the
	// knees may or may not be within one step).
	Verdict string `json:"verdict"`
	Why     string `json:"why,omitempty"`
}

// CompareKnees checks that the study's sustained rate is within one step
// of the probe's: flagged when the knees' ranges (KneeRange) are more
// than one step apart, unresolved when a range is open and they may not
// be.
func CompareKnees(s, p *Tput) KneeCheck {
	var k KneeCheck
	if s != nil {
		k.StudyMax = s.Max
	}
	if p != nil {
		k.ProbeMax = p.Max
	}
	sLo, sHi, okS := s.KneeRange()
	pLo, pHi, okP := p.KneeRange()
	switch {
	case !okS || !okP:
		k.Verdict, k.Why = "unresolved", "a search did not run"
		return k
	case !slices.Equal(s.ladder(), p.ladder()):
		k.Verdict, k.Why = "unresolved", "different ladders"
		return k
	}
	k.Apart = max(0, sLo-pHi, pLo-sHi)
	switch {
	case k.Apart > 1:
		k.Verdict = "FLAG"
		k.Why = fmt.Sprintf("sustained rates %d steps apart (study %s, probe %s)", k.Apart, s.Knee(), p.Knee())
	case sLo == sHi && pLo == pHi:
		k.Verdict = "agree"
		k.Apart = max(sLo-pLo, pLo-sLo)
	default:
		k.Verdict, k.Why = "unresolved", "a search was cut short before its knee"
	}
	return k
}

// FirstLine is s up to its first newline.
func FirstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
