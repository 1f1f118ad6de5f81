//go:build linux

// studyload.go drives the study's crash run from this process: publisher
// and subscriber connections made with the Go client package (the run
// needs each client's acks, reconnects and catch-up), open-loop
// publishing from a fixed schedule, and per-message accounting at every
// subscriber. The latency runs and throughput steps use loadgen
// processes instead (studyrig.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	sgclient "github.com/syncgate/syncgate/client"

	"github.com/syncgate/syncgate/bench/internal/load"
	"github.com/syncgate/syncgate/bench/internal/proc"
	"github.com/syncgate/syncgate/bench/internal/study"
)

// loadSpec is one run: Channels channels, SubsPerChannel subscribers per
// channel spread round-robin over the nodes, Rate messages per second in
// total published on node A for Duration.
type loadSpec struct {
	Channels       int
	SubsPerChannel int
	Rate           float64
	Duration       time.Duration
	Drain          time.Duration
	PublishTimeout time.Duration
	// DropAt > 0: at DropAt after the start, the second half of each
	// channel's subscribers close their connections; at ResubAt they dial
	// again and subscribe with since = the last position they saw.
	DropAt, ResubAt time.Duration
	// Prefix makes the run's channel names unique when several runs share
	// the same gateways ("" = "study-").
	Prefix string
	// CPU, when set, returns the CPU time used so far by the gateway
	// processes and by the broker processes; runLoad samples it when
	// publishing starts and once every acked message arrived (or the
	// drain ended).
	CPU func() (gateway, broker time.Duration)
	// Pause before publishing, after the subscriptions (default 1 s).
	Settle time.Duration
}

func (s loadSpec) channel(c int) string {
	if s.Prefix == "" {
		return studyChan(c)
	}
	return s.Prefix + strconv.Itoa(c)
}

// The published payload is {"i":id,"t":unix ns of the scheduled send},
// pre-encoded by load.AppendMsg and scanned back by load.ScanMsg.

// subTrack is one subscriber's accounting; only its reader goroutine
// touches it until the run ends.
type subTrack struct {
	ch, idx, node int
	seen          []uint8 // copies per id
	maxID         int
	ooo           int
	recovered     int
	missed        int
	resets        int
	gaps          int
	badPayload    int

	client *sgclient.Client
	sub    *sgclient.Subscription
	reader chan struct{} // closed when the reader of sub has returned
	// dropped: closed its connection and subscribed again (DropAt).
	dropped bool
}

func (t *subTrack) record(id int) (first bool) {
	if id < 0 || id > 50_000_000 {
		t.badPayload++
		return false
	}
	for id >= len(t.seen) {
		t.seen = append(t.seen, make([]uint8, max(1024, len(t.seen)))...)
	}
	if t.seen[id] < 255 {
		t.seen[id]++
	}
	if t.seen[id] > 1 {
		return false
	}
	if id < t.maxID {
		t.ooo++
	}
	t.maxID = max(t.maxID, id)
	return true
}

func (t *subTrack) copies(id int) int {
	if id < len(t.seen) {
		return int(t.seen[id])
	}
	return 0
}

// lockedHist is a histogram of microseconds shared by reader goroutines.
type lockedHist struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newLockedHist() *lockedHist {
	return &lockedHist{h: hdrhistogram.New(1, 120_000_000, 3)}
}

func (l *lockedHist) record(us int64) {
	l.mu.Lock()
	_ = l.h.RecordValue(max(1, min(us, 120_000_000)))
	l.mu.Unlock()
}

func studyChan(c int) string { return "study-" + strconv.Itoa(c) }

// refusal names why a publish failed.
func refusal(err error) string {
	var se *sgclient.ServerError
	switch {
	case errors.As(err, &se):
		return se.Code
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, sgclient.ErrConnectionLost):
		return "connection_lost"
	}
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// runLoad runs spec against the nodes (urls[0] is node A, where every
// publisher connects). during, when set, runs alongside the publishing
// with the schedule's start time and may append to the event timeline.
//
// It runs in phases: connect the subscribers and the publishers
// (setupLoad), publish on the schedule (publish), wait for the deliveries
// and measure the window (drain), then count every subscriber's copies
// (tally).
func runLoad(ctx context.Context, urls []string, spec loadSpec, p *progress, label string,
	during func(ctx context.Context, start time.Time, event func(string, ...any))) (res study.Run, err error) {
	res = study.Run{Rate: spec.Rate, Channels: spec.Channels, Subs: spec.Channels * spec.SubsPerChannel, DurationS: spec.Duration.Seconds(), Reasons: map[string]int{},
		GatewayCPUS: -1, BrokerCPUS: -1, HarnessCPUS: -1}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := newLoadRig(ctx, urls, spec, p, label)
	defer r.close()
	defer func() { res.Events = r.eventList() }()
	if err := r.setup(ctx); err != nil {
		return res, err
	}
	pr, err := r.publish(ctx, during)
	if pr != nil {
		res.LoadStart = pr.loadStart
	}
	if err != nil {
		return res, err
	}
	res.LoadEnd = pr.loadEnd
	w, err := r.drain(ctx, pr)
	if err != nil {
		return res, err
	}
	res.Incomplete, res.WindowS, res.Deliveries, res.DeliveriesPerS = w.incomplete, w.window.Seconds(), w.deliveries, float64(w.deliveries)/w.window.Seconds()
	if w.cpu {
		res.GatewayCPUS, res.BrokerCPUS = w.gatewayCPU.Seconds(), w.brokerCPU.Seconds()
	}
	if w.harness {
		res.HarnessCPUS = w.harnessCPU.Seconds()
	}
	r.stopReading(ctx)
	r.tally(&res, pr)
	return res, nil
}

// loadRig is one run's connections and accounting: the clients (closed by
// close), the subscribers' tracks with their readers, and the publishers,
// one per channel on node A.
type loadRig struct {
	urls  []string
	spec  loadSpec
	p     *progress
	label string

	reconnects atomic.Int64
	delivered  atomic.Int64 // first copies of a message id, over all subscribers

	clientsMu sync.Mutex
	clients   []*sgclient.Client

	hists       []*lockedHist // by node of the subscriber (A, B)
	tracks      []*subTrack
	readers     sync.WaitGroup
	readCtx     context.Context
	stopReaders context.CancelFunc
	pubs        []*sgclient.Client

	eventsMu sync.Mutex
	events   []string
}

func newLoadRig(ctx context.Context, urls []string, spec loadSpec, p *progress, label string) *loadRig {
	r := &loadRig{urls: urls, spec: spec, p: p, label: label, hists: []*lockedHist{newLockedHist(), newLockedHist()}}
	r.readCtx, r.stopReaders = context.WithCancel(ctx)
	for c := range spec.Channels {
		for j := range spec.SubsPerChannel {
			r.tracks = append(r.tracks, &subTrack{ch: c, idx: j, node: j % len(urls)})
		}
	}
	return r
}

// close stops the readers and closes every client the run dialled.
func (r *loadRig) close() {
	r.stopReaders()
	r.clientsMu.Lock()
	defer r.clientsMu.Unlock()
	var wg sync.WaitGroup
	for _, c := range r.clients {
		wg.Go(func() { _ = c.Close() })
	}
	wg.Wait()
}

func (r *loadRig) eventList() []string {
	r.eventsMu.Lock()
	defer r.eventsMu.Unlock()
	return r.events
}

func (r *loadRig) dial(ctx context.Context, url string) (*sgclient.Client, error) {
	c, err := sgclient.Dial(ctx, url, sgclient.Options{
		User:       "study",
		MinBackoff: 100 * time.Millisecond,
		MaxBackoff: time.Second,
		OnState: func(s sgclient.State, _ error) {
			if s == sgclient.StateReconnecting {
				r.reconnects.Add(1)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	r.clientsMu.Lock()
	r.clients = append(r.clients, c)
	r.clientsMu.Unlock()
	return c, nil
}

// startReader reads t.sub until it ends; the returned channel is closed
// then.
func (r *loadRig) startReader(t *subTrack) chan struct{} {
	done := make(chan struct{})
	h, sub := r.hists[t.node], t.sub
	r.readers.Go(func() {
		defer close(done)
		for {
			ev, err := sub.Next(r.readCtx)
			if err != nil {
				return
			}
			now := time.Now().UnixNano()
			switch ev.Type {
			case sgclient.Message:
				id, sent, ok := load.ScanMsg(ev.Data)
				if !ok {
					t.badPayload++
					continue
				}
				if t.record(id) {
					r.delivered.Add(1)
					h.record((now - sent) / 1000)
				}
			case sgclient.Recovered:
				t.recovered++
				t.missed += ev.Missed
			case sgclient.Reset:
				t.resets++
			case sgclient.Gap:
				t.gaps++
			}
		}
	})
	return done
}

// setup subscribes every track (64 dials at a time) with its reader, dials
// the publishers, and waits spec.Settle.
func (r *loadRig) setup(ctx context.Context) error {
	spec := r.spec
	sem := make(chan struct{}, 64)
	var dialWG sync.WaitGroup
	var dialErrs atomic.Int64
	var firstErr atomic.Value
	t0 := time.Now()
	for _, t := range r.tracks {
		dialWG.Add(1)
		sem <- struct{}{}
		go func() {
			defer dialWG.Done()
			defer func() { <-sem }()
			dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
			defer dcancel()
			c, err := r.dial(ctx, r.urls[t.node])
			var sub *sgclient.Subscription
			if err == nil {
				sub, err = c.Subscribe(dctx, spec.channel(t.ch))
			}
			if err != nil {
				dialErrs.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			t.client, t.sub = c, sub
			t.reader = r.startReader(t)
		}()
	}
	dialWG.Wait()
	if n := dialErrs.Load(); n > 0 {
		return fmt.Errorf("%s: %d of %d subscribers failed: %v", r.label, n, len(r.tracks), firstErr.Load())
	}
	r.p.printf("%s: %d subscribers on %d node(s) in %.1fs", r.label, len(r.tracks), len(r.urls), time.Since(t0).Seconds())

	// Publishers: one connection per channel on node A, publishing its
	// channel's messages in order.
	r.pubs = make([]*sgclient.Client, spec.Channels)
	for c := range r.pubs {
		var err error
		if r.pubs[c], err = r.dial(ctx, r.urls[0]); err != nil {
			return fmt.Errorf("%s: publisher: %w", r.label, err)
		}
	}
	settle := spec.Settle
	if settle <= 0 {
		settle = time.Second
	}
	return sleepCtx(ctx, settle)
}

// loadPublished is the account of the publishing phase: the schedule,
// which messages were acked or refused and why, and the CPU times and
// load average when it started.
type loadPublished struct {
	start     time.Time
	perChan   int
	acked     [][]bool
	refused   [][]bool
	reasons   []map[string]int
	lags      []time.Duration
	nAcked    int64
	nRefused  int64
	nUnsent   int64
	resubbed  int64
	resubFail int64

	loadStart, loadEnd float64
	gw0, br0           time.Duration // spec.CPU at the start
	h0                 time.Duration // this process's CPU at the start
	herr               error
}

// publish has each channel's publisher publish its messages on the
// schedule, runs during and the drop/resubscribe alongside, and returns
// once all of them ended (on ctx's end, the account so far and its error).
func (r *loadRig) publish(ctx context.Context, during func(ctx context.Context, start time.Time, event func(string, ...any))) (*loadPublished, error) {
	spec := r.spec
	interval := time.Duration(float64(time.Second) * float64(spec.Channels) / spec.Rate)
	pr := &loadPublished{perChan: int(spec.Duration / interval)}
	perChan := pr.perChan
	pr.acked, pr.refused = make([][]bool, spec.Channels), make([][]bool, spec.Channels)
	pr.reasons, pr.lags = make([]map[string]int, spec.Channels), make([]time.Duration, spec.Channels)
	var nAcked, nRefused, nUnsent atomic.Int64
	start := time.Now().Add(200 * time.Millisecond)
	pr.start = start
	pr.loadStart = loadAvg()
	pr.h0, pr.herr = proc.ReadCPU(os.Getpid())
	if spec.CPU != nil {
		pr.gw0, pr.br0 = spec.CPU()
	}
	event := func(format string, a ...any) {
		r.eventsMu.Lock()
		defer r.eventsMu.Unlock()
		s := fmt.Sprintf("t=%5.1fs ", time.Since(start).Seconds()) + fmt.Sprintf(format, a...)
		r.events = append(r.events, s)
		r.p.printf("%s: %s", r.label, s)
	}
	var pubWG sync.WaitGroup
	for c := range spec.Channels {
		pr.acked[c], pr.refused[c], pr.reasons[c] = make([]bool, perChan), make([]bool, perChan), map[string]int{}
		// Channels start spread over one interval.
		offset := interval * time.Duration(c) / time.Duration(spec.Channels)
		pubWG.Go(func() {
			pubEnd := start.Add(spec.Duration + 5*time.Second)
			name, buf := spec.channel(c), make([]byte, 0, 48)
			for i := range perChan {
				if time.Now().After(pubEnd) {
					nUnsent.Add(int64(perChan - i))
					return
				}
				sched := start.Add(offset + time.Duration(i)*interval)
				if d := time.Until(sched); d > 0 {
					if sleepCtx(ctx, d) != nil {
						return
					}
				} else {
					pr.lags[c] = max(pr.lags[c], -d)
				}
				pctx, pcancel := context.WithTimeout(ctx, spec.PublishTimeout)
				_, err := r.pubs[c].Publish(pctx, name, json.RawMessage(load.AppendMsg(buf[:0], i, sched.UnixNano())))
				pcancel()
				if err == nil {
					pr.acked[c][i] = true
					nAcked.Add(1)
				} else {
					if ctx.Err() != nil {
						return
					}
					pr.refused[c][i] = true
					pr.reasons[c][refusal(err)]++
					nRefused.Add(1)
				}
			}
		})
	}
	duringDone := make(chan struct{})
	var resubbed, resubFailed atomic.Int64
	go func() {
		defer close(duringDone)
		var wg sync.WaitGroup
		if during != nil {
			wg.Go(func() { during(ctx, start, event) })
		}
		if spec.DropAt > 0 {
			dial := func(url string) (*sgclient.Client, error) { return r.dial(ctx, url) }
			wg.Go(func() {
				dropReconnect(ctx, spec, start, r.tracks, r.urls, dial, r.startReader, event, &resubbed, &resubFailed)
			})
		}
		wg.Wait()
	}()
	pubDone := make(chan struct{})
	go func() { pubWG.Wait(); close(pubDone) }()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	total := perChan * spec.Channels
wait:
	for {
		select {
		case <-pubDone:
			break wait
		case <-ctx.Done():
			return pr, ctx.Err()
		case <-tick.C:
			r.p.printf("%s: published %d/%d (acked %d, refused %d), delivered %d",
				r.label, nAcked.Load()+nRefused.Load(), total, nAcked.Load(), nRefused.Load(), r.delivered.Load())
		}
	}
	<-duringDone
	pr.loadEnd = loadAvg()
	pr.nAcked, pr.nRefused, pr.nUnsent = nAcked.Load(), nRefused.Load(), nUnsent.Load()
	pr.resubbed, pr.resubFail = resubbed.Load(), resubFailed.Load()
	return pr, nil
}

// loadWindow is the measured window: from the start of publishing until
// every acked message reached every subscriber or the drain ended.
type loadWindow struct {
	incomplete            bool
	window                time.Duration
	deliveries            int64
	cpu                   bool // gatewayCPU and brokerCPU measured
	gatewayCPU, brokerCPU time.Duration
	harness               bool // harnessCPU measured
	harnessCPU            time.Duration
}

// drain waits, at most spec.Drain, for every acked message at every
// subscriber and returns the window with the CPU used in it.
func (r *loadRig) drain(ctx context.Context, pr *loadPublished) (loadWindow, error) {
	want := pr.nAcked * int64(r.spec.SubsPerChannel)
	drainEnd := time.Now().Add(r.spec.Drain)
	for r.delivered.Load() < want && time.Now().Before(drainEnd) {
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return loadWindow{}, err
		}
	}
	w := loadWindow{incomplete: r.delivered.Load() < want, window: time.Since(pr.start), deliveries: r.delivered.Load()}
	if r.spec.CPU != nil {
		gw1, br1 := r.spec.CPU()
		w.cpu, w.gatewayCPU, w.brokerCPU = true, gw1-pr.gw0, br1-pr.br0
	}
	if h1, err := proc.ReadCPU(os.Getpid()); err == nil && pr.herr == nil {
		w.harness, w.harnessCPU = true, h1-pr.h0
	}
	return w, nil
}

// stopReading lets late duplicates arrive, then stops the readers; after
// it the tracks are the run's alone.
func (r *loadRig) stopReading(ctx context.Context) {
	_ = sleepCtx(ctx, 500*time.Millisecond)
	r.stopReaders()
	r.readers.Wait()
}

// tally fills res's publish and delivery counts and latencies from the
// publishing account and every subscriber's track.
func (r *loadRig) tally(res *study.Run, pr *loadPublished) {
	spec := r.spec
	res.Scheduled = pr.perChan * spec.Channels
	res.Acked, res.Refused, res.Unsent = int(pr.nAcked), int(pr.nRefused), int(pr.nUnsent)
	for c := range spec.Channels {
		for k, v := range pr.reasons[c] {
			res.Reasons[k] += v
		}
		res.PublishLagMaxMs = math.Max(res.PublishLagMaxMs, float64(pr.lags[c])/1e6)
	}
	subsOf := make([][]*subTrack, spec.Channels)
	for _, t := range r.tracks {
		subsOf[t.ch] = append(subsOf[t.ch], t)
		res.OutOfOrder += t.ooo
		res.Recovered += t.recovered
		res.RecoveredMissed += t.missed
		res.Resets += t.resets
		res.RecoveredByNode[t.node] += t.recovered
		res.ResetsByNode[t.node] += t.resets
		res.Gaps += t.gaps
	}
	for c := range spec.Channels {
		for i := range pr.perChan {
			missing := false
			for _, t := range subsOf[c] {
				n := t.copies(i)
				switch {
				case pr.acked[c][i]:
					res.Expected++
					switch {
					case n > 0:
						res.Delivered++
					case t.dropped:
						res.LostDropped++
						missing = true
					default:
						res.LostStayed++
						missing = true
					}
				case n > 0:
					res.RefusedDelivered++
				}
				if n > 1 {
					res.Dup += n - 1
				}
			}
			if pr.acked[c][i] && missing {
				res.LostMsgs++
			}
		}
	}
	res.Lost = res.Expected - res.Delivered
	res.Reconnects = r.reconnects.Load()
	res.Resubscribed, res.ResubscribeFailed = int(pr.resubbed), int(pr.resubFail)
	all := hdrhistogram.New(1, 120_000_000, 3)
	all.Merge(r.hists[0].h)
	all.Merge(r.hists[1].h)
	res.SameNode, res.All = study.StatsOf(r.hists[0].h), study.StatsOf(all)
	if len(r.urls) > 1 {
		res.CrossNode = study.StatsOf(r.hists[1].h)
	}
}

// dropReconnect closes the connections of the second half of each
// channel's subscribers at spec.DropAt and, at spec.ResubAt, subscribes
// them again on a new connection with since = the last position they saw.
func dropReconnect(ctx context.Context, spec loadSpec, start time.Time, tracks []*subTrack, urls []string,
	dial func(string) (*sgclient.Client, error), startReader func(*subTrack) chan struct{},
	event func(string, ...any), resubbed, failed *atomic.Int64) {
	if sleepCtx(ctx, time.Until(start.Add(spec.DropAt))) != nil {
		return
	}
	var drop []*subTrack
	for _, t := range tracks {
		if t.idx >= spec.SubsPerChannel/2 && t.sub != nil {
			drop = append(drop, t)
		}
	}
	pos := make([]sgclient.Position, len(drop))
	var wg sync.WaitGroup
	for i, t := range drop {
		wg.Go(func() {
			t.dropped = true
			_ = t.client.Close()
			<-t.reader
			pos[i] = t.sub.Position()
		})
	}
	wg.Wait()
	event("%d subscribers closed their connections", len(drop))
	if sleepCtx(ctx, time.Until(start.Add(spec.ResubAt))) != nil {
		return
	}
	sem := make(chan struct{}, 32)
	for i, t := range drop {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			// Retry for up to 10 s: the node may still be coming back.
			deadline := time.Now().Add(10 * time.Second)
			for {
				c, err := dial(urls[t.node])
				if err == nil {
					sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					var sub *sgclient.Subscription
					sub, err = c.Subscribe(sctx, spec.channel(t.ch), sgclient.SubscribeOptions{Since: &pos[i]})
					cancel()
					if err == nil {
						t.client, t.sub = c, sub
						t.reader = startReader(t)
						resubbed.Add(1)
						return
					}
					_ = c.Close()
				}
				if time.Now().After(deadline) || sleepCtx(ctx, 200*time.Millisecond) != nil {
					failed.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
	event("%d subscribers subscribed again with since (%d failed)", resubbed.Load(), failed.Load())
}

// loadAvg is the 1-minute load average, 0 if unknown.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
