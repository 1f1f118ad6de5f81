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
	// FirstRun: the step's first run, which missed narrowly (NarrowMiss)
	// and was run again; Result is the second, which judged the step.
	FirstRun *Run `json:"first_run,omitempty"`
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

// ConfirmFactor bounds a narrow miss (NarrowMiss): a run that failed
// only by its p99 or its publishers' lag, by less than this many times
// the limit.
const ConfirmFactor = 4

// NarrowMiss says whether a run that did not sustain its rate failed
// only narrowly: by its latency p99 or its publishers' lag p99, both
// under ConfirmFactor x TputP99Limit, with nothing lost, refused, unsent
// or failed. One stall (a disk flush, a scheduling hiccup of the 2-core
// machine) makes such a miss; an overloaded backend queues for seconds
// or drops. A search with Confirm runs such a step again.
func NarrowMiss(r Run, nodes int) bool {
	if ok, _ := StepVerdict(r, nodes); ok {
		return false
	}
	s := StepLatency(r, nodes)
	bound := ConfirmFactor * TputP99Limit
	return r.Error == "" && r.Scheduled > 0 && r.Unsent == 0 && r.Refused == 0 && r.Lost == 0 &&
		s.Count > 0 && s.P99 < bound && r.PublishLagP99Ms < bound
}

// Search is one knee search: the ladder of offered rates (lowest first)
// and the means to measure a step.
type Search struct {
	Ladder []float64
	// Stride: the coarse pass of Coarse tries every Stride-th step.
	Stride int
	Nodes  int // the backend's nodes (StepVerdict)
	// Reuse gives the latency runs' result at a rate if there is one (it
	// costs nothing); otherwise, if Allow says there is time, Run
	// measures the rate.
	Reuse func(rate float64) (Run, bool)
	Allow func(rate float64) bool
	Run   func(rate float64) (Run, error)
	// Confirm: a step whose run missed narrowly (NarrowMiss) is run
	// again, time allowing, and judged by the second run; the first is
	// kept in the step (FirstRun). A step judged on the latency runs'
	// medians is not run again.
	Confirm bool
}

// searcher is one search in progress: the steps run, the highest ladder
// index sustained, the lowest not, the first not run for time.
type searcher struct {
	Search
	res             Tput
	pass, fail, cut int
	why             string
}

// Coarse looks for the knee coarse, then fine. It first tries every
// Stride-th step from the first one, and the top step, in order, until
// one fails; then the steps it skipped between the last coarse step that
// passed and the one that failed, in order, until one fails. The result
// is the knee to one step of the ladder (the highest step sustained and
// the lowest one above it that was not) with fewer runs than trying
// every step when the knee is high up; stride 1 tries every step in
// order. Steps are returned lowest rate first.
func (s Search) Coarse() Tput {
	se := s.start()
	if len(s.Ladder) == 0 {
		return se.res
	}
	for _, i := range CoarseSteps(len(s.Ladder), s.Stride) {
		if ok, ran := se.try(i); !ran || !ok {
			break
		}
	}
	if se.cut < 0 && se.fail > 0 {
		for i := se.pass + 1; i < se.fail; i++ {
			if ok, ran := se.try(i); !ran || !ok {
				break
			}
		}
	}
	return se.finish()
}

// From brackets the knee from a guess (a ladder index, such as another
// search's knee): it tries that step; if it is sustained, the steps
// above it in order until one is not (or the top); if not, the steps
// below it in order until one is (or the bottom). When the guess is
// right the knee is found to one step in two runs; however wrong, the
// result is the same rule's knee to one step, as Coarse finds it.
func (s Search) From(guess int) Tput {
	se := s.start()
	n := len(s.Ladder)
	if n == 0 {
		return se.res
	}
	i := min(max(guess, 0), n-1)
	ok, ran := se.try(i)
	switch {
	case !ran:
	case ok:
		for j := i + 1; j < n; j++ {
			if ok, ran := se.try(j); !ran || !ok {
				break
			}
		}
	default:
		for j := i - 1; j >= 0; j-- {
			if ok, ran := se.try(j); !ran || ok {
				break
			}
		}
	}
	return se.finish()
}

func (s Search) start() *searcher {
	se := &searcher{Search: s, pass: -1, fail: -1, cut: -1}
	se.res.Ladder = s.Ladder
	if len(s.Ladder) == 0 {
		se.res.Stopped = "no steps"
	}
	return se
}

// measure is one run at rate: reused, or run if there is time (ran
// false: not run for time).
func (se *searcher) measure(rate float64) (r Run, from, ran bool) {
	if r, from = se.Reuse(rate); from {
		return r, true, true
	}
	if !se.Allow(rate) {
		return Run{}, false, false
	}
	r, err := se.Run(rate)
	if err != nil && r.Error == "" {
		r.Error = err.Error()
	}
	return r, false, true
}

// try measures ladder step i (and, with Confirm, runs a narrow miss
// again) and records it.
func (se *searcher) try(i int) (ok, ran bool) {
	rate := se.Ladder[i]
	r, from, ran := se.measure(rate)
	if !ran {
		se.cut = i
		return false, false
	}
	ok, w := StepVerdict(r, se.Nodes)
	var first *Run
	if !ok && !from && se.Confirm && NarrowMiss(r, se.Nodes) {
		if again, _, ran := se.measure(rate); ran {
			prev := noCDF(r)
			first, r = &prev, again
			if ok, w = StepVerdict(r, se.Nodes); !ok {
				_, w1 := StepVerdict(*first, se.Nodes)
				w += " (run twice; the first: " + w1 + ")"
			}
		}
	}
	se.res.Steps = append(se.res.Steps, TputStep{Rate: rate, FromLatency: from, Pass: ok, Why: w, Result: noCDF(r), FirstRun: first})
	if ok {
		se.pass = max(se.pass, i)
	} else if se.fail < 0 || i < se.fail {
		se.fail, se.why = i, w
	}
	return ok, true
}

// noCDF is r without its latency CDFs (a step keeps its percentiles; the
// CDFs are the latency runs').
func noCDF(r Run) Run {
	r.SameNode.CDF, r.CrossNode.CDF, r.All.CDF = nil, nil, nil
	return r
}

// finish orders the steps and says where the knee is and why the search
// ended.
func (se *searcher) finish() Tput {
	res, steps := se.res, se.Ladder
	sort.SliceStable(res.Steps, func(i, j int) bool { return res.Steps[i].Rate < res.Steps[j].Rate })
	if se.pass >= 0 {
		res.Max = steps[se.pass]
	}
	if se.fail >= 0 {
		res.Next = steps[se.fail]
	}
	switch {
	case se.cut >= 0 && (se.fail < 0 || se.pass+1 < se.fail):
		res.Stopped = fmt.Sprintf("time budget: %g msg/s not run", steps[se.cut])
		if se.fail >= 0 {
			res.Stopped += fmt.Sprintf(" (%g msg/s not sustained: %s)", steps[se.fail], se.why)
		}
	case se.fail >= 0:
		res.Stopped = fmt.Sprintf("%g msg/s not sustained: %s", steps[se.fail], se.why)
	default:
		res.Stopped = fmt.Sprintf("every step sustained up to the search's bound (%g msg/s)", steps[len(steps)-1])
	}
	return res
}

// CoarseSteps are the ladder indexes the coarse pass of Search.Coarse
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
