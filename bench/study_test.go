//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
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
	if o, err = parseStudyArgs([]string{"-full", "-backends", "memory,redis"}); err != nil || len(o.Rates) != 3 || len(o.Backends) != 2 {
		t.Fatalf("-full: %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-quick", "-full"}, {"-backends", "kafka"}, {"extra"}} {
		if _, err := parseStudyArgs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestStudyDocs writes the document and the plots of made-up results into
// a temporary directory.
func TestStudyDocs(t *testing.T) {
	h := hdrhistogram.New(1, 120_000_000, 3)
	for i := range 1000 {
		_ = h.RecordValue(int64(500 + i*10))
	}
	lat := statsOf(h)
	rs := &studyResults{
		Scenario: "study", Mode: "quick", Command: "go run ./bench study", Started: time.Now().UTC(), Finished: time.Now().UTC(),
		Machine: machine(), Params: map[string]any{},
		Backends: []studyBackend{
			{Name: "memory", Type: "memory", Nodes: 1, Latency: []loadResult{{Rate: 1000, Acked: 10, Scheduled: 10, SameNode: lat, All: lat}},
				Crash: &loadResult{Scheduled: 100, Acked: 90, Refused: 10, LostMsgs: 5, Events: []string{"t=1s kill"}}},
			{Name: "redis", Type: "redis", Nodes: 2, Latency: []loadResult{{Rate: 1000, Acked: 10, Scheduled: 10, SameNode: lat, CrossNode: lat, All: lat}},
				Crash: &loadResult{Scheduled: 100, Acked: 100}},
			{Name: "redis-streams", Type: "redis-streams", Nodes: 2, Skipped: "not built"},
		},
	}
	root := t.TempDir()
	if err := writeStudyDocs(root, rs); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(root, "docs", "benchmarks-study.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| redis | 2 | 10/10/10 |", "no acked message was lost with: redis", "memory 5 of 90 acked", "skipped: not built"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("document lacks %q:\n%s", want, md)
		}
	}
	for _, f := range []string{"study-latency-cdf.svg", "study-crash-lost.svg"} {
		if b, err := os.ReadFile(filepath.Join(root, "docs", "plots", f)); err != nil || !strings.Contains(string(b), "<svg") {
			t.Errorf("%s: %v", f, err)
		}
	}
}
