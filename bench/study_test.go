//go:build linux

package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/bench/internal/study"
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
	if o.ProbeSubs != o.SubsPerChannel || o.ProbeRuns != 1 {
		t.Errorf("quick probe: %d subscribers per channel, %d runs; want %d (the study's), 1", o.ProbeSubs, o.ProbeRuns, o.SubsPerChannel)
	}
	if o.Reps != 1 || len(o.TputSteps) != 9 || o.TputSteps[0] != o.Rates[0] || o.TputStride != 2 || o.Limit != 5*time.Minute || o.Budget >= o.Limit {
		t.Fatalf("quick: reps %d, steps %v stride %d, budget %s of %s", o.Reps, o.TputSteps, o.TputStride, o.Budget, o.Limit)
	}
	for _, b := range []string{"memory", "redis", "nats", "jetstream-file", "redis-streams"} {
		if s, _ := o.searches(b); !s {
			t.Errorf("quick does not search %s", b)
		}
	}
	if s, pr := o.searches("redis"); !s || !pr {
		t.Errorf("quick: redis searched %v, by the probe %v", s, pr)
	}
	if s, pr := o.searches("redis-cluster"); s || pr {
		t.Errorf("quick searches redis-cluster")
	}
	// What later backends are guaranteed: the searches after the first
	// (the probe's dearer), the probe's agreement runs of all.
	pl := o.plan()
	if got, want := o.reserve([]string{"memory", "redis", "redis-cluster"}), pl.Reserve(true, true)+2*pl.ProbeMandatory(); got != want || got <= 0 {
		t.Errorf("reserve: %s, want %s", got, want)
	}
	if got := strings.Join(o.runOrder(), ","); got != "memory,redis,nats,jetstream-file,redis-streams,redis-sharded,redis-cluster,jetstream-memory,redis-streams-aof-off,redis-streams-aof-always" {
		t.Errorf("run order: %s", got)
	}
	if got := o.reserve([]string{"redis-cluster", "jetstream-memory"}); got != 0 {
		t.Errorf("reserve of unsearched backends: %s", got)
	}
	// The quick plan fits its budget when every search brackets its knee
	// with the steps it is guaranteed (a knee at the second step; higher
	// knees take what the others leave, first come first served); the
	// full plan fits its limit even with every knee at the top step.
	if pl.Searched != 5 || pl.Probed != 2 || pl.ProbeSearched != 2 {
		t.Errorf("quick plan: %+v", pl)
	}
	if d := pl.Estimate(study.ReserveKnee); d > o.Budget {
		t.Errorf("quick: estimated %s with knees at %g msg/s > budget %s", d, pl.Ladder[study.ReserveKnee], o.Budget)
	}
	if o.Confirm || o.WarmFor != 0 {
		t.Errorf("quick: confirm %v, warm-up %s (no time for either)", o.Confirm, o.WarmFor)
	}
	if o, err := parseStudyArgs([]string{"-full"}); err != nil || !o.Confirm || o.WarmFor != 2*time.Second || !o.plan().Confirm || o.plan().WarmFor != o.WarmFor {
		t.Errorf("full: confirm %v, warm-up %s, plan %+v", o.Confirm, o.WarmFor, o.plan())
	}
	if o, err := parseStudyArgs([]string{"-full"}); err != nil || o.plan().Searched != len(allBackends) || planEstimate(o.plan(), -1) > o.Limit || o.Limit > time.Hour {
		t.Errorf("full: searched %d, estimated %s at the top step, limit %s", o.plan().Searched, planEstimate(o.plan(), -1), o.Limit)
	}
	// Every row probed and searched by the probe too fits an hour with
	// the budget raised for it.
	if o, err := parseStudyArgs([]string{"-full", "-probe", "all", "-budget", "50m"}); err != nil || o.plan().ProbeSearched != len(allBackends) ||
		planEstimate(o.plan(), -1) > o.Budget || o.Limit > time.Hour {
		t.Errorf("-full -probe all: %d probe searches, estimated %s at the top step, budget %s, limit %s (%v)", o.plan().ProbeSearched, planEstimate(o.plan(), -1), o.Budget, o.Limit, err)
	}
	if o, err := parseStudyArgs([]string{"-probe", "nats", "-search", "redis"}); err != nil || !o.probes("nats") || o.probes("redis") {
		t.Errorf("-probe nats: %v %v", o.Probe, err)
	} else if s, pr := o.searches("nats"); s || pr {
		t.Error("-probe nats without -search nats: the probe searches a knee the study does not")
	}
	if o, err := parseStudyArgs([]string{"-search", "none", "-no-probe"}); err != nil || o.plan().Searched != 0 || o.plan().Probed != 0 {
		t.Errorf("-search none: %+v %v", o.plan(), err)
	}
	if o, err = parseStudyArgs([]string{"-full", "-backends", "memory,redis"}); err != nil || len(o.Rates) != 2 || len(o.Backends) != 2 {
		t.Fatalf("-full: %+v, %v", o, err)
	}
	if o.ProbeRuns != 3 {
		t.Errorf("-full: %d probe runs, want 3", o.ProbeRuns)
	}
	if o.Reps != 3 || o.Limit != 41*time.Minute || len(o.TputSteps) < 5 {
		t.Fatalf("-full: reps %d, limit %s, steps %v", o.Reps, o.Limit, o.TputSteps)
	}
	// -full checks every backend against the probe; quick only the
	// calibration and redis rows.
	if !slices.Equal(o.Probe, allBackends) {
		t.Errorf("-full: probe on %v, want every backend", o.Probe)
	}
	if q, err := parseStudyArgs(nil); err != nil || !slices.Equal(q.Probe, defaultProbe) {
		t.Errorf("quick: probe on %v (%v), want %v", q.Probe, err, defaultProbe)
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
	for _, bad := range [][]string{{"-quick", "-full"}, {"-backends", "kafka"}, {"extra"}, {"-latency-for", "-1s"}, {"-probe-subs", "-1"}, {"-probe-subs", "11"}, {"-search", "kafka"}, {"-probe", "kafka"}} {
		if _, err := parseStudyArgs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestProbeResult: a fanout run in the study's terms, judged by the
// study's step rule on node B's latency.
func TestProbeResult(t *testing.T) {
	res := &fanoutResult{Subs: 1000, Channels: 100, Scheduled: 2000, Published: 2000, PubAcks: 2000, Expected: 20000, Received: 20000,
		MaxPubLagMs: 30, PubLagP99Ms: 2, WindowS: 2, DeliveriesPerSec: 10000, GatewayCPUS: 1, BrokerCPUS: 0.5, LoadgenCPUS: 0.75,
		Latency:     latencyStats{Count: 20000, P50: 1, P99: 30},
		NodeLatency: []latencyStats{{Count: 10000, P50: 1, P99: 10}, {Count: 10000, P50: 1, P99: 60}}}
	r := probeResult(res, 1000, 2*time.Second)
	if r.Scheduled != 2000 || r.Acked != 2000 || r.Unsent != 0 || r.Refused != 0 || r.Deliveries != 20000 || r.HarnessCPUS != 0.75 {
		t.Fatalf("counts: %+v", r)
	}
	if ok, why := study.StepVerdict(r, 2); ok || !strings.Contains(why, "cross p99 60.0") {
		t.Errorf("two nodes: judged %v %q; want node B's p99 to fail it", ok, why)
	}
	if ok, _ := study.StepVerdict(r, 1); !ok {
		t.Error("one node: failed on node B's p99")
	}
	// Publishers behind and unacked publishes fail the step like the
	// study's own.
	res.Published, res.PubAcks = 1900, 1800
	r = probeResult(res, 1000, 2*time.Second)
	if r.Unsent != 100 || r.Refused != 100 {
		t.Errorf("unsent %d, refused %d; want 100, 100", r.Unsent, r.Refused)
	}
	if r := probeResult(nil, 1000, time.Second); r.GatewayCPUS != -1 || r.Scheduled != 0 {
		t.Errorf("no result: %+v", r)
	}
}
