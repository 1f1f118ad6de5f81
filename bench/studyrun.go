//go:build linux

// studyrun.go runs the study over the backends and collects the results.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// studyBackend is one backend's results.
type studyBackend struct {
	Name    string       `json:"name"`
	Type    string       `json:"broker_type"`
	Nodes   int          `json:"nodes"`
	Note    string       `json:"persistence"`
	Skipped string       `json:"skipped,omitempty"`
	Latency []loadResult `json:"latency,omitempty"`
	Crash   *loadResult  `json:"crash,omitempty"`
	Errors  []string     `json:"errors,omitempty"`
}

// studyResults is the JSON file and the input of the docs.
type studyResults struct {
	Scenario      string         `json:"scenario"`
	Mode          string         `json:"mode"`
	Command       string         `json:"command"`
	Started       time.Time      `json:"started"`
	Finished      time.Time      `json:"finished"`
	Machine       machineInfo    `json:"machine"`
	GatewaySource string         `json:"gateway_source"`
	Params        map[string]any `json:"params"`
	Backends      []studyBackend `json:"backends"`
}

func runStudy(ctx context.Context, o studyOptions, out, logw io.Writer) (*studyResults, error) {
	root, err := findRepoRoot()
	if err != nil {
		return nil, err
	}
	p := newProgress(logw)
	// The whole study is bounded.
	limit := 5 * time.Minute
	if o.Full {
		limit = 30 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	rs := &studyResults{
		Scenario: "study", Mode: o.mode(), Command: commandLine(o.Args), Started: time.Now().UTC(), Machine: machine(),
		Params: map[string]any{
			"latency_rates": o.Rates, "latency_channels": o.Channels, "latency_subs_per_channel": o.SubsPerChannel,
			"latency_duration_s": o.LatencyFor.Seconds(), "crash_rate": o.CrashRate, "crash_channels": o.CrashChannels,
			"crash_subs_per_channel": o.CrashSubs, "crash_duration_s": o.CrashFor.Seconds(), "crash_at_s": o.CrashAt.Seconds(),
			"crash_pause_s": o.CrashPause.Seconds(), "drain_s": o.Drain.Seconds(),
		},
	}
	tmp, err := os.MkdirTemp("", "syncgate-study-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := o.Gateway
	rs.GatewaySource = "prebuilt binary " + filepath.Base(bin)
	if bin == "" {
		rs.GatewaySource = sourceVersion(ctx, root)
		p.printf("building the gateway")
		if bin, err = buildGateway(ctx, root, tmp); err != nil {
			return nil, err
		}
	}
	specs := backendSpecs()
	var errs []error
	for _, name := range o.Backends {
		if ctx.Err() != nil {
			break
		}
		spec := specs[name]
		b := studyBackend{Name: spec.Name, Type: spec.Type, Nodes: spec.Nodes, Note: spec.Note}
		if ok, why := supported(ctx, bin, tmp, spec.Type); !ok {
			b.Skipped = "broker.type " + spec.Type + " is not accepted by this gateway build"
			p.printf("=== %s: skipped (%s)", name, why)
			rs.Backends = append(rs.Backends, b)
			continue
		}
		p.printf("=== %s: latency ===", name)
		for _, rate := range o.Rates {
			r, err := studyLatency(ctx, o, spec, bin, tmp, rate, p)
			if err != nil {
				r.Error = err.Error()
				b.Errors = append(b.Errors, err.Error())
				errs = append(errs, fmt.Errorf("%s latency %g/s: %w", name, rate, err))
				p.printf("%s latency failed: %v", name, err)
			}
			b.Latency = append(b.Latency, r)
		}
		if ctx.Err() != nil {
			rs.Backends = append(rs.Backends, b)
			break
		}
		p.printf("=== %s: crash ===", name)
		r, err := studyCrash(ctx, o, spec, bin, tmp, p)
		if err != nil {
			r.Error = err.Error()
			b.Errors = append(b.Errors, err.Error())
			errs = append(errs, fmt.Errorf("%s crash: %w", name, err))
			p.printf("%s crash failed: %v", name, err)
		}
		b.Crash = &r
		rs.Backends = append(rs.Backends, b)
	}
	rs.Finished = time.Now().UTC()
	printStudy(out, rs)

	dir := o.Out
	if dir == "" {
		dir = filepath.Join(root, "bench", "results")
	}
	path, err := writeStudyJSON(dir, rs)
	if err != nil {
		errs = append(errs, err)
	} else {
		fmt.Fprintf(out, "\nraw results: %s\n", path)
	}
	if o.Docs && ctx.Err() == nil {
		if err := writeStudyDocs(root, rs); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintln(out, "docs: docs/benchmarks-study.md, docs/plots/study-latency-cdf.svg, docs/plots/study-crash-lost.svg")
		}
	}
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("stopped: %w", ctx.Err()))
	}
	return rs, errors.Join(errs...)
}

// runDir makes a fresh directory for one run's processes.
func runDir(tmp, name string) (string, error) {
	d, err := os.MkdirTemp(tmp, name+"-")
	return d, err
}

func studyLatency(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, rate float64, p *progress) (loadResult, error) {
	dir, err := runDir(tmp, spec.Name+"-latency")
	if err != nil {
		return loadResult{Rate: rate}, err
	}
	c, err := startCluster(ctx, spec, bin, dir, false, p)
	if err != nil {
		return loadResult{Rate: rate}, err
	}
	defer c.close()
	label := fmt.Sprintf("%s %g msg/s", spec.Name, rate)
	return runLoad(ctx, c.urls(), loadSpec{
		Channels: o.Channels, SubsPerChannel: o.SubsPerChannel, Rate: rate,
		Duration: o.LatencyFor, Drain: o.Drain, PublishTimeout: 5 * time.Second,
	}, p, label, nil)
}

func studyCrash(ctx context.Context, o studyOptions, spec backendSpec, bin, tmp string, p *progress) (loadResult, error) {
	dir, err := runDir(tmp, spec.Name+"-crash")
	if err != nil {
		return loadResult{}, err
	}
	c, err := startCluster(ctx, spec, bin, dir, true, p)
	if err != nil {
		return loadResult{}, err
	}
	defer c.close()
	var restartErr error
	during := func(ctx context.Context, start time.Time, event func(string, ...any)) {
		if sleepCtx(ctx, time.Until(start.Add(o.CrashAt))) != nil {
			return
		}
		what, pid := c.crash()
		event("kill -9 %s (pid %d)", what, pid)
		if sleepCtx(ctx, o.CrashPause) != nil {
			return
		}
		t := time.Now()
		pid, err := c.restart(ctx)
		if err != nil {
			restartErr = err
			event("restart failed: %v", err)
			return
		}
		event("restarted (pid %d), ready in %.2fs", pid, time.Since(t).Seconds())
	}
	r, err := runLoad(ctx, c.urls(), loadSpec{
		Channels: o.CrashChannels, SubsPerChannel: o.CrashSubs, Rate: o.CrashRate,
		Duration: o.CrashFor, Drain: o.Drain, PublishTimeout: 2 * time.Second,
		DropAt: o.CrashAt + o.CrashPause/2, ResubAt: o.CrashAt + o.CrashPause + 2*time.Second,
	}, p, spec.Name+" crash", during)
	if err == nil {
		err = restartErr
	}
	return r, err
}

// studyFromFile prints the tables of a results file and writes the docs
// from it (the document keeps the command and date of the run).
func studyFromFile(path string, out io.Writer) error {
	root, err := findRepoRoot()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rs studyResults
	if err := json.Unmarshal(b, &rs); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	printStudy(out, &rs)
	return writeStudyDocs(root, &rs)
}
