//go:build linux

// bench_test.go is a smoke test of the load generator against a real
// gateway build: the conns scenario with 200 connections and the fanout
// scenario with 50 subscribers for 2 s. It checks that every connection
// subscribed, nothing was lost and the RSS figures are real. The test binary
// doubles as the loadgen process (see TestMain). Set BENCH_GATEWAY to a
// gateway binary to test against it instead of building one.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/bench/internal/proc"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == loadgenArg {
		os.Exit(loadgenMain(os.Stdin, os.Stdout))
	}
	code := m.Run()
	if testGW.dir != "" {
		os.RemoveAll(testGW.dir)
	}
	os.Exit(code)
}

// testGW is the gateway binary the smoke tests share: BENCH_GATEWAY, or
// the repository's gateway built once.
var testGW struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func testGateway(ctx context.Context, t *testing.T) string {
	t.Helper()
	testGW.once.Do(func() {
		if testGW.bin = os.Getenv("BENCH_GATEWAY"); testGW.bin != "" {
			return
		}
		root, err := proc.FindRepoRoot()
		if err != nil {
			testGW.err = err
			return
		}
		if testGW.dir, testGW.err = os.MkdirTemp("", "syncgate-bench-test-"); testGW.err == nil {
			testGW.bin, testGW.err = proc.BuildGateway(ctx, root, testGW.dir)
		}
	})
	if testGW.err != nil {
		t.Fatal(testGW.err)
	}
	return testGW.bin
}

func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	dir := t.TempDir()
	// BENCH_GATEWAY names a prebuilt gateway binary; by default the
	// repository's gateway is built.
	bin := testGateway(ctx, t)

	t.Run("conns", func(t *testing.T) {
		rf := runBench(ctx, t, "conns", "-n", "200", "-settle", "500ms", "-window", "1s", "-gateway", bin, "-out", dir)
		c := rf.Runs[0].Conns
		if c.Dial.OK != 200 || c.HealthConns != 200 || c.Open != 200 || c.Lost != 0 {
			t.Errorf("subscribed %d, gateway counted %d, open %d, lost %d; want 200, 200, 200, 0", c.Dial.OK, c.HealthConns, c.Open, c.Lost)
		}
		if c.RSSBaselineKiB <= 0 || c.RSSSettledKiB <= 0 || c.RSSLaterKiB <= 0 {
			t.Errorf("RSS baseline %d, settled %d, later %d KiB; want all > 0", c.RSSBaselineKiB, c.RSSSettledKiB, c.RSSLaterKiB)
		}
		if c.GoroutinesBaseline <= 0 || c.Dial.Rate <= 0 {
			t.Errorf("goroutines %d, dial rate %.0f; want > 0", c.GoroutinesBaseline, c.Dial.Rate)
		}
	})

	t.Run("fanout", func(t *testing.T) {
		rf := runBench(ctx, t, "fanout", "-subs", "50", "-duration", "2s", "-rate", "5", "-settle", "200ms", "-gateway", bin, "-out", dir)
		f := rf.Runs[0].Fanout
		if f.Dial.OK != 50 || f.PubDial.OK != 1 {
			t.Errorf("subscribed %d, publishers %d; want 50, 1", f.Dial.OK, f.PubDial.OK)
		}
		if f.Published != 10 || f.Expected != 500 || f.Received != 500 || f.Lost != 0 || f.Duplicates != 0 || f.OutOfOrder != 0 {
			t.Errorf("published %d, expected %d, received %d, lost %d, dups %d, out of order %d; want 10, 500, 500, 0, 0, 0",
				f.Published, f.Expected, f.Received, f.Lost, f.Duplicates, f.OutOfOrder)
		}
		if f.Latency.Count != 500 || f.ToLast.Count != 10 || f.RSSBaselineKiB <= 0 || f.RSSLoadedKiB <= 0 {
			t.Errorf("latency samples %d, to-last samples %d, RSS %d/%d KiB; want 500, 10, > 0",
				f.Latency.Count, f.ToLast.Count, f.RSSBaselineKiB, f.RSSLoadedKiB)
		}
	})

	// The probe's warm-up (options.Warmup, no flag): it publishes at the
	// run's rate first, and none of it counts: the measured window has
	// exactly its own messages, none lost, duplicated or out of order
	// (a warm-up message counted again, or its ids mistaken for the
	// measured run's, would show here).
	t.Run("fanout warm-up", func(t *testing.T) {
		o, err := parseArgs([]string{"fanout", "-subs", "50", "-duration", "2s", "-rate", "5", "-settle", "0s"})
		if err != nil {
			t.Fatal(err)
		}
		o.Warmup = time.Second
		w := &testWriter{t: t}
		f, _, err := runFanout(ctx, o, o.IO, "memory", bin, t.TempDir(), newProgress(w))
		if err != nil {
			t.Fatal(err)
		}
		if f.Published != 10 || f.Expected != 500 || f.Received != 500 || f.Lost != 0 || f.Duplicates != 0 || f.OutOfOrder != 0 || f.Latency.Count != 500 {
			t.Errorf("published %d, expected %d, received %d, lost %d, dups %d, out of order %d, latency samples %d; want 10, 500, 500, 0, 0, 0, 500",
				f.Published, f.Expected, f.Received, f.Lost, f.Duplicates, f.OutOfOrder, f.Latency.Count)
		}
		if !strings.Contains(string(w.all), "warming up") {
			t.Error("no warm-up in the log")
		}
	})
}

// runBench runs one scenario in-process, logging its output to t.
func runBench(ctx context.Context, t *testing.T, args ...string) *resultsFile {
	t.Helper()
	o, err := parseArgs(args)
	if err != nil {
		t.Fatal(err)
	}
	w := &testWriter{t: t}
	rf, err := run(ctx, o, w, w)
	if err != nil {
		t.Fatal(err)
	}
	if len(rf.Runs) != 1 {
		t.Fatalf("%d runs, want 1", len(rf.Runs))
	}
	return rf
}

// testWriter logs each line written to it.
type testWriter struct {
	mu  sync.Mutex
	t   *testing.T
	buf []byte
	all []byte // everything written
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	w.all = append(w.all, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.t.Log(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

func TestParseMsg(t *testing.T) {
	lines := []string{
		`{"op":"msg","ch":"bench-3","seq":17,"epoch":"e1","from":"pub-3","data":{"id":17,"t":1795000000123456789}}`,
		`{"op":"msg","ch":"bench-3","seq":2,"epoch":"e1","from":"pub-3","data":{"id":2,"t":5,"pad":"xx"}}`,
	}
	for _, line := range lines {
		var fast, slow srvMsg
		if !parseMsg([]byte(line), &fast) {
			t.Fatalf("fast path rejected %s", line)
		}
		if err := json.Unmarshal([]byte(line), &slow); err != nil {
			t.Fatal(err)
		}
		if string(fast.chRaw) != slow.Ch || fast.Seq != slow.Seq || fast.Data != slow.Data || fast.Op != slow.Op {
			t.Errorf("%s: fast %+v, json %+v", line, fast, slow)
		}
	}
	for _, line := range []string{
		`{"op":"join","ch":"bench-3","user":"u","client":"c"}`,
		`{"op":"msg","ch":"bench-3","data":{"id":1,"t":2}}`,                            // no seq
		`{"op":"msg","ch":"bench-3","seq":1,"from":"x","data":"text"}`,                 // not our payload
		`{"op":"msg","ch":"bench-3","seq":1,"data":{"id":1,"t":99999999999999999999}}`, // overflows
	} {
		var m srvMsg
		if parseMsg([]byte(line), &m) {
			t.Errorf("fast path accepted %s", line)
		}
	}
	var got []string
	forEachObject([]byte("{\"a\":1}\n{\"b\":2}\n\n"), func(b []byte) { got = append(got, string(b)) })
	if strings.Join(got, "|") != `{"a":1}|{"b":2}` {
		t.Errorf("forEachObject split %q", got)
	}
}
