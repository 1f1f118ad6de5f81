//go:build linux

package main

import (
	"strings"
	"testing"
)

func TestSeedReading(t *testing.T) {
	run := func(p50, p99 float64) []loadResult {
		s := latStats{Count: 10, P50: p50, P99: p99}
		return []loadResult{{Rate: 1000, All: s, CrossNode: s, SameNode: s}}
	}
	rs := &studyResults{Backends: []studyBackend{
		{Name: "redis", Nodes: 2, Latency: run(1, 3), Crash: &loadResult{Scheduled: 10, Acked: 10, LostMsgs: 4}},
		{Name: "jetstream-file", Nodes: 2, Latency: run(2.5, 9), Crash: &loadResult{Scheduled: 10, Acked: 10}},
	}}
	got := strings.Join(seedReading(rs), "\n")
	for _, want := range []string{
		"Latency bought by redis (p50 1.00 ms, p99 3.00 ms at 1000 msg/s) over the logs",
		"jetstream-file +1.50 ms at p50, +6.00 ms at p99",
		"redis lost 4 of 10 acked, jetstream-file lost 0 of 10 acked",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("reading lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Caution") || strings.Contains(got, "nats") {
		t.Errorf("reading speaks of what it was not given:\n%s", got)
	}
}
