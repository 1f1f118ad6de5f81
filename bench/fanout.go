//go:build linux

// fanout.go is the fan-out scenario (and its rooms preset): S subscribers
// spread evenly over C channels, one publisher connection per channel
// publishing R messages a second for a while, open loop. Every message
// carries its send time and id; subscribers count loss, duplicates and
// order, and record the latency from send to receive. The gateway's CPU per
// delivery is its CPU time over the publishing window divided by the
// deliveries.
package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// fanoutResult is one run of the fanout scenario.
type fanoutResult struct {
	Subs         int         `json:"subs"`
	Channels     int         `json:"channels"`
	Rate         float64     `json:"rate"` // per channel
	DurationS    float64     `json:"duration_s"`
	Payload      int         `json:"payload"`
	LoadgenProcs int         `json:"loadgen_procs"` // subscriber processes; the publisher has its own
	SourceAddrs  int         `json:"source_addrs"`
	Dial         dialSummary `json:"dial"`
	PubDial      dialSummary `json:"pub_dial"`
	QuietWaitS   float64     `json:"quiet_wait_s"` // waited for the gateway to go idle after subscribing
	Quiet        bool        `json:"quiet"`

	Published   int      `json:"published"`            // messages, all channels
	Scheduled   int      `json:"scheduled"`            // messages, all channels
	PubAcks     int64    `json:"pub_acks"`             // acks the publishers got
	PubErrors   []string `json:"pub_errors,omitempty"` // errors the publishers got
	MaxPubLagMs float64  `json:"max_pub_lag_ms"`       // worst send delay behind schedule

	Expected     int64 `json:"expected"` // deliveries: published x subscribers of the channel
	Received     int64 `json:"received"` // distinct deliveries
	Lost         int64 `json:"lost"`
	Duplicates   int64 `json:"duplicates"`
	OutOfOrder   int64 `json:"out_of_order"`
	SeqGaps      int64 `json:"seq_gaps"`
	Unexpected   int64 `json:"unexpected"`
	SubsWithLoss int   `json:"subs_with_loss"`

	WindowS          float64 `json:"window_s"` // first send to last receive
	DeliveriesPerSec float64 `json:"deliveries_per_s"`
	GatewayCPUS      float64 `json:"gateway_cpu_s"` // over the publishing window, until all arrived
	CPUWindowS       float64 `json:"cpu_window_s"`
	CPUMicrosPerDlv  float64 `json:"gateway_cpu_us_per_delivery"`
	LoadgenCPUS      float64 `json:"loadgen_cpu_s"` // all loadgens, same window

	Latency latencyStats `json:"latency_ms"` // publish timestamp to receive
	// Per message: time from publish until the last subscriber got it.
	ToLast        latencyStats `json:"to_last_ms"`
	ToLastMissing int          `json:"to_last_incomplete"` // messages some subscriber never got

	RSSBaselineKiB   int64 `json:"rss_baseline_kib"`
	RSSLoadedKiB     int64 `json:"rss_loaded_kib"` // all subscribed, before publishing
	RSSAfterKiB      int64 `json:"rss_after_kib"`
	HWMKiB           int64 `json:"hwm_kib"`
	GoroutinesLoaded int   `json:"goroutines_loaded"`
	HealthConns      int   `json:"health_conns"`

	ConnsLost   int              `json:"conns_lost"`
	ConnReasons []string         `json:"conn_reasons,omitempty"`
	Ops         map[string]int64 `json:"ops,omitempty"` // other ops subscribers received
}

// latencyStats are in milliseconds.
type latencyStats struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

func runFanout(ctx context.Context, o options, mode, bin, tmp string, p *progress) (res *fanoutResult, gi gatewayInfo, err error) {
	s := &session{}
	defer func() { gi = s.close() }()
	res = &fanoutResult{
		Subs: o.Subs, Channels: o.Channels, Rate: o.Rate, DurationS: o.Duration.Seconds(),
		Payload: o.Payload, LoadgenProcs: o.loadgenProcs(),
	}

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
	res.RSSBaselineKiB = base.Status.RSSKiB

	if err := s.startLoadgens(res.LoadgenProcs + 1); err != nil {
		return res, gi, err
	}
	subs, pub := s.lgs[:res.LoadgenProcs], s.lgs[res.LoadgenProcs]
	srcs := sources(o.Subs + o.Channels)
	res.SourceAddrs = len(srcs)
	dial := lgCommand{
		Cmd: cmdDial, URL: "ws://" + s.gw.addr + "/ws", Sources: srcs, Role: roleSub,
		Channels: o.Channels, Concurrency: o.Concurrency, Timeout: 20 * time.Second, PingInterval: o.PingInterval,
	}
	p.printf("connecting %d subscribers over %d channels from %d loadgen processes", o.Subs, o.Channels, len(subs))
	if res.Dial, err = s.dialAll(ctx, p, subs, dial, o.Subs, "subscribers"); err != nil {
		return res, gi, err
	}
	// Publishers get the indexes after the subscribers: connection i is on
	// channel i % C, so the C publishers cover every channel once.
	dial.Role, dial.First = rolePub, o.Subs
	if res.PubDial, err = s.dialAll(ctx, p, []*loadgenProc{pub}, dial, o.Channels, "publishers"); err != nil {
		return res, gi, err
	}

	p.printf("settling for %s, then waiting for the gateway to go idle", o.Settle)
	if err := sleepCtx(ctx, o.Settle); err != nil {
		return res, gi, err
	}
	wait, quiet, err := s.gw.waitQuiet(ctx, 30*time.Second)
	if err != nil {
		return res, gi, err
	}
	res.QuietWaitS, res.Quiet = wait.Seconds(), quiet
	if !quiet {
		p.printf("gateway still busy after %s; publishing anyway", wait.Round(time.Second))
	}
	loaded, err := s.gw.snapshot()
	if err != nil {
		return res, gi, err
	}
	res.RSSLoadedKiB, res.GoroutinesLoaded, res.HealthConns = loaded.Status.RSSKiB, loaded.Goroutines, loaded.Conns
	p.printf("ready: gateway reports %d connections, RSS %s, %d goroutines", loaded.Conns, mib(loaded.Status.RSSKiB), loaded.Goroutines)
	before, err := s.count(ctx, subs)
	if err != nil {
		return res, gi, err
	}

	// Publish, watching deliveries once a second.
	lg0 := s.loadgenCPU()
	p.printf("publishing %g msg/s on each of %d channels for %s", o.Rate, o.Channels, o.Duration)
	pubCmd := lgCommand{Cmd: cmdPublish, Rate: o.Rate, Duration: o.Duration, Payload: o.Payload}
	if err := pub.send(pubCmd); err != nil {
		return res, gi, err
	}
	type answer struct {
		ev  lgEvent
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		ev, err := pub.await(ctx, evPublished, o.Duration+60*time.Second)
		answered <- answer{ev, err}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var pr *publishResult
	for pr == nil {
		select {
		case a := <-answered:
			if a.err != nil {
				return res, gi, a.err
			}
			pr = a.ev.Published
		case <-tick.C:
			n, err := s.count(ctx, subs)
			if err != nil {
				return res, gi, err
			}
			if err := s.gw.alive(); err != nil {
				return res, gi, err
			}
			p.printf("publishing: %s/%s, %d deliveries so far", time.Since(loaded.At).Round(time.Second), o.Duration, n-before)
		}
	}
	res.Scheduled = pr.Scheduled * o.Channels
	res.PubAcks, res.PubErrors, res.MaxPubLagMs = pr.Acks, pr.Errors, ms(pr.MaxLag)
	for c, n := range pr.Published {
		res.Published += n
		res.Expected += int64(n) * int64(subsOn(c, o.Subs, o.Channels))
	}

	// Wait until everything arrived, or nothing more arrives for 3 s.
	received, lastChange, drainStart := int64(0), time.Now(), time.Now()
	for {
		n, err := s.count(ctx, subs)
		if err != nil {
			return res, gi, err
		}
		if n != received {
			received, lastChange = n, time.Now()
		}
		if received-before >= res.Expected || time.Since(lastChange) > 3*time.Second || time.Since(drainStart) > 30*time.Second {
			break
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return res, gi, err
		}
	}
	end, err := s.gw.snapshot()
	if err != nil {
		return res, gi, err
	}
	lg1 := s.loadgenCPU()
	res.CPUWindowS = end.At.Sub(loaded.At).Seconds()
	res.GatewayCPUS = (end.CPU - loaded.CPU).Seconds()
	res.LoadgenCPUS = (lg1 - lg0).Seconds()
	res.RSSAfterKiB, res.HWMKiB = end.Status.RSSKiB, end.Status.HWMKiB
	p.printf("published %d messages; %d/%d deliveries arrived", res.Published, received-before, res.Expected)

	if err := s.collectFanout(ctx, subs, pr, o, res); err != nil {
		return res, gi, err
	}
	p.printf("latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; gateway %.2f µs CPU per delivery",
		res.Latency.P50, res.Latency.P99, res.Latency.Max, res.CPUMicrosPerDlv)
	return res, gi, problems(res, s.gw)
}

// collectFanout gathers and merges what every subscriber process saw.
func (s *session) collectFanout(ctx context.Context, subs []*loadgenProc, pr *publishResult, o options, res *fanoutResult) error {
	hist := hdrhistogram.New(histMin, histMax, histSig)
	lastRecv := make([][]int64, o.Channels)
	receivers := make([][]int32, o.Channels)
	for _, l := range subs {
		ev, err := l.call(ctx, lgCommand{Cmd: cmdCollect, Published: pr.Published}, evCollected, 60*time.Second)
		if err != nil {
			return err
		}
		c := ev.Collected
		res.Received += c.Received
		res.Lost += c.Missing
		res.Duplicates += c.Duplicates
		res.OutOfOrder += c.OutOfOrder
		res.SeqGaps += c.SeqGaps
		res.Unexpected += c.Unexpected
		res.SubsWithLoss += c.SubsWithLoss
		res.ConnsLost += c.Closed
		res.ConnReasons = append(res.ConnReasons, c.Reasons...)
		for op, n := range c.Ops {
			if res.Ops == nil {
				res.Ops = map[string]int64{}
			}
			res.Ops[op] += n
		}
		h, err := hdrhistogram.Decode(c.Hist)
		if err != nil {
			return fmt.Errorf("loadgen %d histogram: %w", l.id, err)
		}
		hist.Merge(h)
		for ch := range min(len(c.LastRecv), o.Channels) {
			lastRecv[ch] = mergeMax(lastRecv[ch], c.LastRecv[ch])
			receivers[ch] = mergeSum(receivers[ch], c.Receivers[ch])
		}
	}
	res.Latency = histStats(hist)

	// Per message: when did its last subscriber get it?
	var toLast []int64
	firstSend, lastRecvAll := int64(0), int64(0)
	for ch, sends := range pr.SendNS {
		want := int32(subsOn(ch, o.Subs, o.Channels))
		for i, sent := range sends {
			if firstSend == 0 || sent < firstSend {
				firstSend = sent
			}
			if i < len(receivers[ch]) && receivers[ch][i] == want {
				toLast = append(toLast, lastRecv[ch][i]-sent)
			} else {
				res.ToLastMissing++
			}
			if i < len(lastRecv[ch]) {
				lastRecvAll = max(lastRecvAll, lastRecv[ch][i])
			}
		}
	}
	res.ToLast = sliceStats(toLast)
	if lastRecvAll > firstSend && firstSend > 0 {
		res.WindowS = float64(lastRecvAll-firstSend) / 1e9
		res.DeliveriesPerSec = float64(res.Received) / res.WindowS
	}
	if res.Received > 0 {
		res.CPUMicrosPerDlv = res.GatewayCPUS * 1e6 / float64(res.Received)
	}
	return nil
}

// problems lists what went wrong in a fanout run, as an error.
func problems(res *fanoutResult, gw *gatewayProc) error {
	var ps []string
	if res.Lost > 0 {
		ps = append(ps, fmt.Sprintf("%d of %d deliveries lost (%d subscribers affected)", res.Lost, res.Expected, res.SubsWithLoss))
	}
	if res.Duplicates > 0 || res.OutOfOrder > 0 || res.Unexpected > 0 {
		ps = append(ps, fmt.Sprintf("%d duplicates, %d out of order, %d unexpected", res.Duplicates, res.OutOfOrder, res.Unexpected))
	}
	if res.ConnsLost > 0 {
		ps = append(ps, fmt.Sprintf("%d subscriber connections closed: %s", res.ConnsLost, strings.Join(res.ConnReasons, "; ")))
	}
	if res.Published < res.Scheduled || len(res.PubErrors) > 0 || res.PubAcks < int64(res.Published) {
		ps = append(ps, fmt.Sprintf("publishers: %d/%d sent, %d acks, errors: %v", res.Published, res.Scheduled, res.PubAcks, res.PubErrors))
	}
	if len(ps) == 0 {
		return nil
	}
	return errors.New(strings.Join(ps, "\n") + gw.stderrNote())
}

// count is the number of msgs the subscribers received so far.
func (s *session) count(ctx context.Context, subs []*loadgenProc) (int64, error) {
	var n int64
	for _, l := range subs {
		ev, err := l.call(ctx, lgCommand{Cmd: cmdCount}, evCount, 10*time.Second)
		if err != nil {
			return 0, err
		}
		n += ev.Received
	}
	return n, nil
}

// subsOn is how many of subs subscribers are on channel ch: subscriber i
// is on channel i % channels.
func subsOn(ch, subs, channels int) int {
	n := subs / channels
	if ch < subs%channels {
		n++
	}
	return n
}

// waitQuiet waits until the gateway uses less than 5% of a core over half
// a second (the join storm after subscribing is over), at most max.
func (g *gatewayProc) waitQuiet(ctx context.Context, max time.Duration) (time.Duration, bool, error) {
	start := time.Now()
	prev, err := readCPU(g.pid)
	if err != nil {
		return 0, false, g.aliveOr(err)
	}
	for time.Since(start) < max {
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return 0, false, err
		}
		cur, err := readCPU(g.pid)
		if err != nil {
			return 0, false, g.aliveOr(err)
		}
		if cur-prev < 25*time.Millisecond {
			return time.Since(start), true, nil
		}
		prev = cur
	}
	return time.Since(start), false, nil
}

// aliveOr prefers the gateway's exit over err.
func (g *gatewayProc) aliveOr(err error) error {
	if aerr := g.alive(); aerr != nil {
		return aerr
	}
	return err
}

func histStats(h *hdrhistogram.Histogram) latencyStats {
	if h.TotalCount() == 0 {
		return latencyStats{}
	}
	us := func(v int64) float64 { return float64(v) / 1000 }
	return latencyStats{
		Count: h.TotalCount(),
		P50:   us(h.ValueAtQuantile(50)),
		P90:   us(h.ValueAtQuantile(90)),
		P99:   us(h.ValueAtQuantile(99)),
		P999:  us(h.ValueAtQuantile(99.9)),
		Max:   us(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}

// sliceStats summarises nanosecond values, exactly.
func sliceStats(ns []int64) latencyStats {
	if len(ns) == 0 {
		return latencyStats{}
	}
	slices.Sort(ns)
	at := func(q float64) float64 {
		i := min(len(ns)-1, int(q*float64(len(ns))))
		return float64(ns[i]) / 1e6
	}
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	return latencyStats{
		Count: int64(len(ns)),
		P50:   at(0.50), P90: at(0.90), P99: at(0.99), P999: at(0.999),
		Max:  float64(ns[len(ns)-1]) / 1e6,
		Mean: sum / float64(len(ns)) / 1e6,
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
