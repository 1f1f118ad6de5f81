package study

import (
	"fmt"
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
	// Max is the highest offered rate sustained (0: not even the first).
	Max        float64 `json:"max_rate"`
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

// SearchThroughput tries the steps in order and stops at the first that
// fails. reuse gives the latency runs' result at a rate if there is one;
// otherwise, if allow says there is time, run measures the rate.
func SearchThroughput(steps []float64, nodes int, reuse func(float64) (Run, bool), allow func(float64) bool,
	run func(float64) (Run, error)) Tput {
	var res Tput
	for i, rate := range steps {
		r, from := reuse(rate)
		if !from {
			if !allow(rate) {
				res.Stopped = fmt.Sprintf("time budget: %g msg/s and up not run", rate)
				break
			}
			var err error
			if r, err = run(rate); err != nil && r.Error == "" {
				r.Error = err.Error()
			}
		}
		pass, why := StepVerdict(r, nodes)
		r.SameNode.CDF, r.CrossNode.CDF, r.All.CDF = nil, nil, nil
		res.Steps = append(res.Steps, TputStep{Rate: rate, FromLatency: from, Pass: pass, Why: why, Result: r})
		if !pass {
			res.Stopped = fmt.Sprintf("%g msg/s not sustained: %s", rate, why)
			break
		}
		res.Max = rate
		if i == len(steps)-1 {
			res.Stopped = fmt.Sprintf("every step sustained up to the search's bound (%g msg/s)", rate)
		}
	}
	if len(steps) == 0 {
		res.Stopped = "no steps"
	}
	return res
}

// FirstLine is s up to its first newline.
func FirstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
