//go:build linux

package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/syncgate/syncgate/bench/internal/proc"
	"github.com/syncgate/syncgate/bench/internal/study"
)

// TestStudyDocs writes the document and the plots of made-up results into
// a temporary directory.
func TestStudyDocs(t *testing.T) {
	h := hdrhistogram.New(1, 120_000_000, 3)
	for i := range 1000 {
		_ = h.RecordValue(int64(500 + i*10))
	}
	lat := study.StatsOf(h)
	ladder := []float64{1000, 2000, 3000, 4000}
	rs := &study.Results{
		Scenario: "study", Mode: "quick", Command: "go run ./bench study", Started: time.Now().UTC(), Finished: time.Now().UTC(),
		Machine: proc.ReadMachine(), Params: map[string]any{"throughput_steps": []float64{1000, 2000}, "latency_rates": []float64{1000}, "latency_reps": 1},
		Backends: []study.Backend{
			{Name: "memory", Type: "memory", Nodes: 1, Latency: []study.Run{{Rate: 1000, Acked: 10, Scheduled: 10, SameNode: lat, All: lat}},
				Crash:     &study.Run{Scheduled: 100, Acked: 90, Refused: 10, LostMsgs: 5, Events: []string{"t=1s kill"}},
				Agreement: &study.Agreement{Backend: "memory", Rate: 1000, StudyP50: 0.9, StudyP99: 5.2, ProbeP50: 0.18, ProbeP99: 1.33}},
			{Name: "redis", Type: "redis", Nodes: 2, Latency: []study.Run{{Rate: 1000, Acked: 10, Scheduled: 10, SameNode: lat, CrossNode: lat, All: lat}},
				Crash: &study.Run{Scheduled: 100, Acked: 100},
				Throughput: &study.Tput{Ladder: ladder, Steps: []study.TputStep{{Rate: 1000, Pass: true, FromLatency: true, Result: okRun(1000, 5)},
					{Rate: 2000, Result: okRun(2000, 70)}}, Max: 1000, Next: 2000},
				Agreement: &study.Agreement{Backend: "redis", Rate: 1000, StudyP50: 1.1, StudyP99: 3, ProbeP50: 1, ProbeP99: 2.5, StudyHarnessCPU: 30, ProbeHarnessCPU: 12.5,
					ProbeTput: &study.Tput{Ladder: ladder, Steps: []study.TputStep{{Rate: 1000, Pass: true, Result: okRun(1000, 5)}, {Rate: 4000, Pass: true, Result: okRun(4000, 9)}}, Max: 4000}}},
			{Name: "redis-cluster", Type: "redis", Nodes: 2, Killed: "redis-server master 3 of 3",
				Latency: []study.Run{okRun(1000, 10), okRun(1000, 12), okRun(1000, 11)},
				Throughput: &study.Tput{Ladder: []float64{1000, 2000}, Steps: []study.TputStep{{Rate: 1000, Pass: true, FromLatency: true, Result: okRun(1000, 11)},
					{Rate: 2000, Result: okRun(2000, 70), Why: "cross p99 70.0 ms >= 50 ms"}}, Max: 1000, Next: 2000, Stopped: "2000 msg/s not sustained"},
				Crash: &study.Run{Scheduled: 100, Acked: 100}},
			{Name: "nats", Type: "nats", Nodes: 2, Embedded: "in gateway A",
				Latency:    []study.Run{okRun(1000, 60)},
				Throughput: &study.Tput{Ladder: []float64{1000, 2000}, Steps: []study.TputStep{{Rate: 1000, FromLatency: true, Result: okRun(1000, 60)}}, Next: 1000, Stopped: "1000 msg/s not sustained"}},
			{Name: "jetstream-memory", Type: "jetstream", Nodes: 2, Latency: []study.Run{okRun(1000, 3)},
				Throughput: &study.Tput{Stopped: "not searched in quick mode"}},
			{Name: "redis-streams", Type: "redis-streams", Nodes: 2, Skipped: "not built"},
		},
	}
	for i, b := range rs.Backends {
		if b.Agreement != nil {
			a := study.Check(*b.Agreement)
			if a.ProbeTput != nil {
				k := study.CompareKnees(b.Throughput, a.ProbeTput)
				a.Knee = &k
			}
			rs.Backends[i].Agreement = &a
		}
	}
	root := t.TempDir()
	if err := WriteStudyDocs(root, rs); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(root, "docs", "benchmarks-study.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| redis | 2 | 10/10/10 |", "no acked message was lost with: redis", "memory 5 of 90 acked", "skipped: not built",
		"## Throughput", "| redis-cluster | 1000 msg/s sustained, 2000 msg/s not | 1000 | 10000 | 11.00 | 500.00 | 250.00 |",
		"| nats | none of the steps (1000 msg/s not sustained) | none (< 1000) |", "| jetstream-memory | not searched | - |",
		"not searched in this run (their rows say so; `-search all` or `-full` searches them): jetstream-memory.", "in gateway A",
		"| redis-cluster | 2 | 300/300/300 |", "redis-server master 3 of 3", "what this run did: quick mode", "study-throughput.svg",
		"| memory | 1000 | 1, 1 | 0.90 | 0.18 | +400 % | 5.20 | 1.33 | +291 % | - | - | FLAG: p50 differs by +400 % (limit 25 %) |",
		"| redis | 1000 | 1, 1 | 1.10 | 1.00 | +10 % | 3.00 | 2.50 | +20 % | 30.00 | 12.50 | agree |", "**Flagged:** memory: p50",
		"Calibration (memory broker, one node, 1000 msg/s)", "Agreement check FAILED on memory", "study-latency-rate.svg",
		"What the logs buy through a broker crash (acked messages missing at one subscriber or more): redis lost 0 of 100 acked.",
		"Knees (highest offered rate with p99 under 50 ms and nothing lost, and the step above where it broke): redis: 1000 msg/s sustained, 2000 msg/s not (the probe", "redis-cluster: 1000 msg/s sustained, 2000 msg/s not;",
		"nats: none of the steps (1000 msg/s not sustained)", "Not searched in this run: jetstream-memory.",
		"| redis | 1000 msg/s sustained, 2000 msg/s not | sustained up to the top step (4000 msg/s) | 3 | FLAG: sustained rates 3 steps apart",
		"redis: sustained rates 3 steps apart", "(the probe: sustained up to the top step (4000 msg/s), FLAG)",
		"Caution: the agreement check flagged memory", "3 runs: 1.00-1.00 / 10.00-12.00",
		"from loadgen processes", "lag behind their schedule reached 50 ms at p99", "a publisher still behind 5 s after its schedule's end stops"} {
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
func okRun(rate float64, p99 float64) study.Run {
	st := study.LatStats{Count: 100, P50: 1, P99: p99}
	return study.Run{Rate: rate, Scheduled: 100, Acked: 100, Expected: 1000, Delivered: 1000, SameNode: st, CrossNode: st, All: st,
		DeliveriesPerS: rate * 10, Deliveries: 1000, GatewayCPUS: 0.5, BrokerCPUS: 0.25}
}

func TestSeedReading(t *testing.T) {
	run := func(p50, p99 float64) []study.Run {
		s := study.LatStats{Count: 10, P50: p50, P99: p99}
		return []study.Run{{Rate: 1000, All: s, CrossNode: s, SameNode: s}}
	}
	rs := &study.Results{Backends: []study.Backend{
		{Name: "redis", Nodes: 2, Latency: run(1, 3), Crash: &study.Run{Scheduled: 10, Acked: 10, LostMsgs: 4}},
		{Name: "jetstream-file", Nodes: 2, Latency: run(2.5, 9), Crash: &study.Run{Scheduled: 10, Acked: 10}},
		{Name: "jetstream-memory", Nodes: 2, Latency: run(1.1, 3.5), Crash: &study.Run{Scheduled: 10, Acked: 10, LostMsgs: 5}},
		{Name: "redis-streams", Nodes: 2, Latency: run(0.5, 1), Crash: &study.Run{Scheduled: 10, Acked: 8}},
	}}
	got := strings.Join(seedReading(rs), "\n")
	for _, want := range []string{
		"Latency bought by redis (p50 1.00 ms, p99 3.00 ms at 1000 msg/s) over the logs",
		"jetstream-file +1.50 ms at p50, +6.00 ms at p99",
		"So, at 1000 msg/s, redis: it is faster than jetstream-file (p50 1.00 against 2.50 ms, p99 3.00 against 9.00 ms); it buys nothing this study can resolve over jetstream-memory (differences within 25 % at p50 and 50 % at p99, the agreement check's limits); it is slower than redis-streams (p50 1.00 against 0.50 ms, p99 3.00 against 1.00 ms).",
		"redis lost 4 of 10 acked, jetstream-file lost 0 of 10 acked, jetstream-memory lost 5 of 10 acked, redis-streams lost 0 of 8 acked",
		"So, in this crash run, redis lost acked messages; the logs kept every acked message with jetstream-file, redis-streams; lost acked messages with jetstream-memory too",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("reading lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Caution") || strings.Contains(got, "nats") {
		t.Errorf("reading speaks of what it was not given:\n%s", got)
	}
}

// TestLoadReading: where the runs measured the machine's CPU time, the
// verdict on contention comes from it (saturated CPUs at a median busy
// fraction of 90 %), not from the load average, which counts the study's
// own runnable threads.
func TestLoadReading(t *testing.T) {
	results := func(busy ...float64) *study.Results {
		var lat []study.Run
		for _, f := range busy {
			r := okRun(1000, 2)
			r.HarnessCPUS, r.LoadStart, r.LoadEnd = 0.25, 3, 4.5 // over twice the CPUs
			r.MachineBusyS, r.MachineTotalS = f*10, 10
			lat = append(lat, r)
		}
		return &study.Results{Machine: proc.Machine{NumCPU: 2}, Backends: []study.Backend{{Name: "redis", Nodes: 2, Latency: lat}}}
	}
	calm := results(0.5, 0.6, 0.95)
	if overloaded(calm) {
		t.Error("median 60 % busy: called overloaded")
	}
	got := strings.Join(loadReading(calm), "\n")
	for _, want := range []string{"2 CPUs were 50 to 95 % busy (median 60 %", "processes 10 % of all CPU time at the median, everything else", "50 %)", "not saturated"} {
		if !strings.Contains(got, want) {
			t.Errorf("calm: reading lacks %q:\n%s", want, got)
		}
	}
	busy := results(0.95, 0.92, 0.5)
	if !overloaded(busy) {
		t.Error("median 92 % busy: not called overloaded")
	}
	if got := strings.Join(loadReading(busy), "\n"); !strings.Contains(got, "The CPUs were saturated") {
		t.Errorf("busy: %s", got)
	}
	// Results without the CPU figures: the load average decides.
	old := results(0.5)
	old.Backends[0].Latency[0].MachineTotalS = 0
	if !overloaded(old) || !strings.Contains(strings.Join(loadReading(old), ""), "load average 3.0 to 4.5") {
		t.Errorf("without CPU figures: %v %s", overloaded(old), loadReading(old))
	}
}

func TestLatencyOrder(t *testing.T) {
	l := func(p50, p99 float64) study.LatStats { return study.LatStats{Count: 1, P50: p50, P99: p99} }
	for _, c := range []struct {
		f, log study.LatStats
		want   int
	}{
		{l(1, 3), l(1.2, 4), 0},   // within 25 % / 50 %
		{l(1, 3), l(1.3, 4), -1},  // p50 beyond
		{l(1, 3), l(1, 4.6), -1},  // p99 beyond
		{l(1.3, 3), l(1, 3), 1},   // slower at p50
		{l(1, 5), l(1.3, 3), 0},   // faster at p50, slower at p99: no verdict
		{l(1, 3), l(1.1, 30), -1}, // the tail decides when the median does not
	} {
		if got := latencyOrder(c.f, c.log); got != c.want {
			t.Errorf("latencyOrder(%+v, %+v) = %d, want %d", c.f, c.log, got, c.want)
		}
	}
}

func TestSignedMs(t *testing.T) {
	for d, want := range map[float64]string{-0.001: "0.00", 0.004: "0.00", 0: "0.00", -0.05: "-0.05", 0.391: "+0.39", -1.5: "-1.50"} {
		if got := signedMs(d); got != want {
			t.Errorf("signedMs(%g) = %q, want %q", d, got, want)
		}
	}
}
