//go:build linux

// all.go is `go run ./bench` with no scenario: every scenario of the
// benchmark in sequence, quick (the default, under 5 minutes) or full, each
// writing its generated part of docs/ (benchmarks-study.md and the
// <!-- bench:NAME --> sections of benchmarks.md).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// allStep is one scenario run by `go run ./bench`.
type allStep struct {
	what string   // what it measures, for the progress lines
	args []string // the scenario's own command line
}

// allSteps lists the scenarios of a quick or full run. The quick sizes
// keep the whole run under 5 minutes on a 2-core machine; the full ones
// are the sizes docs/benchmarks.md reports.
func allSteps(full, docs bool) []allStep {
	d := fmt.Sprintf("-docs=%v", docs)
	if full {
		// The sizes and sections docs/benchmarks.md reports.
		return []allStep{
			{"latency, throughput and crash across every backend", []string{"study", "-full", d}},
			{"big room: 10,000 subscribers on one channel over 2 nodes, per broker", []string{"bigroom", "-compare", "-runs", "3", d, "-env", "SYNCGATE_SERVER_ACCEPT_RATE=0"}},
			{"fan-out: 10,000 subscribers on one node, epoll and goroutine I/O", []string{"fanout", "-subs", "10000", "-rate", "5", "-duration", "20s", "-compare", d, "-broker", "memory"}},
			{"idle connections across 6 gateway processes", []string{"conns", "-gateways", "6", "-n", "100000", "-broker", "memory", "-window", "30s", d, "-env", "SYNCGATE_SERVER_ACCEPT_RATE=0"}},
		}
	}
	// Quick sizes, into their own sections of docs/benchmarks.md (the
	// full run's sections keep the full sizes their text describes).
	return []allStep{
		{"latency, throughput and crash across every backend", []string{"study", "-quick", "-budget", "190s", d}},
		{"big room: 10,000 subscribers on one channel over 2 nodes (redis)", []string{"bigroom", "-broker", "redis", "-duration", "8s", "-settle", "1s", d, "-docs-section", "bigroom-quick", "-env", "SYNCGATE_SERVER_ACCEPT_RATE=0"}},
		{"idle connections across 2 gateway processes", []string{"conns", "-gateways", "2", "-n", "20000", "-settle", "2s", "-window", "5s", d, "-docs-section", "conns-gateways-quick", "-env", "SYNCGATE_SERVER_ACCEPT_RATE=0"}},
	}
}

// allMain runs the steps in order; a failed step is reported and the next
// one still runs. It returns non-zero when any step failed.
func allMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "every scenario at quick sizes (the default): under 5 minutes")
	full := fs.Bool("full", false, "every scenario at full sizes (the ones docs/benchmarks.md reports): about 50 minutes")
	docs := fs.Bool("docs", true, "write the generated docs (docs/benchmarks-study.md, plots, sections of docs/benchmarks.md)")
	plan := fs.Bool("plan", false, "print the commands it would run, and run nothing")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run ./bench [-quick|-full] [-docs=false] [-plan]")
		fmt.Fprintln(stderr, "       go run ./bench study|conns|fanout|rooms|bigroom [flags]   (one scenario; -h for its flags)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *quick && *full {
		fmt.Fprintln(stderr, "bench: -quick and -full are exclusive")
		return 2
	}
	steps := allSteps(*full, *docs)
	if *plan {
		for _, s := range steps {
			fmt.Fprintf(stdout, "go run ./bench %s\n", strings.Join(s.args, " "))
		}
		return 0
	}
	start := time.Now()
	var failed []string
	for i, s := range steps {
		fmt.Fprintf(stderr, "\n##### %d/%d: %s\n##### go run ./bench %s\n", i+1, len(steps), s.what, strings.Join(s.args, " "))
		t := time.Now()
		var rc int
		if s.args[0] == "study" {
			rc = studyMain(s.args[1:])
		} else {
			rc = cliMain(s.args)
		}
		fmt.Fprintf(stderr, "##### %s: exit %d after %.0fs (total %.0fs)\n", s.args[0], rc, time.Since(t).Seconds(), time.Since(start).Seconds())
		if rc != 0 {
			failed = append(failed, s.args[0])
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(stderr, "bench: failed: %s\n", strings.Join(failed, ", "))
		return 1
	}
	fmt.Fprintf(stderr, "bench: all %d scenarios done in %.0fs\n", len(steps), time.Since(start).Seconds())
	return 0
}

// isAllArgs reports whether the command line asks for every scenario:
// none named, or "all".
func isAllArgs(args []string) ([]string, bool) {
	switch {
	case len(args) == 0:
		return nil, true
	case args[0] == "all":
		return args[1:], true
	case strings.HasPrefix(args[0], "-"):
		return args, true
	}
	return nil, false
}
