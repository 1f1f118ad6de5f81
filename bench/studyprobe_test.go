//go:build linux

package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestScanStudyMsg(t *testing.T) {
	// What encoding/json makes and what appendStudyMsg makes agree, and
	// both scan back.
	for _, m := range []studyMsg{{0, 0}, {7, 1733300000123456789}, {49_999_999, 1}} {
		want, _ := json.Marshal(m)
		got := appendStudyMsg(nil, m.I, m.T)
		if string(got) != string(want) {
			t.Fatalf("appendStudyMsg = %s, json = %s", got, want)
		}
		i, ts, ok := scanStudyMsg(got)
		if !ok || i != m.I || ts != m.T {
			t.Fatalf("scan %s = %d %d %v", got, i, ts, ok)
		}
	}
	good := map[string][2]int64{
		` { "t" : 5 , "i" : 3 } `: {3, 5},
		"{\"i\":1,\n\"t\":2}":     {1, 2},
	}
	for in, w := range good {
		i, ts, ok := scanStudyMsg([]byte(in))
		if !ok || int64(i) != w[0] || ts != w[1] {
			t.Errorf("scan %q = %d %d %v, want %v", in, i, ts, ok, w)
		}
	}
	bad := []string{
		``, `{}`, `{"i":1}`, `{"t":1}`, `{"i":1,"t":2,"x":3}`, `{"i":1,"i":2}`, `{"i":-1,"t":2}`,
		`{"i":"1","t":2}`, `{"i":1,"t":2}x`, `{"i":1,"t":2`, `{"i":1.5,"t":2}`, `[1,2]`,
		`{"i":1,"t":12345678901234567890}`, `{"ii":1,"t":2}`, `{"i" 1,"t":2}`,
		strings.Repeat(`{`, 100),
	}
	for _, in := range bad {
		if i, ts, ok := scanStudyMsg([]byte(in)); ok {
			t.Errorf("scan %q = %d %d, want not ok", in, i, ts)
		}
	}
}

func TestCheckAgreement(t *testing.T) {
	for _, c := range []struct {
		a    agreement
		ok   bool
		flag string
	}{
		{agreement{StudyP50: 1, StudyP99: 3, ProbeP50: 1, ProbeP99: 3}, true, ""},
		{agreement{StudyP50: 1.24, StudyP99: 4.4, ProbeP50: 1, ProbeP99: 3}, true, ""},
		{agreement{StudyP50: 0.76, StudyP99: 1.6, ProbeP50: 1, ProbeP99: 3}, true, ""},
		{agreement{StudyP50: 1.3, StudyP99: 3, ProbeP50: 1, ProbeP99: 3}, false, "p50 differs by +30 %"},
		{agreement{StudyP50: 0.7, StudyP99: 3, ProbeP50: 1, ProbeP99: 3}, false, "p50 differs by -30 %"},
		{agreement{StudyP50: 1, StudyP99: 12.8, ProbeP50: 1, ProbeP99: 2}, false, "p99 differs by +540 %"},
		{agreement{StudyP50: 1, StudyP99: 3, ProbeP50: 1, ProbeP99: 3, ProbeLost: 4}, false, "probe lost 4"},
		{agreement{StudyP50: 1, StudyP99: 3, Error: "boom"}, false, "probe failed: boom"},
		{agreement{ProbeP50: 1, ProbeP99: 3}, false, "no latency"},
	} {
		got := checkAgreement(c.a)
		if got.OK != c.ok || !strings.HasPrefix(got.Flag, c.flag) {
			t.Errorf("checkAgreement(%+v) = ok %v flag %q, want %v %q", c.a, got.OK, got.Flag, c.ok, c.flag)
		}
	}
}

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
