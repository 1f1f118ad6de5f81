//go:build linux

package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestAllSteps: every command `go run ./bench` runs, quick and full, is a
// valid command line of its scenario.
func TestAllSteps(t *testing.T) {
	for _, full := range []bool{false, true} {
		for _, s := range allSteps(full, false) {
			var err error
			if s.args[0] == "study" {
				_, err = parseStudyArgs(s.args[1:])
			} else {
				_, err = parseArgs(s.args)
			}
			if err != nil {
				t.Errorf("full=%v: %q: %v", full, strings.Join(s.args, " "), err)
			}
		}
	}
	for _, c := range []struct {
		args []string
		all  bool
	}{{nil, true}, {[]string{"all", "-full"}, true}, {[]string{"-quick"}, true}, {[]string{"study"}, false}, {[]string{"conns", "-n", "10"}, false}} {
		if _, ok := isAllArgs(c.args); ok != c.all {
			t.Errorf("isAllArgs(%q) = %v, want %v", c.args, ok, c.all)
		}
	}
	var out, errw bytes.Buffer
	if rc := allMain([]string{"-full", "-plan"}, &out, &errw); rc != 0 || strings.Count(out.String(), "go run ./bench ") != 4 {
		t.Errorf("-full -plan: exit %d, printed %q (%s)", rc, out.String(), errw.String())
	}
	if rc := allMain([]string{"-quick", "-full"}, &out, &errw); rc != 2 {
		t.Errorf("-quick -full: exit %d, want 2", rc)
	}
}

// TestCommandLineDropsOut: a document's command line names no directory of
// the machine that ran it.
func TestCommandLineDropsOut(t *testing.T) {
	got := commandLine([]string{"faults", "-docs", "-out", "/some/dir", "-duration", "1m", "-out=/other"})
	if strings.Contains(got, "/some/dir") || strings.Contains(got, "/other") || strings.Contains(got, "-out") {
		t.Fatalf("commandLine = %q: it names the output directory", got)
	}
	if !strings.HasSuffix(got, "faults -docs -duration 1m") {
		t.Fatalf("commandLine = %q: arguments lost", got)
	}
}
