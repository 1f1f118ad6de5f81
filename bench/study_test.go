//go:build linux

package main

import (
	"strings"
	"testing"
	"time"
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
	if o.Reps != 3 || len(o.TputSteps) != 7 || o.TputSteps[0] != o.Rates[0] || o.Limit != 5*time.Minute || o.Budget >= o.Limit {
		t.Fatalf("quick: reps %d, steps %v, budget %s of %s", o.Reps, o.TputSteps, o.Budget, o.Limit)
	}
	// The mandatory runs of every backend fit in the quick budget.
	if n := time.Duration(len(allBackends)); n*o.backendEstimate() > o.Budget {
		t.Errorf("quick: %d backends x %s > budget %s", n, o.backendEstimate(), o.Budget)
	}
	if o, err = parseStudyArgs([]string{"-full", "-backends", "memory,redis"}); err != nil || len(o.Rates) != 3 || len(o.Backends) != 2 {
		t.Fatalf("-full: %+v, %v", o, err)
	}
	if o.ProbeRuns != 3 {
		t.Errorf("-full: %d probe runs, want 3", o.ProbeRuns)
	}
	if o.Reps != 3 || o.Limit != 30*time.Minute || len(o.TputSteps) < 5 {
		t.Fatalf("-full: reps %d, limit %s, steps %v", o.Reps, o.Limit, o.TputSteps)
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
	for _, bad := range [][]string{{"-quick", "-full"}, {"-backends", "kafka"}, {"extra"}, {"-latency-for", "-1s"}, {"-probe-subs", "-1"}, {"-probe-subs", "11"}} {
		if _, err := parseStudyArgs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestStudyBudget(t *testing.T) {
	now := time.Unix(1000, 0)
	b := &studyBudget{deadline: now.Add(100 * time.Second), hard: now.Add(120 * time.Second), perBackend: 20 * time.Second, now: func() time.Time { return now }}
	// 4 backends left: 80 s mandatory, 20 s spare, 5 s each.
	if !b.fits() || b.allowance(4) != 5*time.Second {
		t.Fatalf("allowance %s", b.allowance(4))
	}
	b.record(10 * time.Second)
	b.record(30 * time.Second)
	if b.estimate() != 20*time.Second {
		t.Errorf("estimate %s", b.estimate())
	}
	// Past the soft deadline's share but before the hard one: the
	// backend runs, without throughput steps.
	now = now.Add(90 * time.Second)
	if !b.fits() || b.allowance(1) != 0 {
		t.Errorf("late: fits %v, allowance %s", b.fits(), b.allowance(1))
	}
	now = now.Add(10 * time.Second)
	if b.fits() {
		t.Error("too late: fits")
	}
}
