package study

import "fmt"

// Agreement limits: the study's p50 may differ from the probe's by 25 %,
// its p99 by 50 %.
const (
	AgreeP50Limit = 0.25
	AgreeP99Limit = 0.50
)

// Agreement compares one backend's study latency with the probe's at the
// same offered rate.
type Agreement struct {
	Backend  string  `json:"backend"`
	Rate     float64 `json:"rate"`
	StudyP50 float64 `json:"study_p50_ms"`
	StudyP99 float64 `json:"study_p99_ms"`
	ProbeP50 float64 `json:"probe_p50_ms"`
	ProbeP99 float64 `json:"probe_p99_ms"`
	// Relative differences (study - probe) / probe.
	DiffP50 float64 `json:"diff_p50"`
	DiffP99 float64 `json:"diff_p99"`
	// ProbeLost: deliveries the probe lost (its latency then is not a
	// reference).
	ProbeLost int64 `json:"probe_lost"`
	// The probe's subscribers per channel and how many runs its latency
	// is the median of (0: older files, one subscriber, one run).
	ProbeSubsPerChannel int `json:"probe_subs_per_channel,omitempty"`
	ProbeRuns           int `json:"probe_runs,omitempty"`
	// CPU seconds per million deliveries of the study's own process and
	// of the probe's loadgen processes (-1 or 0: not measured).
	StudyHarnessCPU float64 `json:"study_harness_cpu_s_per_m,omitempty"`
	ProbeHarnessCPU float64 `json:"probe_harness_cpu_s_per_m,omitempty"`
	// ProbeTput is the probe's own throughput search on the study's
	// ladder (nil: not searched), Knee its knee against the study's.
	ProbeTput *Tput      `json:"probe_throughput,omitempty"`
	Knee      *KneeCheck `json:"knee,omitempty"`
	// OK and Flag: the latency check (Check); a flagged knee is Knee's.
	OK    bool   `json:"ok"`
	Flag  string `json:"flag,omitempty"` // why not OK
	Error string `json:"error,omitempty"`
}

// Check fills the differences and the verdict of a.
func Check(a Agreement) Agreement {
	rel := func(s, p float64) float64 {
		if p <= 0 {
			if s <= 0 {
				return 0
			}
			return 1e9
		}
		return (s - p) / p
	}
	a.DiffP50, a.DiffP99 = rel(a.StudyP50, a.ProbeP50), rel(a.StudyP99, a.ProbeP99)
	a.OK, a.Flag = true, ""
	switch {
	case a.Error != "":
		a.OK, a.Flag = false, "probe failed: "+a.Error
	case a.ProbeLost > 0:
		a.OK, a.Flag = false, fmt.Sprintf("probe lost %d deliveries", a.ProbeLost)
	case a.StudyP50 <= 0 || a.ProbeP50 <= 0:
		a.OK, a.Flag = false, "no latency measured"
	case absf(a.DiffP50) > AgreeP50Limit:
		a.OK, a.Flag = false, fmt.Sprintf("p50 differs by %+.0f %% (limit %.0f %%)", 100*a.DiffP50, 100*AgreeP50Limit)
	case absf(a.DiffP99) > AgreeP99Limit:
		a.OK, a.Flag = false, fmt.Sprintf("p99 differs by %+.0f %% (limit %.0f %%)", 100*a.DiffP99, 100*AgreeP99Limit)
	}
	return a
}

func absf(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
