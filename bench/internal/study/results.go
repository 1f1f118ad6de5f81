package study

import (
	"slices"
	"sort"
	"time"

	"github.com/syncgate/syncgate/bench/internal/proc"
)

// LatStats are latencies in milliseconds.
type LatStats struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	// CDF is (percentile, ms) points for the plots.
	CDF [][2]float64 `json:"cdf,omitempty"`
}

// Run is the outcome of one measured run (latency, throughput step or
// crash).
type Run struct {
	Rate      float64 `json:"rate"`
	Channels  int     `json:"channels"`
	Subs      int     `json:"subscribers"`
	DurationS float64 `json:"duration_s"`

	// Publishes, one per scheduled message.
	Scheduled int `json:"scheduled"`
	Acked     int `json:"acked"`
	Refused   int `json:"refused"`
	// Unsent: scheduled messages never published because the publishers
	// were still behind the schedule 5 s after it ended (saturation).
	Unsent  int            `json:"unsent"`
	Reasons map[string]int `json:"refused_reasons,omitempty"`
	// How late the latest publish left after its scheduled time, and the
	// 99th percentile of how late every publish left (loadgen runs; 0 in
	// the crash run and older files).
	PublishLagMaxMs float64 `json:"publish_lag_max_ms"`
	PublishLagP99Ms float64 `json:"publish_lag_p99_ms,omitempty"`

	// Deliveries, counted by message id at every subscriber.
	Expected  int `json:"expected"`  // acked x subscribers of the channel
	Delivered int `json:"delivered"` // of acked messages, first copy
	Lost      int `json:"lost"`      // expected - delivered
	// Lost, at subscribers that stayed connected (or reconnected on their
	// own) and at those that closed and subscribed again with since.
	LostStayed       int  `json:"lost_stayed"`
	LostDropped      int  `json:"lost_dropped"`
	LostMsgs         int  `json:"lost_msgs"`         // acked messages missing at >= 1 subscriber
	Dup              int  `json:"dup"`               // extra copies of a message id
	OutOfOrder       int  `json:"out_of_order"`      // ids below one already seen
	RefusedDelivered int  `json:"refused_delivered"` // copies of refused messages that arrived
	Incomplete       bool `json:"incomplete,omitempty"`

	SameNode  LatStats `json:"same_node"`  // subscribers on node A
	CrossNode LatStats `json:"cross_node"` // subscribers on node B
	All       LatStats `json:"all"`

	Reconnects      int64 `json:"reconnects"`
	Recovered       int   `json:"recovered"`        // Recovered events (catch-up after reconnect)
	RecoveredMissed int   `json:"recovered_missed"` // messages replayed by them
	Resets          int   `json:"resets"`           // recovered: false
	Gaps            int   `json:"gaps"`
	// Subscribers that closed their connection and subscribed again with
	// since (DropAt), and those whose new subscription failed.
	Resubscribed int `json:"resubscribed"`
	// Recovered and Reset events by node of the subscriber (A, B).
	RecoveredByNode   [2]int `json:"recovered_by_node"`
	ResetsByNode      [2]int `json:"resets_by_node"`
	ResubscribeFailed int    `json:"resubscribe_failed"`

	// The machine's 1-minute load average when publishing started and
	// ended (other processes compete for the CPUs too).
	LoadStart float64  `json:"loadavg_start"`
	LoadEnd   float64  `json:"loadavg_end"`
	Events    []string `json:"events,omitempty"` // crash timeline
	Error     string   `json:"error,omitempty"`

	// Rep is the repetition (0-based) of a latency run.
	Rep int `json:"rep,omitempty"`
	// The measured window: from the start of publishing until every acked
	// message reached every subscriber (or the drain ended); the first
	// copies delivered in it, and the CPU seconds the gateway processes
	// and the broker processes used in it (-1: not measured).
	WindowS        float64 `json:"window_s"`
	Deliveries     int64   `json:"deliveries"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	GatewayCPUS    float64 `json:"gateway_cpu_s"`
	BrokerCPUS     float64 `json:"broker_cpu_s"`
	// HarnessCPUS: CPU seconds of the load generator in the same window:
	// the loadgen processes (latency runs and throughput steps), the
	// study process itself (crash run, and results files before the
	// loadgen rig); -1: not measured.
	HarnessCPUS float64 `json:"harness_cpu_s"`
	// MachineBusyS and MachineTotalS: the whole machine's busy CPU
	// seconds (every process, the kernel's interrupt work included) and
	// its CPU seconds (busy and idle, all CPUs) over the same window as
	// the CPU columns above (0: not measured, older files). Busy /
	// total says whether the CPUs were saturated while the run measured
	// latency; busy less the gateways', brokers' and harness's is what
	// everything else on the machine took.
	MachineBusyS  float64 `json:"machine_busy_cpu_s,omitempty"`
	MachineTotalS float64 `json:"machine_total_cpu_s,omitempty"`
}

// CPUBusy is the fraction of the machine's CPU time that was busy over
// the run's window; ok is false when it was not measured.
func (r Run) CPUBusy() (float64, bool) {
	if r.MachineTotalS <= 0 {
		return 0, false
	}
	return r.MachineBusyS / r.MachineTotalS, true
}

// OtherCPUS is the busy CPU seconds of the window that were not the
// gateways', the brokers' or the harness's: the study process, other
// processes, interrupt work; ok is false when not measured.
func (r Run) OtherCPUS() (float64, bool) {
	if r.MachineTotalS <= 0 || r.GatewayCPUS < 0 || r.BrokerCPUS < 0 || r.HarnessCPUS < 0 {
		return 0, false
	}
	return max(0, r.MachineBusyS-r.GatewayCPUS-r.BrokerCPUS-r.HarnessCPUS), true
}

// CPUPerM is CPU seconds per million deliveries, -1 if unknown.
func CPUPerM(cpuS float64, deliveries int64) float64 {
	if cpuS < 0 || deliveries <= 0 {
		return -1
	}
	return cpuS / (float64(deliveries) / 1e6)
}

// Backend is one backend's results.
type Backend struct {
	Name    string   `json:"name"`
	Type    string   `json:"broker_type"`
	Nodes   int      `json:"nodes"`
	Note    string   `json:"persistence"`
	Skipped string   `json:"skipped,omitempty"`
	Latency []Run    `json:"latency,omitempty"` // every run, reps included
	Crash   *Run     `json:"crash,omitempty"`
	Errors  []string `json:"errors,omitempty"`
	// Embedded says where the broker runs in the latency and throughput
	// runs when it is not a process of its own: its CPU is then part of
	// the gateway's ("" = own processes, measured apart).
	Embedded   string `json:"broker_embedded,omitempty"`
	Killed     string `json:"crash_killed,omitempty"` // which process the crash run kills
	Throughput *Tput  `json:"throughput,omitempty"`
	// Agreement: the study's latency against the minimal probe's at the
	// first latency rate (the probed rows).
	Agreement *Agreement `json:"agreement,omitempty"`
}

// Results is the JSON file and the input of the docs.
type Results struct {
	Scenario      string         `json:"scenario"`
	Mode          string         `json:"mode"`
	Command       string         `json:"command"`
	Started       time.Time      `json:"started"`
	Finished      time.Time      `json:"finished"`
	Machine       proc.Machine   `json:"machine"`
	GatewaySource string         `json:"gateway_source"`
	Params        map[string]any `json:"params"`
	Backends      []Backend      `json:"backends"`
}

// Rates are the offered rates of the latency runs of every backend,
// lowest first.
func (rs *Results) Rates() []float64 {
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

// LatencyAt is the backend's latency result at a rate: the run, or with
// repetitions their medians (MedianRun).
func (b Backend) LatencyAt(rate float64) (Run, bool) {
	var runs []Run
	for _, r := range b.Latency {
		if r.Rate == rate {
			runs = append(runs, r)
		}
	}
	if len(runs) == 0 {
		return Run{}, false
	}
	return MedianRun(runs), true
}

// Reps is how many latency runs the backend has at a rate.
func (b Backend) Reps(rate float64) int {
	n := 0
	for _, r := range b.Latency {
		if r.Rate == rate {
			n++
		}
	}
	return n
}

// Spread is the range of the headline latency (StepLatency) over the
// backend's runs at a rate: the lowest and highest p50 and p99, and how
// many runs there were.
func (b Backend) Spread(rate float64) (p50, p99 [2]float64, n int) {
	for _, r := range b.Latency {
		if r.Rate != rate || r.All.Count == 0 {
			continue
		}
		s := StepLatency(r, b.Nodes)
		if n == 0 {
			p50, p99 = [2]float64{s.P50, s.P50}, [2]float64{s.P99, s.P99}
		}
		p50 = [2]float64{min(p50[0], s.P50), max(p50[1], s.P50)}
		p99 = [2]float64{min(p99[0], s.P99), max(p99[1], s.P99)}
		n++
	}
	return p50, p99, n
}

// LatencySummary is one result per rate (medians of the repetitions), in
// the order the rates were first run.
func (b Backend) LatencySummary() []Run {
	var out []Run
	var seen []float64
	for _, r := range b.Latency {
		if slices.Contains(seen, r.Rate) {
			continue
		}
		seen = append(seen, r.Rate)
		if m, ok := b.LatencyAt(r.Rate); ok {
			out = append(out, m)
		}
	}
	return out
}

// HeadLat is the backend's headline latency at rate: cross-node with two
// nodes, else its only node's (medians of the repetitions).
func (b Backend) HeadLat(rate float64) (LatStats, bool) {
	r, ok := b.LatencyAt(rate)
	if !ok || r.All.Count == 0 {
		return LatStats{}, false
	}
	return StepLatency(r, b.Nodes), true
}
