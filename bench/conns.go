//go:build linux

// conns.go is the idle-connection scenario: K connections, each subscribed
// to one of C channels, then left idle apart from a ping per connection per
// ping interval. It measures what they cost the gateway: RSS per
// connection, goroutines, threads, and CPU over an idle window.
package main

import (
	"context"
	"fmt"
	"time"
)

// connsResult is one run of the conns scenario.
type connsResult struct {
	Conns        int         `json:"conns"`
	Channels     int         `json:"channels"`
	LoadgenProcs int         `json:"loadgen_procs"`
	SourceAddrs  int         `json:"source_addrs"`
	Dial         dialSummary `json:"dial"`
	// Connections /healthz counted once all were subscribed.
	HealthConns int `json:"health_conns"`

	RSSBaselineKiB   int64   `json:"rss_baseline_kib"`
	RSSConnectedKiB  int64   `json:"rss_connected_kib"` // right after the last subscribe
	RSSSettledKiB    int64   `json:"rss_settled_kib"`   // after -settle
	RSSLaterKiB      int64   `json:"rss_later_kib"`     // at the end of the idle window
	HWMKiB           int64   `json:"hwm_kib"`           // peak RSS (VmHWM)
	KiBPerConnSettle float64 `json:"kib_per_conn_settled"`
	KiBPerConnLater  float64 `json:"kib_per_conn_later"`

	GoroutinesBaseline int `json:"goroutines_baseline"`
	GoroutinesLoaded   int `json:"goroutines_loaded"`
	ThreadsBaseline    int `json:"threads_baseline"`
	ThreadsLoaded      int `json:"threads_loaded"`

	WindowSeconds float64 `json:"window_s"`
	CPUSeconds    float64 `json:"cpu_s"`       // gateway utime+stime over the window
	CPUPercent    float64 `json:"cpu_percent"` // of one core
	PingsInWindow int64   `json:"pings_in_window"`
	PingsPerSec   float64 `json:"pings_per_s"`

	Open              int      `json:"open"` // connections still open at the end
	Lost              int      `json:"lost"` // closed by the server or an error
	LostReasons       []string `json:"lost_reasons,omitempty"`
	LoadgenGoroutines int      `json:"loadgen_goroutines"` // all loadgens, all connections open
}

func runConns(ctx context.Context, o options, mode, bin, tmp string, p *progress) (res *connsResult, gi gatewayInfo, err error) {
	s := &session{}
	defer func() { gi = s.close() }()
	res = &connsResult{Conns: o.N, Channels: o.Channels, LoadgenProcs: o.loadgenProcs()}

	if s.gw, err = startGateway(ctx, bin, tmp, gatewayEnv(o, mode)); err != nil {
		return res, gi, err
	}
	p.printf("gateway pid %d on %s (io=%s)", s.gw.pid, s.gw.addr, mode)
	if err := sleepCtx(ctx, time.Second); err != nil {
		return res, gi, err
	}
	base, err := s.gw.snapshot()
	if err != nil {
		return res, gi, err
	}
	res.RSSBaselineKiB, res.GoroutinesBaseline, res.ThreadsBaseline = base.Status.RSSKiB, base.Goroutines, base.Status.Threads
	p.printf("baseline: RSS %s, %d goroutines, %d threads", mib(base.Status.RSSKiB), base.Goroutines, base.Status.Threads)

	if err := s.startLoadgens(res.LoadgenProcs); err != nil {
		return res, gi, err
	}
	srcs := sources(o.N)
	res.SourceAddrs = len(srcs)
	p.printf("connecting %d idle connections (%d channels) from %d loadgen processes, %d source addresses",
		o.N, o.Channels, len(s.lgs), len(srcs))
	dial := lgCommand{
		Cmd: cmdDial, URL: "ws://" + s.gw.addr + "/ws", Sources: srcs, Role: roleIdle,
		Channels: o.Channels, Concurrency: o.Concurrency, Timeout: 20 * time.Second, PingInterval: o.PingInterval,
	}
	if res.Dial, err = s.dialAll(ctx, p, s.lgs, dial, o.N, "connecting"); err != nil {
		return res, gi, err
	}
	connected, err := s.gw.snapshot()
	if err != nil {
		return res, gi, err
	}
	res.RSSConnectedKiB, res.HealthConns = connected.Status.RSSKiB, connected.Conns
	p.printf("all subscribed: gateway reports %d connections, RSS %s", connected.Conns, mib(connected.Status.RSSKiB))

	p.printf("settling for %s", o.Settle)
	if err := sleepCtx(ctx, o.Settle); err != nil {
		return res, gi, err
	}
	settled, err := s.gw.snapshot()
	if err != nil {
		return res, gi, err
	}
	st0, err := s.status(ctx)
	if err != nil {
		return res, gi, err
	}
	res.RSSSettledKiB, res.GoroutinesLoaded, res.ThreadsLoaded = settled.Status.RSSKiB, settled.Goroutines, settled.Status.Threads
	res.KiBPerConnSettle = float64(settled.Status.RSSKiB-base.Status.RSSKiB) / float64(max(1, res.Dial.OK))
	p.printf("settled: RSS %s (%.2f KiB/conn), %d goroutines, %d threads, %d/%d open",
		mib(settled.Status.RSSKiB), res.KiBPerConnSettle, settled.Goroutines, settled.Status.Threads, st0.Open, res.Dial.OK)

	p.printf("idle window: gateway CPU over %s, pings every %s per connection", o.Window, o.PingInterval)
	for left := o.Window; left > 0; left -= 5 * time.Second {
		if err := sleepCtx(ctx, min(left, 5*time.Second)); err != nil {
			return res, gi, err
		}
		if err := s.gw.alive(); err != nil {
			return res, gi, err
		}
	}
	later, err := s.gw.snapshot()
	if err != nil {
		return res, gi, err
	}
	st1, err := s.status(ctx)
	if err != nil {
		return res, gi, err
	}
	window := later.At.Sub(settled.At).Seconds()
	res.WindowSeconds = window
	res.CPUSeconds = (later.CPU - settled.CPU).Seconds()
	res.CPUPercent = 100 * res.CPUSeconds / window
	res.PingsInWindow = st1.Pings - st0.Pings
	res.PingsPerSec = float64(res.PingsInWindow) / window
	res.RSSLaterKiB, res.HWMKiB = later.Status.RSSKiB, later.Status.HWMKiB
	res.KiBPerConnLater = float64(later.Status.RSSKiB-base.Status.RSSKiB) / float64(max(1, res.Dial.OK))
	res.Open, res.Lost, res.LostReasons, res.LoadgenGoroutines = st1.Open, st1.Closed, st1.Reasons, st1.Goroutines
	p.printf("window done: CPU %.3fs (%.2f%% of a core), RSS %s (%.2f KiB/conn), %d open, %d lost",
		res.CPUSeconds, res.CPUPercent, mib(later.Status.RSSKiB), res.KiBPerConnLater, res.Open, res.Lost)
	if res.Lost > 0 {
		return res, gi, fmt.Errorf("%d connections were closed during the run: %v%s", res.Lost, res.LostReasons, s.gw.stderrNote())
	}
	return res, gi, nil
}

// status sums the status of every loadgen.
func (s *session) status(ctx context.Context) (lgStatus, error) {
	var sum lgStatus
	for _, l := range s.lgs {
		ev, err := l.call(ctx, lgCommand{Cmd: cmdStatus}, evStatus, 30*time.Second)
		if err != nil {
			return sum, err
		}
		st := ev.Status
		sum.Open += st.Open
		sum.Closed += st.Closed
		sum.Pings += st.Pings
		sum.Goroutines += st.Goroutines
		sum.Reasons = append(sum.Reasons, st.Reasons...)
	}
	return sum, nil
}

// mib shows KiB as MiB; 0 (never measured) as "-".
func mib(kib int64) string {
	if kib == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(kib)/1024)
}
