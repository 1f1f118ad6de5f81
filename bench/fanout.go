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

	"github.com/syncgate/syncgate/bench/internal/proc"
)

// fanoutResult is one run of the fanout scenario.
type fanoutResult struct {
	Subs         int         `json:"subs"`
	Channels     int         `json:"channels"`
	Rate         float64     `json:"rate"` // per channel
	DurationS    float64     `json:"duration_s"`
	Payload      int         `json:"payload"`
	Broker       string      `json:"broker"`
	Nodes        []nodeStats `json:"nodes,omitempty"` // with more than one gateway node
	LoadgenProcs int         `json:"loadgen_procs"`   // subscriber processes; the publisher has its own
	SourceAddrs  int         `json:"source_addrs"`
	Dial         dialSummary `json:"dial"` // all nodes; seconds summed (nodes are dialed in turn)
	PubDial      dialSummary `json:"pub_dial"`
	QuietWaitS   float64     `json:"quiet_wait_s"` // waited for the gateway to go idle after subscribing
	Quiet        bool        `json:"quiet"`

	Published   int      `json:"published"`            // messages, all channels
	Scheduled   int      `json:"scheduled"`            // messages, all channels
	PubAcks     int64    `json:"pub_acks"`             // acks the publishers got
	PubErrors   []string `json:"pub_errors,omitempty"` // errors the publishers got
	MaxPubLagMs float64  `json:"max_pub_lag_ms"`       // worst send delay behind schedule
	PubLagP99Ms float64  `json:"pub_lag_p99_ms"`       // 99th percentile of the send delays

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
	BrokerCPUS       float64 `json:"broker_cpu_s"`  // the shared broker process (redis-server), same window

	Latency latencyStats `json:"latency_ms"` // publish timestamp to receive
	// NodeLatency: the same per node of the subscribers (A, B, ...), with
	// more than one node.
	NodeLatency []latencyStats `json:"node_latency_ms,omitempty"`
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

// runFanout runs the scenario in phases: start the nodes and the loadgen
// processes and connect them (setupFanout), warm up with o.Warmup (warmUp),
// let the gateways settle (settle), publish (publish), wait for the
// deliveries (drain), then read the CPU and per-node figures (measure) and
// the latencies (collectFanout).
func runFanout(ctx context.Context, o options, mode, broker, bin, tmp string, p *progress) (res *fanoutResult, gis []gatewayInfo, err error) {
	s := &session{}
	defer func() { gis = s.close() }()
	res = &fanoutResult{
		Subs: o.Subs, Channels: o.Channels, Rate: o.Rate, DurationS: o.Duration.Seconds(),
		Payload: o.Payload, Broker: brokerLabel(broker),
	}
	rig, err := setupFanout(ctx, s, o, mode, broker, bin, tmp, p, res)
	if err != nil {
		return res, gis, err
	}
	if err := rig.warmUp(ctx, o, p); err != nil {
		return res, gis, err
	}
	loaded, before, err := rig.settle(ctx, o, p, res)
	if err != nil {
		return res, gis, err
	}
	beforeAll := sum64(before)
	lg0, br0 := s.loadgenCPU(), s.brokerCPU()
	pr, err := rig.publish(ctx, o, p, loaded[0].At, beforeAll)
	if err != nil {
		return res, gis, err
	}
	res.Scheduled = pr.Scheduled * o.Channels
	res.PubAcks, res.PubErrors, res.MaxPubLagMs, res.PubLagP99Ms = pr.Acks, pr.Errors, ms(pr.MaxLag), ms(pr.LagP99)
	res.Published, res.Expected = pr.due(o.Subs, o.Channels)
	received, err := rig.drain(ctx, res.Expected, beforeAll)
	if err != nil {
		return res, gis, err
	}
	if err := rig.measure(ctx, p, res, loaded, before, lg0, br0, received-beforeAll); err != nil {
		return res, gis, err
	}
	perNode, err := s.collectFanout(ctx, rig.groups, pr, o, res)
	if err != nil {
		return res, gis, err
	}
	if len(perNode) > 1 {
		for _, h := range perNode {
			res.NodeLatency = append(res.NodeLatency, histStats(h))
		}
	}
	p.printf("latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; to last sub p50 %.2f ms, p99 %.2f ms; gateway %.2f µs CPU per delivery",
		res.Latency.P50, res.Latency.P99, res.Latency.Max, res.ToLast.P50, res.ToLast.P99, res.CPUMicrosPerDlv)
	return res, gis, problems(res, s)
}

// fanoutRig is what setupFanout leaves connected: the session, the
// subscribers' loadgen processes per node (groups; all of them in subs),
// the publishers' process, and the nodes' snapshots before any client.
type fanoutRig struct {
	s      *session
	nodes  int
	split  []int
	groups [][]*loadgenProc
	subs   []*loadgenProc
	pub    *loadgenProc
	base   []snapshot
}

// setupFanout starts the nodes and the loadgen processes and connects the
// subscribers and the publishers; it fills res's setup figures.
func setupFanout(ctx context.Context, s *session, o options, mode, broker, bin, tmp string, p *progress, res *fanoutResult) (*fanoutRig, error) {
	var base []snapshot
	var err error
	if o.Backend != nil {
		if err = o.Backend(ctx, s, tmp, p); err == nil {
			base, err = s.settleIdle(ctx)
		}
	} else {
		base, err = s.startIdle(ctx, bin, tmp, o.nodes(broker), broker, gatewayEnv(o, mode), p)
	}
	if err != nil {
		return nil, err
	}
	res.RSSBaselineKiB = base[0].Status.RSSKiB
	r, err := connectFanout(ctx, s, o, p, res)
	if r != nil {
		r.base = base
	}
	return r, err
}

// connectFanout starts the loadgen processes and connects the subscribers
// and the publishers to the session's running nodes (s.gws): the
// subscribers split evenly over the nodes, each node's share held by its
// own loadgen processes, the publishers (one per channel) on node A. It
// fills res's connection figures.
func connectFanout(ctx context.Context, s *session, o options, p *progress, res *fanoutResult) (*fanoutRig, error) {
	r := &fanoutRig{s: s, nodes: len(s.gws)}
	r.split = splitEven(o.Subs, r.nodes)
	r.groups = make([][]*loadgenProc, r.nodes)
	for k, n := range r.split {
		procs := max(1, (n+o.PerProc-1)/o.PerProc)
		if r.nodes == 1 {
			procs = o.loadgenProcs()
		}
		first := len(s.lgs)
		if err := s.startLoadgens(procs); err != nil {
			return nil, err
		}
		r.groups[k] = s.lgs[first:]
		res.LoadgenProcs += procs
	}
	if err := s.startLoadgens(1); err != nil {
		return nil, err
	}
	r.subs, r.pub = s.lgs[len(s.lgs)-1-res.LoadgenProcs:len(s.lgs)-1], s.lgs[len(s.lgs)-1]
	first := 0
	for k, n := range r.split {
		srcs := sourcesFor(k, n+o.Channels)
		res.SourceAddrs += len(srcs)
		dial := lgCommand{
			Cmd: cmdDial, URL: "ws://" + s.gws[k].addr + "/ws", Sources: srcs, Role: roleSub, First: first,
			Channels: o.Channels, Concurrency: o.Concurrency, Timeout: 20 * time.Second, PingInterval: o.PingInterval,
		}
		label := "subscribers"
		if r.nodes > 1 {
			label = "subscribers on node " + nodeName(k)
		}
		p.printf("connecting %d subscribers over %d channels to %s from %d loadgen processes", n, o.Channels, s.gws[k].addr, len(r.groups[k]))
		d, err := s.dialAll(ctx, p, r.groups[k], dial, n, label)
		res.Dial.add(d)
		if err != nil {
			return nil, err
		}
		first += n
	}
	// Publishers get the indexes after the subscribers: connection i is on
	// channel i % C, so the C publishers cover every channel once.
	pubDial := lgCommand{
		Cmd: cmdDial, URL: "ws://" + s.gw.addr + "/ws", Sources: sourcesFor(0, r.split[0]+o.Channels), Role: rolePub, First: o.Subs,
		Channels: o.Channels, Concurrency: o.Concurrency, Timeout: 20 * time.Second, PingInterval: o.PingInterval,
	}
	var err error
	if res.PubDial, err = s.dialAll(ctx, p, []*loadgenProc{r.pub}, pubDial, o.Channels, "publishers"); err != nil {
		return nil, err
	}
	return r, nil
}

// warmUp publishes at the run's rate for o.Warmup (if any), waits for its
// deliveries, and has every loadgen process forget its counts and
// latencies (resetAll): what follows is measured on processes that have
// carried the load already (a broker's files and buffers, the gateways'
// heaps and queues), as the study's runs after its first are.
func (r *fanoutRig) warmUp(ctx context.Context, o options, p *progress) error {
	if o.Warmup <= 0 {
		return nil
	}
	w := o
	w.Duration = o.Warmup
	p.printf("warming up: %g msg/s on each of %d channels for %s, not measured", o.Rate, o.Channels, o.Warmup)
	pr, err := r.publish(ctx, w, p, time.Now(), 0)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	_, expected := pr.due(o.Subs, o.Channels)
	if _, err := r.drain(ctx, expected, 0); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	return r.s.resetAll(ctx)
}

// resetAll has every loadgen process of the session start a new measured
// run (cmdReset): counts, seen ids and latencies forgotten.
func (s *session) resetAll(ctx context.Context) error {
	for _, l := range s.lgs {
		if _, err := l.call(ctx, lgCommand{Cmd: cmdReset}, evReset, 10*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// settle waits o.Settle and then for the gateways to go idle; it returns
// the nodes' snapshots then and each node's deliveries counted so far.
func (r *fanoutRig) settle(ctx context.Context, o options, p *progress, res *fanoutResult) ([]snapshot, []int64, error) {
	s := r.s
	p.printf("settling for %s, then waiting for the gateways to go idle", o.Settle)
	if err := sleepCtx(ctx, o.Settle); err != nil {
		return nil, nil, err
	}
	res.Quiet = true
	for _, g := range s.gws {
		wait, quiet, err := g.waitQuiet(ctx, 30*time.Second)
		if err != nil {
			return nil, nil, err
		}
		res.QuietWaitS += wait.Seconds()
		if !quiet {
			res.Quiet = false
			p.printf("gateway %s still busy after %s; publishing anyway", g.addr, wait.Round(time.Second))
		}
	}
	loaded, err := s.snapshotAll()
	if err != nil {
		return nil, nil, err
	}
	for _, sn := range loaded {
		res.HealthConns += sn.Conns
	}
	res.RSSLoadedKiB, res.GoroutinesLoaded = loaded[0].Status.RSSKiB, loaded[0].Goroutines
	p.printf("ready: gateways report %d connections, node A RSS %s, %d goroutines", res.HealthConns, mib(loaded[0].Status.RSSKiB), loaded[0].Goroutines)
	before := make([]int64, r.nodes)
	for k := range r.groups {
		if before[k], err = s.count(ctx, r.groups[k]); err != nil {
			return nil, nil, err
		}
	}
	return loaded, before, nil
}

// publish has the publishers' process publish for o.Duration, printing the
// deliveries once a second, and returns its account.
func (r *fanoutRig) publish(ctx context.Context, o options, p *progress, from time.Time, beforeAll int64) (*publishResult, error) {
	s := r.s
	p.printf("publishing %g msg/s on each of %d channels for %s", o.Rate, o.Channels, o.Duration)
	pubCmd := lgCommand{Cmd: cmdPublish, Rate: o.Rate, Duration: o.Duration, Payload: o.Payload, Overrun: o.Overrun}
	if err := r.pub.send(pubCmd); err != nil {
		return nil, err
	}
	type answer struct {
		ev  lgEvent
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		ev, err := r.pub.await(ctx, evPublished, o.Duration+60*time.Second)
		answered <- answer{ev, err}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case a := <-answered:
			if a.err != nil {
				return nil, a.err
			}
			return a.ev.Published, nil
		case <-tick.C:
			n, err := s.count(ctx, r.subs)
			if err != nil {
				return nil, err
			}
			if err := s.aliveAll(); err != nil {
				return nil, err
			}
			el := time.Since(from)
			sent := min(o.Duration.Seconds(), el.Seconds()) * o.Rate * float64(o.Channels)
			p.printf("publishing: %s/%s, ~%.0f sent, %d deliveries so far (%.0f%% of those due)",
				el.Round(time.Second), o.Duration, sent, n-beforeAll, 100*float64(n-beforeAll)/max(1, sent*float64(o.Subs)/float64(o.Channels)))
		}
	}
}

// drain waits until every expected delivery arrived, or nothing more
// arrives for 3 s (30 s at most), and returns the subscribers' count.
func (r *fanoutRig) drain(ctx context.Context, expected, beforeAll int64) (int64, error) {
	received, lastChange, drainStart := int64(0), time.Now(), time.Now()
	for {
		n, err := r.s.count(ctx, r.subs)
		if err != nil {
			return 0, err
		}
		if n != received {
			received, lastChange = n, time.Now()
		}
		if received-beforeAll >= expected || time.Since(lastChange) > 3*time.Second || time.Since(drainStart) > 30*time.Second {
			return received, nil
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// measure fills res's CPU and memory figures over the window from loaded
// to now, and the per-node figures with more than one node.
func (r *fanoutRig) measure(ctx context.Context, p *progress, res *fanoutResult, loaded []snapshot, before []int64, lg0, br0 time.Duration, arrived int64) error {
	s := r.s
	end, err := s.snapshotAll()
	if err != nil {
		return err
	}
	lg1 := s.loadgenCPU()
	res.CPUWindowS = end[0].At.Sub(loaded[0].At).Seconds()
	for k := range s.gws {
		res.GatewayCPUS += (end[k].CPU - loaded[k].CPU).Seconds()
	}
	res.LoadgenCPUS = (lg1 - lg0).Seconds()
	res.BrokerCPUS = (s.brokerCPU() - br0).Seconds()
	res.RSSAfterKiB, res.HWMKiB = end[0].Status.RSSKiB, end[0].Status.HWMKiB
	p.printf("published %d messages; %d/%d deliveries arrived", res.Published, arrived, res.Expected)
	if r.nodes == 1 {
		return nil
	}
	for k, g := range s.gws {
		n, err := s.count(ctx, r.groups[k])
		if err != nil {
			return err
		}
		nd := nodeStats{
			Node: nodeName(k), Addr: g.addr, Subs: r.split[k], Deliveries: n - before[k],
			CPUS:           (end[k].CPU - loaded[k].CPU).Seconds(),
			RSSBaselineKiB: r.base[k].Status.RSSKiB, RSSLoadedKiB: loaded[k].Status.RSSKiB, RSSAfterKiB: end[k].Status.RSSKiB,
			Goroutines: loaded[k].Goroutines, HealthConns: loaded[k].Conns,
		}
		if nd.Deliveries > 0 {
			nd.CPUMicrosPerDlv = nd.CPUS * 1e6 / float64(nd.Deliveries)
		}
		res.Nodes = append(res.Nodes, nd)
		p.printf("node %s: %d deliveries, %.2fs CPU, %.2f µs per delivery", nd.Node, nd.Deliveries, nd.CPUS, nd.CPUMicrosPerDlv)
	}
	return nil
}

// brokerCPU is the CPU time used so far by the shared broker processes;
// 0 without any.
func (s *session) brokerCPU() time.Duration {
	var sum time.Duration
	for _, b := range s.brokers {
		if b.pid != 0 {
			c, _ := proc.ReadCPU(b.pid)
			sum += c
		}
	}
	return sum
}

// nodeStats is one gateway node of a multi-node fan-out.
type nodeStats struct {
	Node            string  `json:"node"`
	Addr            string  `json:"addr"`
	Subs            int     `json:"subs"`
	Deliveries      int64   `json:"deliveries"` // to this node's subscribers
	CPUS            float64 `json:"cpu_s"`      // over the publishing window
	CPUMicrosPerDlv float64 `json:"cpu_us_per_delivery"`
	RSSBaselineKiB  int64   `json:"rss_baseline_kib"`
	RSSLoadedKiB    int64   `json:"rss_loaded_kib"`
	RSSAfterKiB     int64   `json:"rss_after_kib"`
	Goroutines      int     `json:"goroutines_loaded"`
	HealthConns     int     `json:"health_conns"`
}

// splitEven splits total into n parts differing by at most one, larger
// parts first.
func splitEven(total, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = total / n
		if i < total%n {
			out[i]++
		}
	}
	return out
}

func sum64(v []int64) int64 {
	var t int64
	for _, x := range v {
		t += x
	}
	return t
}

// add sums another dial phase into d (the slowest phase's time).
func (d *dialSummary) add(o dialSummary) {
	d.OK += o.OK
	d.Failed += o.Failed
	d.Refused += o.Refused
	d.Errors = append(d.Errors, o.Errors...)
	d.Seconds += o.Seconds
	if d.Seconds > 0 {
		d.Rate = float64(d.OK) / d.Seconds
	}
}

// collectFanout gathers and merges what every subscriber process saw;
// groups are the subscriber processes of each node. It returns each
// node's latency histogram (microseconds).
func (s *session) collectFanout(ctx context.Context, groups [][]*loadgenProc, pr *publishResult, o options, res *fanoutResult) ([]*hdrhistogram.Histogram, error) {
	hist := hdrhistogram.New(histMin, histMax, histSig)
	lastRecv := make([][]int64, o.Channels)
	receivers := make([][]int32, o.Channels)
	perNode := make([]*hdrhistogram.Histogram, len(groups))
	for k, subs := range groups {
		perNode[k] = hdrhistogram.New(histMin, histMax, histSig)
		for _, l := range subs {
			h, err := collectOne(ctx, l, pr, o, res, lastRecv, receivers)
			if err != nil {
				return nil, err
			}
			hist.Merge(h)
			perNode[k].Merge(h)
		}
	}
	res.Latency = histStats(hist)
	res.ToLast, res.ToLastMissing, res.WindowS = toLast(pr, o, lastRecv, receivers)
	if res.WindowS > 0 {
		res.DeliveriesPerSec = float64(res.Received) / res.WindowS
	}
	if res.Received > 0 {
		res.CPUMicrosPerDlv = res.GatewayCPUS * 1e6 / float64(res.Received)
	}
	return perNode, nil
}

// collectOne adds one subscriber process's counts to res and its receive
// times to lastRecv and receivers, and returns its latency histogram.
func collectOne(ctx context.Context, l *loadgenProc, pr *publishResult, o options, res *fanoutResult,
	lastRecv [][]int64, receivers [][]int32) (*hdrhistogram.Histogram, error) {
	ev, err := l.call(ctx, lgCommand{Cmd: cmdCollect, Published: pr.Published}, evCollected, 60*time.Second)
	if err != nil {
		return nil, err
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
		return nil, fmt.Errorf("loadgen %d histogram: %w", l.id, err)
	}
	for ch := range min(len(c.LastRecv), o.Channels) {
		lastRecv[ch] = mergeMax(lastRecv[ch], c.LastRecv[ch])
		receivers[ch] = mergeSum(receivers[ch], c.Receivers[ch])
	}
	return h, nil
}

// toLast is, per message, the time from its send until its last
// subscriber got it; missing counts the messages some subscriber never
// got; windowS is the time from the first send to the last receive.
func toLast(pr *publishResult, o options, lastRecv [][]int64, receivers [][]int32) (st latencyStats, missing int, windowS float64) {
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
				missing++
			}
			if i < len(lastRecv[ch]) {
				lastRecvAll = max(lastRecvAll, lastRecv[ch][i])
			}
		}
	}
	if lastRecvAll > firstSend && firstSend > 0 {
		windowS = float64(lastRecvAll-firstSend) / 1e9
	}
	return sliceStats(toLast), missing, windowS
}

// problems lists what went wrong in a fanout run, as an error.
func problems(res *fanoutResult, s *session) error {
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
	return errors.New(strings.Join(ps, "\n") + s.stderrNotes())
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
// due is what a publish run owes its subscribers: the messages published
// over every channel, and the deliveries they make to subs subscribers
// spread over channels (subsOn).
func (pr *publishResult) due(subs, channels int) (published int, deliveries int64) {
	for c, n := range pr.Published {
		published += n
		deliveries += int64(n) * int64(subsOn(c, subs, channels))
	}
	return published, deliveries
}

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
	prev, err := proc.ReadCPU(g.pid)
	if err != nil {
		return 0, false, g.aliveOr(err)
	}
	for time.Since(start) < max {
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return 0, false, err
		}
		cur, err := proc.ReadCPU(g.pid)
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
