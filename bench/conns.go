//go:build linux

// conns.go is the idle-connection scenario: K connections, each subscribed
// to one of C channels, then left idle apart from a ping per connection per
// ping interval. It measures what they cost the gateway: RSS per
// connection, goroutines, threads, and CPU over an idle window. With
// -gateways G the connections are split evenly over G gateway processes,
// one loopback port each, dialed one gateway after the other by the same
// loadgen processes; each gateway's connections bind to their own block of
// source addresses.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// connsResult is one run of the conns scenario. With several gateway
// processes (-gateways) the RSS, goroutine, thread and CPU figures are sums
// over the processes, KiB/conn is the mean, and PerGateway has each one.
type connsResult struct {
	Conns        int         `json:"conns"`
	Channels     int         `json:"channels"`
	Broker       string      `json:"broker"`
	Gateways     int         `json:"gateways"`
	LoadgenProcs int         `json:"loadgen_procs"`
	SourceAddrs  int         `json:"source_addrs"`
	Dial         dialSummary `json:"dial"` // seconds: summed over the gateways, dialed in turn
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
	// Gateway CPU per idle connection: microseconds of CPU per second.
	CPUMicrosPerConnSec float64 `json:"cpu_us_per_conn_per_s"`
	PingsInWindow       int64   `json:"pings_in_window"`
	PingsPerSec         float64 `json:"pings_per_s"`

	// Kernel: TCP socket buffer memory (/proc/net/sockstat, both ends of
	// every loopback connection) and slab memory (/proc/meminfo), before
	// connecting and after the window; machine-wide.
	KernelTCPMemKiB  [2]int64 `json:"kernel_tcp_mem_kib"`
	KernelSlabKiB    [2]int64 `json:"kernel_slab_kib"`
	KernelKiBPerConn float64  `json:"kernel_kib_per_conn"` // slab + tcp mem growth / connections

	Open              int      `json:"open"` // connections still open at the end
	Lost              int      `json:"lost"` // closed by the server or an error
	LostReasons       []string `json:"lost_reasons,omitempty"`
	LoadgenGoroutines int      `json:"loadgen_goroutines"` // all loadgens, all connections open

	PerGateway []gatewayConns `json:"per_gateway,omitempty"`
}

// gatewayConns is one gateway process of a conns run.
type gatewayConns struct {
	Node           string  `json:"node"`
	Addr           string  `json:"addr"`
	Conns          int     `json:"conns"`        // dialed to it
	HealthConns    int     `json:"health_conns"` // it counted, all subscribed
	RSSBaselineKiB int64   `json:"rss_baseline_kib"`
	RSSSettledKiB  int64   `json:"rss_settled_kib"`
	RSSLaterKiB    int64   `json:"rss_later_kib"`
	HWMKiB         int64   `json:"hwm_kib"`
	KiBPerConn     float64 `json:"kib_per_conn_later"`
	Goroutines     int     `json:"goroutines_loaded"`
	Threads        int     `json:"threads_loaded"`
	CPUSeconds     float64 `json:"cpu_s"` // over the idle window
	CPUPercent     float64 `json:"cpu_percent"`
}

// runConns runs the conns scenario in phases: start the nodes
// (connsBaseline), open the idle connections (connsConnect), let them
// settle (connsSettle), measure the idle window (connsWindow) and fill the
// result from the snapshots (connsMeasure).
func runConns(ctx context.Context, o options, mode, broker, bin, tmp string, p *progress) (res *connsResult, gis []gatewayInfo, err error) {
	s := &session{}
	defer func() { gis = s.close() }()
	res = &connsResult{Conns: o.N, Channels: o.Channels, Broker: brokerLabel(broker), Gateways: o.Gateways, LoadgenProcs: o.loadgenProcs()}
	res.KernelTCPMemKiB[0], res.KernelSlabKiB[0] = kernelMem()
	base, err := connsBaseline(ctx, s, o, mode, broker, bin, tmp, p, res)
	if err != nil {
		return res, gis, err
	}
	split, connected, err := connsConnect(ctx, s, o, p, res)
	if err != nil {
		return res, gis, err
	}
	settled, st0, err := connsSettle(ctx, s, o, p, res, sumSnap(base))
	if err != nil {
		return res, gis, err
	}
	later, st1, err := connsWindow(ctx, s, o, p)
	if err != nil {
		return res, gis, err
	}
	connsMeasure(s, o, p, res, split, [4][]snapshot{base, connected, settled, later}, st0, st1)
	if res.Lost > 0 {
		return res, gis, fmt.Errorf("%d connections were closed during the run: %v%s", res.Lost, res.LostReasons, s.stderrNotes())
	}
	return res, gis, nil
}

// connsBaseline starts the gateway nodes and returns their snapshots
// before any client.
func connsBaseline(ctx context.Context, s *session, o options, mode, broker, bin, tmp string, p *progress, res *connsResult) ([]snapshot, error) {
	base, err := s.startIdle(ctx, bin, tmp, o.Gateways, broker, gatewayEnv(o, mode), p)
	if err != nil {
		return nil, err
	}
	b := sumSnap(base)
	res.RSSBaselineKiB, res.GoroutinesBaseline, res.ThreadsBaseline = b.Status.RSSKiB, b.Goroutines, b.Status.Threads
	p.printf("baseline: RSS %s, %d goroutines, %d threads (%d gateway processes)", mib(b.Status.RSSKiB), b.Goroutines, b.Status.Threads, len(s.gws))
	return base, nil
}

// connsConnect starts the loadgen processes and opens the idle
// connections, split evenly over the nodes; it returns the split and the
// nodes' snapshots once all are connected.
func connsConnect(ctx context.Context, s *session, o options, p *progress, res *connsResult) ([]int, []snapshot, error) {
	if err := s.startLoadgens(res.LoadgenProcs); err != nil {
		return nil, nil, err
	}
	split := splitEven(o.N, o.Gateways)
	first := 0
	for k, n := range split {
		srcs := sourcesFor(k, n)
		res.SourceAddrs += len(srcs)
		label := "connecting"
		if o.Gateways > 1 {
			label = fmt.Sprintf("gateway %s", nodeName(k))
		}
		p.printf("%s: %d idle connections (%d channels) to %s from %d loadgen processes, source addresses %s..%s",
			label, n, o.Channels, s.gws[k].addr, len(s.lgs), srcs[0], srcs[len(srcs)-1])
		dial := lgCommand{
			Cmd: cmdDial, URL: "ws://" + s.gws[k].addr + "/ws", Sources: srcs, Role: roleIdle, First: first,
			Channels: o.Channels, Concurrency: o.Concurrency, Timeout: 20 * time.Second, PingInterval: o.PingInterval,
		}
		d, err := s.dialAll(ctx, p, s.lgs, dial, n, label)
		res.Dial.add(d)
		if err != nil {
			return nil, nil, err
		}
		first += n
	}
	connected, err := s.snapshotAll()
	if err != nil {
		return nil, nil, err
	}
	c := sumSnap(connected)
	res.RSSConnectedKiB, res.HealthConns = c.Status.RSSKiB, c.Conns
	p.printf("all subscribed: gateways report %d connections, RSS %s", c.Conns, mib(c.Status.RSSKiB))
	return split, connected, nil
}

// connsSettle waits o.Settle and returns the nodes' snapshots and the
// loadgens' status then; b is the baseline summed over the nodes.
func connsSettle(ctx context.Context, s *session, o options, p *progress, res *connsResult, b snapshot) ([]snapshot, lgStatus, error) {
	p.printf("settling for %s", o.Settle)
	if err := sleepCtx(ctx, o.Settle); err != nil {
		return nil, lgStatus{}, err
	}
	settled, err := s.snapshotAll()
	if err != nil {
		return nil, lgStatus{}, err
	}
	st0, err := s.status(ctx)
	if err != nil {
		return nil, lgStatus{}, err
	}
	se := sumSnap(settled)
	res.RSSSettledKiB, res.GoroutinesLoaded, res.ThreadsLoaded = se.Status.RSSKiB, se.Goroutines, se.Status.Threads
	res.KiBPerConnSettle = float64(se.Status.RSSKiB-b.Status.RSSKiB) / float64(max(1, res.Dial.OK))
	p.printf("settled: RSS %s (%.2f KiB/conn), %d goroutines, %d threads, %d/%d open",
		mib(se.Status.RSSKiB), res.KiBPerConnSettle, se.Goroutines, se.Status.Threads, st0.Open, res.Dial.OK)
	return settled, st0, nil
}

// connsWindow waits out the idle window (checking the nodes every 5 s)
// and returns the nodes' snapshots and the loadgens' status at its end.
func connsWindow(ctx context.Context, s *session, o options, p *progress) ([]snapshot, lgStatus, error) {
	p.printf("idle window: gateway CPU over %s, pings every %s per connection", o.Window, o.PingInterval)
	for left := o.Window; left > 0; left -= 5 * time.Second {
		if err := sleepCtx(ctx, min(left, 5*time.Second)); err != nil {
			return nil, lgStatus{}, err
		}
		if err := s.aliveAll(); err != nil {
			return nil, lgStatus{}, err
		}
	}
	later, err := s.snapshotAll()
	if err != nil {
		return nil, lgStatus{}, err
	}
	st1, err := s.status(ctx)
	if err != nil {
		return nil, lgStatus{}, err
	}
	return later, st1, nil
}

// connsMeasure fills res from the nodes' snapshots (snaps: baseline,
// connected, settled, after the window) and the loadgens' status at the
// window's start and end.
func connsMeasure(s *session, o options, p *progress, res *connsResult, split []int, snaps [4][]snapshot, st0, st1 lgStatus) {
	base, connected, settled, later := snaps[0], snaps[1], snaps[2], snaps[3]
	b, se := sumSnap(base), sumSnap(settled)
	res.KernelTCPMemKiB[1], res.KernelSlabKiB[1] = kernelMem()
	l := sumSnap(later)
	window := later[0].At.Sub(settled[0].At).Seconds()
	res.WindowSeconds = window
	res.CPUSeconds = (l.CPU - se.CPU).Seconds()
	res.CPUPercent = 100 * res.CPUSeconds / window
	res.CPUMicrosPerConnSec = res.CPUSeconds * 1e6 / window / float64(max(1, res.Dial.OK))
	res.PingsInWindow = st1.Pings - st0.Pings
	res.PingsPerSec = float64(res.PingsInWindow) / window
	res.RSSLaterKiB, res.HWMKiB = l.Status.RSSKiB, l.Status.HWMKiB
	res.KiBPerConnLater = float64(l.Status.RSSKiB-b.Status.RSSKiB) / float64(max(1, res.Dial.OK))
	if res.Dial.OK > 0 {
		grown := res.KernelTCPMemKiB[1] - res.KernelTCPMemKiB[0] + res.KernelSlabKiB[1] - res.KernelSlabKiB[0]
		res.KernelKiBPerConn = float64(grown) / float64(res.Dial.OK)
	}
	res.Open, res.Lost, res.LostReasons, res.LoadgenGoroutines = st1.Open, st1.Closed, st1.Reasons, st1.Goroutines
	for k, g := range s.gws {
		gc := gatewayConns{
			Node: nodeName(k), Addr: g.addr, Conns: split[k], HealthConns: connected[k].Conns,
			RSSBaselineKiB: base[k].Status.RSSKiB, RSSSettledKiB: settled[k].Status.RSSKiB, RSSLaterKiB: later[k].Status.RSSKiB,
			HWMKiB: later[k].Status.HWMKiB, Goroutines: settled[k].Goroutines, Threads: settled[k].Status.Threads,
			CPUSeconds: (later[k].CPU - settled[k].CPU).Seconds(),
		}
		gc.KiBPerConn = float64(gc.RSSLaterKiB-gc.RSSBaselineKiB) / float64(max(1, split[k]))
		gc.CPUPercent = 100 * gc.CPUSeconds / window
		res.PerGateway = append(res.PerGateway, gc)
		if o.Gateways > 1 {
			p.printf("gateway %s: %d conns, RSS %s (%.2f KiB/conn), %d goroutines, CPU %.2fs (%.1f%% core)",
				gc.Node, gc.HealthConns, mib(gc.RSSLaterKiB), gc.KiBPerConn, gc.Goroutines, gc.CPUSeconds, gc.CPUPercent)
		}
	}
	p.printf("window done: CPU %.3fs (%.2f%% of a core, %.2f µs/s per conn), RSS %s (%.2f KiB/conn), kernel %.2f KiB/conn, %d open, %d lost",
		res.CPUSeconds, res.CPUPercent, res.CPUMicrosPerConnSec, mib(l.Status.RSSKiB), res.KiBPerConnLater, res.KernelKiBPerConn, res.Open, res.Lost)
}

// sumSnap adds up the snapshots of several gateways (CPU, RSS, threads,
// goroutines, connections); At is the first one's.
func sumSnap(sns []snapshot) snapshot {
	var t snapshot
	for i, sn := range sns {
		if i == 0 {
			t.At = sn.At
		}
		t.Status.RSSKiB += sn.Status.RSSKiB
		t.Status.HWMKiB += sn.Status.HWMKiB
		t.Status.Threads += sn.Status.Threads
		t.CPU += sn.CPU
		t.Goroutines += sn.Goroutines
		t.Conns += sn.Conns
	}
	return t
}

// kernelMem is the machine's TCP socket buffer memory (/proc/net/sockstat,
// "TCP: ... mem N" in pages) and slab memory (/proc/meminfo Slab), in KiB;
// 0 where unreadable.
func kernelMem() (tcpKiB, slabKiB int64) {
	if b, err := os.ReadFile("/proc/net/sockstat"); err == nil {
		for line := range strings.Lines(string(b)) {
			rest, ok := strings.CutPrefix(line, "TCP:")
			if !ok {
				continue
			}
			f := strings.Fields(rest)
			for i := 0; i+1 < len(f); i += 2 {
				if f[i] == "mem" {
					n, _ := strconv.ParseInt(f[i+1], 10, 64)
					tcpKiB = n * int64(os.Getpagesize()) / 1024
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Slab:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					slabKiB, _ = strconv.ParseInt(f[0], 10, 64)
				}
			}
		}
	}
	return tcpKiB, slabKiB
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
