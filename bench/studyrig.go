//go:build linux

// studyrig.go drives the study's latency and throughput runs from loadgen
// processes, the fanout scenario's: subscribers and publishers in child
// processes of their own, each with its own loopback source addresses,
// frames written raw, the id and send time found in each delivery by
// scanning its bytes. No client library sits in the latency path. The
// crash run keeps the Go client (studyload.go): it needs each client's
// acked messages and its reconnect and catch-up behaviour.
package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/syncgate/syncgate/bench/internal/proc"
	"github.com/syncgate/syncgate/bench/internal/study"
)

// studyOverrun: a publisher still behind its schedule this long after the
// schedule's end stops; what it did not send counts as unsent.
const studyOverrun = 5 * time.Second

// studyRig is one backend's connected load: the cluster's nodes (owned by
// the cluster) and the loadgen processes connected to them (owned here),
// reused by every latency run and throughput step of the backend.
type studyRig struct {
	c   *cluster
	s   *session
	rig *fanoutRig
	o   options // the fanout options the rig connected with
	p   *progress
}

// newStudyRig connects channels x subsPerChannel subscribers, split
// evenly over the cluster's nodes (each channel has as many on node A as
// on node B), and one publisher per channel on node A.
func newStudyRig(ctx context.Context, c *cluster, channels, subsPerChannel int, p *progress) (*studyRig, error) {
	fo, err := parseArgs([]string{"fanout", "-subs", strconv.Itoa(channels * subsPerChannel), "-channels", strconv.Itoa(channels)})
	if err != nil {
		return nil, fmt.Errorf("study rig: %w", err)
	}
	fo.Overrun = studyOverrun
	r := &studyRig{c: c, s: &session{gw: c.nodes[0], gws: c.nodes}, o: fo, p: p}
	var res fanoutResult
	if r.rig, err = connectFanout(ctx, r.s, fo, p, &res); err != nil {
		r.close()
		return nil, err
	}
	if res.Dial.OK != fo.Subs || res.PubDial.OK != fo.Channels {
		r.close()
		return nil, fmt.Errorf("study rig: %d of %d subscribers and %d of %d publishers connected", res.Dial.OK, fo.Subs, res.PubDial.OK, fo.Channels)
	}
	return r, nil
}

// close stops the loadgen processes (their connections close with them);
// the nodes are the cluster's to stop.
func (r *studyRig) close() {
	var wg sync.WaitGroup
	for _, l := range r.s.lgs {
		wg.Go(func() { l.stop(15 * time.Second) })
	}
	wg.Wait()
}

// run is one measured run: rate msg/s in total, spread evenly over the
// channels and over each period, for d. It starts from clean counts
// (cmdReset), waits for the nodes to go idle, publishes, waits for the
// deliveries, and reads the CPU of the gateways, the brokers and the
// loadgen processes over that window.
func (r *studyRig) run(ctx context.Context, rate float64, d time.Duration, label string) (study.Run, error) {
	o := r.o
	o.Rate, o.Duration = rate/float64(o.Channels), d
	out := study.Run{Rate: rate, Channels: o.Channels, Subs: o.Subs, DurationS: d.Seconds(), GatewayCPUS: -1, BrokerCPUS: -1, HarnessCPUS: -1}
	if err := r.ready(ctx); err != nil {
		return out, err
	}
	out.LoadStart = loadAvg()
	gw0, br0, lg0 := r.cpu()
	m0, merr := proc.ReadMachineCPU()
	r.p.printf("%s: %g msg/s over %d channels for %s from loadgen processes", label, rate, o.Channels, d)
	pr, err := r.rig.publish(ctx, o, r.p, time.Now(), 0)
	if err != nil {
		return out, err
	}
	res := fanoutResult{}
	res.Published, res.Expected = pr.due(o.Subs, o.Channels)
	if _, err := r.rig.drain(ctx, res.Expected, 0); err != nil {
		return out, err
	}
	gw1, br1, lg1 := r.cpu()
	if m1, err := proc.ReadMachineCPU(); err == nil && merr == nil {
		out.MachineBusyS, out.MachineTotalS = (m1.Busy - m0.Busy).Seconds(), (m1.Total - m0.Total).Seconds()
	}
	out.LoadEnd = loadAvg()
	hists, err := r.s.collectFanout(ctx, r.rig.groups, pr, o, &res)
	if err != nil {
		return out, err
	}
	fillRun(&out, pr, &res, hists, o.Channels)
	out.GatewayCPUS, out.BrokerCPUS, out.HarnessCPUS = (gw1 - gw0).Seconds(), (br1 - br0).Seconds(), (lg1 - lg0).Seconds()
	r.p.printf("%s: %d/%d deliveries, lost %d; A p50 %.2f p99 %.2f ms; cross p50 %.2f p99 %.2f ms; harness %.2f s CPU",
		label, res.Received, res.Expected, res.Lost, out.SameNode.P50, out.SameNode.P99, out.CrossNode.P50, out.CrossNode.P99, out.HarnessCPUS)
	if res.ConnsLost > 0 {
		return out, fmt.Errorf("%d subscriber connections closed: %v", res.ConnsLost, res.ConnReasons)
	}
	return out, nil
}

// ready clears the loadgens' counts and waits (3 s at most per node) for
// the nodes to finish what a previous run left them.
func (r *studyRig) ready(ctx context.Context) error {
	for i, g := range r.s.gws {
		if err := g.alive(); err != nil {
			return fmt.Errorf("node %s: %w", nodeName(i), err)
		}
	}
	if err := r.s.resetAll(ctx); err != nil {
		return err
	}
	for _, g := range r.s.gws {
		if _, _, err := g.waitQuiet(ctx, 3*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// cpu is the CPU time used so far by the gateways, the broker processes
// and the loadgen processes.
func (r *studyRig) cpu() (gateway, broker, harness time.Duration) {
	gateway, broker = r.c.cpu()
	return gateway, broker, r.s.loadgenCPU()
}

// fillRun copies a loadgen run's counts and latencies into the study's
// result; hists are the subscribers' latencies per node (A, then B).
func fillRun(out *study.Run, pr *publishResult, res *fanoutResult, hists []*hdrhistogram.Histogram, channels int) {
	out.Scheduled = pr.Scheduled * channels
	out.Unsent = out.Scheduled - res.Published
	out.Acked, out.Refused = int(min(pr.Acks, int64(res.Published))), pr.ErrCount
	out.PublishLagMaxMs, out.PublishLagP99Ms = ms(pr.MaxLag), ms(pr.LagP99)
	out.Expected, out.Delivered, out.Lost = int(res.Expected), int(res.Received), int(res.Lost)
	out.LostMsgs, out.Dup, out.OutOfOrder = res.ToLastMissing, int(res.Duplicates), int(res.OutOfOrder)
	out.Incomplete = res.Received < res.Expected
	all := hdrhistogram.New(histMin, histMax, histSig)
	for _, h := range hists {
		all.Merge(h)
	}
	out.All = study.StatsOf(all)
	if len(hists) > 0 {
		out.SameNode = study.StatsOf(hists[0])
	}
	if len(hists) > 1 {
		out.CrossNode = study.StatsOf(hists[1])
	}
	out.WindowS, out.Deliveries = res.WindowS, res.Received
	if res.WindowS > 0 {
		out.DeliveriesPerS = float64(res.Received) / res.WindowS
	}
}
