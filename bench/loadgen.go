//go:build linux

// loadgen.go is the load process: the bench binary re-executed as
// "bench loadgen". It reads one JSON command per line on stdin, answers each
// with one JSON event on stdout (plus progress events while dialing), and
// holds the WebSocket client connections (github.com/gobwas/ws):
//
//   - idle: dial, connect, sub, read `subscribed`, then keep only the
//     net.Conn: no goroutine and no buffer per connection. One pinger
//     goroutine walks all connections, sends {"op":"ping"} on each once per
//     ping interval (spread evenly) and drains, without blocking, whatever
//     the server sent, noticing closed connections.
//   - sub: the same, plus one reader goroutine per connection that records
//     every `msg`: latency from the send time in its payload, loss and
//     duplicates by message id, order by seq.
//   - pub: connect only; `publish` sends on one channel per connection at a
//     fixed rate (open loop: the schedule never waits for acks).
//
// Connection i (a global index) subscribes to channel i % channels and
// binds to source address sources[i % len(sources)]. The loadgen closes its
// connections and exits when stdin is closed.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

const loadgenArg = "loadgen"

// Connection roles.
const (
	roleIdle = "idle"
	roleSub  = "sub"
	rolePub  = "pub"
)

// Commands (parent -> loadgen) and events (loadgen -> parent).
const (
	cmdDial    = "dial"    // open connections -> evDialed
	cmdStatus  = "status"  // open/closed connections, pings -> evStatus
	cmdCount   = "count"   // msgs received so far -> evCount
	cmdCollect = "collect" // subscriber results -> evCollected
	cmdPublish = "publish" // publish for a while -> evPublished
	cmdReset   = "reset"   // forget what the subscribers and publishers counted -> evReset

	evProgress  = "progress"
	evDialed    = "dialed"
	evStatus    = "status"
	evCount     = "count"
	evCollected = "collected"
	evPublished = "published"
	evReset     = "reset"
	evError     = "error"
)

// lgCommand is one line from the parent.
type lgCommand struct {
	Cmd string `json:"cmd"`

	// dial
	URL          string        `json:"url,omitempty"`
	Sources      []string      `json:"sources,omitempty"`
	Role         string        `json:"role,omitempty"`
	First        int           `json:"first,omitempty"` // global index of the first connection
	Count        int           `json:"count,omitempty"`
	Channels     int           `json:"channels,omitempty"`
	Concurrency  int           `json:"concurrency,omitempty"`
	Timeout      time.Duration `json:"timeout,omitempty"` // per connection setup
	MaxFailures  int           `json:"max_failures,omitempty"`
	PingInterval time.Duration `json:"ping_interval,omitempty"`

	// publish
	Rate     float64       `json:"rate,omitempty"`
	Duration time.Duration `json:"duration,omitempty"`
	Payload  int           `json:"payload,omitempty"`
	// Overrun stops a publisher still behind its schedule this long after
	// the schedule's end (0: it sends every message however late); the
	// messages it never sent are Scheduled minus Published.
	Overrun time.Duration `json:"overrun,omitempty"`

	// collect: messages published on each channel
	Published []int `json:"published,omitempty"`
}

// lgEvent is one line to the parent.
type lgEvent struct {
	Ev  string `json:"ev"`
	Err string `json:"err,omitempty"`

	// progress, dialed
	Done    int           `json:"done,omitempty"`
	Failed  int           `json:"failed,omitempty"`
	Refused int           `json:"refused,omitempty"` // 503 answers retried
	Errors  []string      `json:"errors,omitempty"`
	Elapsed time.Duration `json:"elapsed,omitempty"`

	Status    *lgStatus      `json:"status,omitempty"`
	Received  int64          `json:"received,omitempty"`
	Collected *collectResult `json:"collected,omitempty"`
	Published *publishResult `json:"published,omitempty"`
}

type lgStatus struct {
	Open       int      `json:"open"`
	Closed     int      `json:"closed"` // closed by the server or by an error
	Reasons    []string `json:"reasons,omitempty"`
	Pings      int64    `json:"pings"` // sent so far
	Goroutines int      `json:"goroutines"`
}

// collectResult is what the subscribers of one loadgen saw.
type collectResult struct {
	Subs         int      `json:"subs"`
	Received     int64    `json:"received"` // distinct messages
	Missing      int64    `json:"missing"`  // published on the sub's channel, never received
	Duplicates   int64    `json:"duplicates"`
	OutOfOrder   int64    `json:"out_of_order"` // seq not above the previous one
	SeqGaps      int64    `json:"seq_gaps"`     // seqs skipped
	Unexpected   int64    `json:"unexpected"`   // ids never published, wrong channel
	SubsWithLoss int      `json:"subs_with_loss"`
	Closed       int      `json:"closed"`
	Reasons      []string `json:"reasons,omitempty"`
	// Other ops received (join, pong, error...) and their counts.
	Ops map[string]int64 `json:"ops,omitempty"`
	// Latency histogram (microseconds), HdrHistogram V2 encoding.
	Hist []byte `json:"hist"`
	// Per channel, per message id-1: last receive time (unix ns) and
	// number of subscribers here that received it.
	LastRecv  [][]int64 `json:"last_recv"`
	Receivers [][]int32 `json:"receivers"`
}

type publishResult struct {
	Published []int         `json:"published"` // per channel
	SendNS    [][]int64     `json:"send_ns"`   // per channel, per id-1
	Scheduled int           `json:"scheduled"` // per channel
	MaxLag    time.Duration `json:"max_lag"`   // worst delay of a send behind its schedule
	LagP99    time.Duration `json:"lag_p99"`   // 99th percentile of those delays, all sends
	Acks      int64         `json:"acks"`
	Errors    []string      `json:"errors,omitempty"`
	ErrCount  int           `json:"error_count,omitempty"` // all errors, Errors lists the first kinds
}

// srvMsg is the part of a server message the loadgen looks at.
type srvMsg struct {
	Op   string `json:"op"`
	ID   uint64 `json:"id"`
	Ch   string `json:"ch"`
	Seq  uint64 `json:"seq"`
	Data struct {
		ID int64 `json:"id"`
		T  int64 `json:"t"` // send time, unix ns
	} `json:"data"`
	chRaw []byte // set by parseMsg instead of Ch
}

func chanName(c int) string { return "bench-" + strconv.Itoa(c) }

// client is one WebSocket connection.
type client struct {
	nc     net.Conn
	rc     syscall.RawConn // idle role: for non-blocking drains
	r      io.Reader       // sub and pub roles
	idx    int
	ch     int
	chName string
	wmu    sync.Mutex // serialises frames written by the pinger, publisher and reader
	closed atomic.Bool

	// sub role, owned by the reader goroutine; collect reads under mu
	mu         sync.Mutex
	seen       []uint64 // bitset of message ids
	lastSeq    uint64
	received   int64
	dups       int64
	outOfOrder int64
	gaps       int64
	unexpected int64
}

// send writes one text frame (masked, as a client must) in a single write.
func (c *client) send(p []byte) error {
	var buf bytes.Buffer
	if err := wsutil.WriteClientText(&buf, p); err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Write(buf.Bytes())
	return err
}

// sendRaw writes one frame built by the caller (masked, as a client
// must) in a single write.
func (c *client) sendRaw(frame []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Write(frame)
	return err
}

// writeFrame writes one frame, masked as a client must, in a single
// write.
func (c *client) writeFrame(fr ws.Frame) error {
	var buf bytes.Buffer
	fr.Payload = append([]byte(nil), fr.Payload...) // masked in place below
	if err := ws.WriteFrame(&buf, ws.MaskFrameInPlace(fr)); err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Write(buf.Bytes())
	return err
}

// rw is what wsutil reads from; control frames it answers go out through
// the write lock.
func (c *client) rw() io.ReadWriter {
	return struct {
		io.Reader
		io.Writer
	}{c.r, lockedWriter{c}}
}

type lockedWriter struct{ c *client }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	return w.c.nc.Write(p)
}

// loadgen is the state of the load process.
type loadgen struct {
	outMu sync.Mutex
	out   *json.Encoder

	mu         sync.Mutex
	conns      []*client
	channels   int
	pingerOnce sync.Once
	pings      atomic.Int64
	closed     atomic.Int64
	reasons    *reasonSet
	exiting    atomic.Bool
	received   atomic.Int64
	acks       atomic.Int64
	pubErrors  *reasonSet
	ops        opCounts
	shards     [16]recShard
	pingStop   chan struct{}
}

// recShard holds recordings of a sixteenth of the subscribers, so the
// reader goroutines do not all contend on one lock.
type recShard struct {
	mu        sync.Mutex
	hist      *hdrhistogram.Histogram
	lastRecv  [][]int64
	receivers [][]int32
}

type opCounts struct {
	mu sync.Mutex
	m  map[string]int64
}

func (o *opCounts) add(op string) {
	o.mu.Lock()
	if o.m == nil {
		o.m = map[string]int64{}
	}
	o.m[op]++
	o.mu.Unlock()
}

// Latency histogram bounds, in microseconds.
const (
	histMin = 1
	histMax = 120 * 1000 * 1000
	histSig = 3
)

func loadgenMain(in io.Reader, out io.Writer) int {
	// The parent handles Ctrl-C and stops us by closing stdin.
	signal.Ignore(os.Interrupt)
	lg := &loadgen{
		out:       json.NewEncoder(out),
		reasons:   newReasonSet(),
		pubErrors: newReasonSet(),
		pingStop:  make(chan struct{}),
	}
	for i := range lg.shards {
		lg.shards[i].hist = hdrhistogram.New(histMin, histMax, histSig)
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var cmd lgCommand
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			lg.emit(lgEvent{Ev: evError, Err: "bad command: " + err.Error()})
			continue
		}
		lg.emit(lg.handle(cmd))
	}
	lg.shutdown()
	return 0
}

func (lg *loadgen) emit(ev lgEvent) {
	lg.outMu.Lock()
	defer lg.outMu.Unlock()
	_ = lg.out.Encode(ev)
}

func (lg *loadgen) handle(cmd lgCommand) lgEvent {
	switch cmd.Cmd {
	case cmdDial:
		return lg.dial(cmd)
	case cmdStatus:
		return lgEvent{Ev: evStatus, Status: lg.status()}
	case cmdCount:
		return lgEvent{Ev: evCount, Received: lg.received.Load()}
	case cmdCollect:
		return lg.collect(cmd.Published)
	case cmdPublish:
		return lg.publish(cmd)
	case cmdReset:
		lg.reset()
		return lgEvent{Ev: evReset}
	}
	return lgEvent{Ev: evError, Err: fmt.Sprintf("unknown command %q", cmd.Cmd)}
}

// reset starts a new measured run on the same connections: every
// subscriber forgets the message ids it saw and its counts (not its last
// seq: the channel's seq goes on), the latency histograms and receive
// times are emptied, and the publishers' acks and errors are forgotten.
// The parent calls it between runs, when nothing is in flight.
func (lg *loadgen) reset() {
	lg.mu.Lock()
	conns := slices.Clone(lg.conns)
	lg.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		clear(c.seen)
		c.received, c.dups, c.outOfOrder, c.gaps, c.unexpected = 0, 0, 0, 0, 0
		c.mu.Unlock()
	}
	for i := range lg.shards {
		sh := &lg.shards[i]
		sh.mu.Lock()
		sh.hist.Reset()
		sh.lastRecv, sh.receivers = nil, nil
		sh.mu.Unlock()
	}
	lg.received.Store(0)
	lg.acks.Store(0)
	lg.pubErrors.reset()
	lg.ops.mu.Lock()
	lg.ops.m = nil
	lg.ops.mu.Unlock()
}

// shutdown stops the pinger and closes every connection.
func (lg *loadgen) shutdown() {
	lg.exiting.Store(true)
	close(lg.pingStop)
	lg.mu.Lock()
	conns := slices.Clone(lg.conns)
	lg.mu.Unlock()
	for _, c := range conns {
		_ = c.nc.Close()
	}
}

// ---- dialing ----

func (lg *loadgen) dial(cmd lgCommand) lgEvent {
	if cmd.Count <= 0 || len(cmd.Sources) == 0 || cmd.Channels <= 0 {
		return lgEvent{Ev: evError, Err: "dial: need count, sources and channels"}
	}
	if u, err := url.Parse(cmd.URL); err != nil || !isLoopback(u.Hostname()) {
		return lgEvent{Ev: evError, Err: fmt.Sprintf("dial: %q is not a loopback URL", cmd.URL)}
	}
	dialers := make([]ws.Dialer, len(cmd.Sources))
	for i, s := range cmd.Sources {
		if !isLoopback(s) {
			return lgEvent{Ev: evError, Err: fmt.Sprintf("dial: source %q is not a loopback address", s)}
		}
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(s)}, Timeout: cmd.Timeout}
		dialers[i] = ws.Dialer{Timeout: cmd.Timeout, NetDial: nd.DialContext}
	}
	lg.mu.Lock()
	lg.channels = max(lg.channels, cmd.Channels)
	lg.mu.Unlock()
	if cmd.PingInterval > 0 {
		lg.pingerOnce.Do(func() { go lg.pinger(cmd.PingInterval) })
	}

	start := time.Now()
	var next, done, failed, refused atomic.Int64
	errs := newReasonSet()
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				lg.emit(lgEvent{Ev: evProgress, Done: int(done.Load()), Failed: int(failed.Load()), Refused: int(refused.Load())})
			}
		}
	}()
	var wg sync.WaitGroup
	for range max(1, cmd.Concurrency) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= cmd.Count || failed.Load() > int64(cmd.MaxFailures) {
					return
				}
				idx := cmd.First + i
				c, err := lg.openRetry(dialers[idx%len(dialers)], cmd, idx, &refused)
				if err != nil {
					failed.Add(1)
					errs.add(err.Error())
					continue
				}
				lg.mu.Lock()
				lg.conns = append(lg.conns, c)
				lg.mu.Unlock()
				done.Add(1)
				switch cmd.Role {
				case roleSub:
					go lg.subReader(c)
				case rolePub:
					go lg.pubReader(c)
				}
			}
		})
	}
	wg.Wait()
	close(stopProgress)
	<-progressDone
	ev := lgEvent{Ev: evDialed, Done: int(done.Load()), Failed: int(failed.Load()), Refused: int(refused.Load()), Errors: errs.list(), Elapsed: time.Since(start)}
	if ev.Failed > cmd.MaxFailures {
		ev.Err = fmt.Sprintf("gave up after %d failed connection setups", ev.Failed)
	}
	return ev
}

// maxRefusals bounds how often one connection is retried after a 503.
const maxRefusals = 30

// openRetry is open, retried when the gateway refuses the upgrade with 503
// (its accept rate limit or a full node) after the Retry-After it sends,
// as a well-behaved client would. refused counts the 503s.
func (lg *loadgen) openRetry(d ws.Dialer, cmd lgCommand, idx int, refused *atomic.Int64) (*client, error) {
	for attempt := 0; ; attempt++ {
		retryAfter := time.Second
		d.OnStatusError = func(status int, _ []byte, resp io.Reader) {
			retryAfter = parseRetryAfter(resp, retryAfter)
		}
		c, err := lg.open(&d, cmd, idx)
		var se ws.StatusError
		if err == nil || !errors.As(err, &se) || se != http.StatusServiceUnavailable || attempt >= maxRefusals || lg.exiting.Load() {
			return c, err
		}
		refused.Add(1)
		// Jitter spreads the retries of many connections.
		time.Sleep(retryAfter + rand.N(retryAfter/2+1))
	}
}

// parseRetryAfter reads a Retry-After header (whole seconds, at most 10)
// from the rest of a response head.
func parseRetryAfter(resp io.Reader, def time.Duration) time.Duration {
	head, _ := io.ReadAll(io.LimitReader(resp, 4096))
	for line := range strings.Lines(string(head)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "Retry-After") {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
			return min(time.Duration(n)*time.Second, 10*time.Second)
		}
	}
	return def
}

// open dials connection idx and sets it up for its role.
func (lg *loadgen) open(d *ws.Dialer, cmd lgCommand, idx int) (*client, error) {
	ch := idx % cmd.Channels
	// A context that is never done: Dialer.Timeout bounds the dial and the
	// handshake without a helper goroutine per connection.
	nc, br, _, err := d.Dial(context.Background(), cmd.URL)
	if err != nil {
		return nil, err
	}
	c := &client{nc: nc, idx: idx, ch: ch, chName: chanName(ch), r: nc}
	ok := false
	defer func() {
		if !ok {
			_ = nc.Close()
		}
	}()
	switch {
	case br != nil:
		c.r = br // holds bytes the server sent right after the handshake
	case cmd.Role != roleIdle:
		c.r = bufio.NewReaderSize(nc, 4096)
	}
	_ = nc.SetDeadline(time.Now().Add(cmd.Timeout))

	user, want, wantID := "bench-"+strconv.Itoa(idx), "subscribed", uint64(2)
	if cmd.Role == rolePub {
		user, want, wantID = "pub-"+strconv.Itoa(idx), "connected", 1
	}
	if err := c.send([]byte(`{"op":"connect","id":1,"user":"` + user + `"}`)); err != nil {
		return nil, fmt.Errorf("send connect: %w", err)
	}
	if cmd.Role != rolePub {
		if err := c.send([]byte(`{"op":"sub","id":2,"ch":"` + c.chName + `"}`)); err != nil {
			return nil, fmt.Errorf("send sub: %w", err)
		}
	}
	for found := false; !found; {
		data, op, err := wsutil.ReadServerData(c.rw())
		if err != nil {
			return nil, fmt.Errorf("waiting for %s: %w", want, err)
		}
		if op != ws.OpText {
			continue
		}
		var bad error
		forEachObject(data, func(line []byte) {
			var m srvMsg
			if err := json.Unmarshal(line, &m); err != nil {
				bad = fmt.Errorf("unparsable server message %q", clip(line))
				return
			}
			switch {
			case m.Op == "error" || m.Op == "disconnect":
				bad = fmt.Errorf("server answered %s", clip(line))
			case m.Op == want && m.ID == wantID:
				found = true
				c.lastSeq = m.Seq // latest seq of the channel when subscribed
			}
		})
		if bad != nil {
			return nil, bad
		}
	}
	_ = nc.SetDeadline(time.Time{})
	if cmd.Role == roleIdle {
		// Keep nothing but the socket. Anything still buffered is presence
		// events, which the loadgen does not need.
		if br != nil {
			ws.PutReader(br)
		}
		c.r = nil
		sc, isSC := nc.(syscall.Conn)
		if !isSC {
			return nil, errors.New("connection has no file descriptor")
		}
		if c.rc, err = sc.SyscallConn(); err != nil {
			return nil, err
		}
	}
	if cmd.Role == roleSub {
		c.seen = make([]uint64, 4)
	}
	ok = true
	return c, nil
}

// forEachObject calls fn for each JSON object of a frame; the server may
// batch several, separated by "\n".
func forEachObject(data []byte, fn func([]byte)) {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			fn(line)
		}
	}
}

// isLoopback reports whether host is an IPv4 address in 127.0.0.0/8: the
// loadgen talks to nothing else.
func isLoopback(host string) bool {
	ip := net.ParseIP(host).To4()
	return ip != nil && ip[0] == 127
}

func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// lost marks c closed and records why, unless the loadgen is exiting.
func (lg *loadgen) lost(c *client, reason string) {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	_ = c.nc.Close()
	if !lg.exiting.Load() {
		lg.closed.Add(1)
		lg.reasons.add(reason)
	}
}

// ---- idle connections: the pinger ----

// pinger sends a ping on every connection once per interval, a slice of
// them every tick, and drains idle connections as it goes.
func (lg *loadgen) pinger(interval time.Duration) {
	const tick = 50 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	buf := make([]byte, 4096)
	ping := []byte(`{"op":"ping"}`)
	cursor, credit := 0, 0.0
	for {
		select {
		case <-lg.pingStop:
			return
		case <-t.C:
		}
		lg.mu.Lock()
		n := len(lg.conns)
		credit += float64(n) * float64(tick) / float64(interval)
		k := int(credit)
		credit -= float64(k)
		for ; k > 0 && n > 0; k-- {
			c := lg.conns[cursor]
			cursor = (cursor + 1) % n
			if c.closed.Load() {
				continue
			}
			if err := c.send(ping); err != nil {
				lg.lost(c, "ping: "+err.Error())
				continue
			}
			lg.pings.Add(1)
			if c.rc != nil {
				lg.drain(c, buf)
			}
		}
		lg.mu.Unlock()
	}
}

// drain reads whatever the server sent to an idle connection without
// blocking, and notices a connection the server closed.
func (lg *loadgen) drain(c *client, buf []byte) {
	var eof bool
	var rerr error
	var sample string
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.Read(int(fd), buf)
			switch {
			case n > 0:
				if i := bytes.Index(buf[:n], []byte(`{"op":"disconnect"`)); i >= 0 && sample == "" {
					j := bytes.IndexByte(buf[i:n], '}')
					if j < 0 {
						j = n - i - 1
					}
					sample = string(buf[i : i+j+1])
				}
			case err == syscall.EINTR:
			case err == syscall.EAGAIN:
				return true
			case err != nil:
				rerr = err
				return true
			default:
				eof = true
				return true
			}
		}
	})
	if err != nil {
		rerr = err
	}
	switch {
	case sample != "":
		lg.lost(c, "server sent "+sample)
	case eof:
		lg.lost(c, "closed by the server (EOF)")
	case rerr != nil:
		lg.lost(c, "read: "+rerr.Error())
	}
}

func (lg *loadgen) status() *lgStatus {
	buf := make([]byte, 4096)
	lg.mu.Lock()
	for _, c := range lg.conns {
		if c.rc != nil && !c.closed.Load() {
			lg.drain(c, buf)
		}
	}
	open := 0
	for _, c := range lg.conns {
		if !c.closed.Load() {
			open++
		}
	}
	lg.mu.Unlock()
	return &lgStatus{Open: open, Closed: int(lg.closed.Load()), Reasons: lg.reasons.list(), Pings: lg.pings.Load(), Goroutines: runtime.NumGoroutine()}
}

// ---- subscribers ----

// subReader reads one subscriber's connection until it closes.
func (lg *loadgen) subReader(c *client) {
	var fr frameReader
	for {
		data, err := fr.next(c)
		if err != nil {
			lg.lost(c, "read: "+err.Error())
			return
		}
		now := time.Now().UnixNano()
		forEachObject(data, func(line []byte) {
			var m srvMsg
			if parseMsg(line, &m) {
				lg.record(c, &m, now)
				return
			}
			if err := json.Unmarshal(line, &m); err != nil {
				lg.ops.add("unparsable")
				return
			}
			if m.Op != "msg" {
				lg.ops.add(m.Op)
				if m.Op == "disconnect" || m.Op == "error" {
					lg.reasons.add("server sent " + clip(line))
				}
				return
			}
			lg.record(c, &m, now)
		})
	}
}

// maxMessage bounds a server message a subscriber reads (the gateway's
// own bound is far below it).
const maxMessage = 1 << 20

// frameReader reads a subscriber's server messages into one buffer it
// reuses (wsutil.ReadServerData allocates a reader and a buffer for
// every message: garbage the loadgen would collect beside the gateway it
// measures). It answers pings, skips pongs and binary messages and joins
// fragments.
type frameReader struct {
	hdr [ws.MaxHeaderSize - 2]byte
	ctl [125]byte // a control frame's payload
	buf []byte
}

// next returns the next text message, valid until the next call.
func (f *frameReader) next(c *client) ([]byte, error) {
	f.buf = f.buf[:0]
	op := ws.OpContinuation // the message's, from its first frame
	for {
		h, err := ws.ReadHeaderBuffer(c.r, f.hdr[:])
		if err != nil {
			return nil, err
		}
		if h.Rsv != 0 {
			return nil, errors.New("frame with reserved bits set")
		}
		if h.OpCode.IsControl() {
			if err := f.control(c, h); err != nil {
				return nil, err
			}
			continue
		}
		if (op == ws.OpContinuation) == (h.OpCode == ws.OpContinuation) {
			return nil, fmt.Errorf("unexpected %v frame", h.OpCode)
		}
		if op == ws.OpContinuation {
			op = h.OpCode
		}
		if h.Length > maxMessage-int64(len(f.buf)) {
			return nil, fmt.Errorf("message over %d bytes", maxMessage)
		}
		n := len(f.buf)
		f.buf = slices.Grow(f.buf, int(h.Length))[:n+int(h.Length)]
		if _, err := io.ReadFull(c.r, f.buf[n:]); err != nil {
			return nil, err
		}
		if h.Masked {
			ws.Cipher(f.buf[n:], h.Mask, 0)
		}
		if !h.Fin {
			continue
		}
		if op == ws.OpText {
			return f.buf, nil
		}
		f.buf, op = f.buf[:0], ws.OpContinuation
	}
}

// control reads a control frame's payload: a ping is answered with a
// pong, a close ends the connection.
func (f *frameReader) control(c *client, h ws.Header) error {
	if h.Length > int64(len(f.ctl)) || !h.Fin {
		return errors.New("malformed control frame")
	}
	p := f.ctl[:h.Length]
	if _, err := io.ReadFull(c.r, p); err != nil {
		return err
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	switch h.OpCode {
	case ws.OpPing:
		return c.writeFrame(ws.NewPongFrame(p))
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		return fmt.Errorf("closed by the server: %d %s", code, reason)
	}
	return nil
}

// parseMsg is a fast path for the gateway's msg layout,
//
//	{"op":"msg","ch":"C","seq":N,...,"data":{"id":N,"t":N...}}
//
// which saves the loadgen a reflective decode per delivery (it shares the
// machine with the gateway it measures). It leaves the channel in m.chRaw,
// which record checks against the subscriber's channel. Anything else returns
// false and goes through encoding/json.
func parseMsg(line []byte, m *srvMsg) bool {
	rest, ok := bytes.CutPrefix(line, []byte(`{"op":"msg","ch":"`))
	if !ok {
		return false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 || bytes.IndexByte(rest[:end], '\\') >= 0 {
		return false
	}
	ch := rest[:end]
	var seq, id, t int64
	if rest, ok = numberAfter(rest[end:], `,"seq":`, &seq); !ok {
		return false
	}
	if rest, ok = numberAfter(rest, `,"data":{"id":`, &id); !ok {
		return false
	}
	if _, ok = numberAfter(rest, `,"t":`, &t); !ok {
		return false
	}
	m.Op, m.Seq, m.Data.ID, m.Data.T = "msg", uint64(seq), id, t
	m.chRaw = ch
	return true
}

// numberAfter finds key in b and parses the non-negative integer after it.
func numberAfter(b []byte, key string, n *int64) ([]byte, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return nil, false
	}
	b = b[i+len(key):]
	j := 0
	var v int64
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9' && j < 19; j++ {
		v = v*10 + int64(b[j]-'0')
	}
	if j == 0 || j < len(b) && b[j] >= '0' && b[j] <= '9' {
		return nil, false
	}
	*n = v
	return b[j:], true
}

// maxMsgID bounds the message ids a subscriber tracks.
const maxMsgID = 1 << 22

func (lg *loadgen) record(c *client, m *srvMsg, now int64) {
	id := m.Data.ID
	c.mu.Lock()
	chOK := m.Ch == c.chName
	if m.chRaw != nil {
		chOK = string(m.chRaw) == c.chName // compared without allocating
	}
	if !chOK || id < 1 || id > maxMsgID {
		c.unexpected++
		c.mu.Unlock()
		return
	}
	w, bit := int(id/64), uint64(1)<<(id%64)
	if w >= len(c.seen) {
		c.seen = append(c.seen, make([]uint64, max(w+1, 2*len(c.seen))-len(c.seen))...)
	}
	dup := c.seen[w]&bit != 0
	c.seen[w] |= bit
	if dup {
		c.dups++
	} else {
		c.received++
		switch {
		case m.Seq == 0:
			// No order number (core NATS): nothing to check the order by.
		case m.Seq <= c.lastSeq:
			c.outOfOrder++
		case m.Seq > c.lastSeq+1:
			c.gaps += int64(m.Seq - c.lastSeq - 1)
		}
	}
	c.lastSeq = max(c.lastSeq, m.Seq)
	c.mu.Unlock()
	if dup {
		return
	}

	sh := &lg.shards[c.idx%len(lg.shards)]
	sh.mu.Lock()
	lat := max(0, now-m.Data.T) / 1000
	if sh.hist.RecordValue(lat) != nil {
		_ = sh.hist.RecordValue(histMax)
	}
	if sh.lastRecv == nil {
		sh.lastRecv, sh.receivers = make([][]int64, lg.channels), make([][]int32, lg.channels)
	}
	i := int(id - 1)
	if i >= len(sh.lastRecv[c.ch]) {
		sh.lastRecv[c.ch] = append(sh.lastRecv[c.ch], make([]int64, i+1-len(sh.lastRecv[c.ch]))...)
		sh.receivers[c.ch] = append(sh.receivers[c.ch], make([]int32, i+1-len(sh.receivers[c.ch]))...)
	}
	sh.lastRecv[c.ch][i] = max(sh.lastRecv[c.ch][i], now)
	sh.receivers[c.ch][i]++
	sh.mu.Unlock()
	lg.received.Add(1)
}

// collect sums up every subscriber; published[ch] is how many messages
// were sent on channel ch.
func (lg *loadgen) collect(published []int) lgEvent {
	res := &collectResult{}
	lg.mu.Lock()
	conns := slices.Clone(lg.conns)
	channels := lg.channels
	lg.mu.Unlock()
	for _, c := range conns {
		if c.seen == nil {
			continue
		}
		c.mu.Lock()
		res.Subs++
		res.Received += c.received
		res.Duplicates += c.dups
		res.OutOfOrder += c.outOfOrder
		res.SeqGaps += c.gaps
		res.Unexpected += c.unexpected
		if c.ch < len(published) {
			missing := int64(0)
			for id := 1; id <= published[c.ch]; id++ {
				if w := id / 64; w >= len(c.seen) || c.seen[w]&(1<<(id%64)) == 0 {
					missing++
				}
			}
			// Ids above what was published do not exist.
			for id := published[c.ch] + 1; id < len(c.seen)*64; id++ {
				if c.seen[id/64]&(1<<(id%64)) != 0 {
					res.Unexpected++
				}
			}
			res.Missing += missing
			if missing > 0 {
				res.SubsWithLoss++
			}
		}
		c.mu.Unlock()
	}
	merged := hdrhistogram.New(histMin, histMax, histSig)
	res.LastRecv, res.Receivers = make([][]int64, channels), make([][]int32, channels)
	for i := range lg.shards {
		sh := &lg.shards[i]
		sh.mu.Lock()
		merged.Merge(sh.hist)
		for ch := range sh.lastRecv {
			res.LastRecv[ch] = mergeMax(res.LastRecv[ch], sh.lastRecv[ch])
			res.Receivers[ch] = mergeSum(res.Receivers[ch], sh.receivers[ch])
		}
		sh.mu.Unlock()
	}
	var err error
	if res.Hist, err = merged.Encode(hdrhistogram.V2CompressedEncodingCookieBase); err != nil {
		return lgEvent{Ev: evError, Err: "encoding histogram: " + err.Error()}
	}
	res.Closed, res.Reasons = int(lg.closed.Load()), lg.reasons.list()
	lg.ops.mu.Lock()
	res.Ops = maps.Clone(lg.ops.m)
	lg.ops.mu.Unlock()
	return lgEvent{Ev: evCollected, Collected: res}
}

func mergeMax(dst, src []int64) []int64 {
	if len(dst) < len(src) {
		dst = append(dst, make([]int64, len(src)-len(dst))...)
	}
	for i, v := range src {
		dst[i] = max(dst[i], v)
	}
	return dst
}

func mergeSum(dst, src []int32) []int32 {
	if len(dst) < len(src) {
		dst = append(dst, make([]int32, len(src)-len(dst))...)
	}
	for i, v := range src {
		dst[i] += v
	}
	return dst
}

// ---- publishers ----

// pubReader counts a publisher's acks and errors.
func (lg *loadgen) pubReader(c *client) {
	var fr frameReader
	for {
		data, err := fr.next(c)
		if err != nil {
			lg.lost(c, "read: "+err.Error())
			return
		}
		forEachObject(data, func(line []byte) {
			if bytes.HasPrefix(line, []byte(`{"op":"ack",`)) { // the gateway's layout: no decoding per ack
				lg.acks.Add(1)
				return
			}
			var m srvMsg
			if json.Unmarshal(line, &m) != nil {
				lg.pubErrors.add("unparsable: " + clip(line))
				return
			}
			switch m.Op {
			case "ack":
				lg.acks.Add(1)
			case "error", "disconnect":
				lg.pubErrors.add(clip(line))
			}
		})
	}
}

// publish sends cmd.Rate messages a second on every publisher connection
// (connection i publishes on channel i) for cmd.Duration. The channels'
// schedules are staggered evenly over one period.
func (lg *loadgen) publish(cmd lgCommand) lgEvent {
	lg.mu.Lock()
	pubs := slices.Clone(lg.conns)
	lg.mu.Unlock()
	if len(pubs) == 0 || cmd.Rate <= 0 {
		return lgEvent{Ev: evError, Err: "publish: no publisher connections or no rate"}
	}
	period := time.Duration(float64(time.Second) / cmd.Rate)
	n := max(1, int(cmd.Duration.Seconds()*cmd.Rate))
	res := &publishResult{Published: make([]int, lg.channels), SendNS: make([][]int64, lg.channels), Scheduled: n}
	lags := make([]time.Duration, len(pubs))
	allLags := make([][]time.Duration, len(pubs)) // every send's delay, per publisher
	pad := ""
	if cmd.Payload > 0 {
		pad = `,"pad":"` + string(bytes.Repeat([]byte("x"), cmd.Payload)) + `"`
	}
	start := time.Now().Add(50 * time.Millisecond)
	end := start.Add(time.Duration(n) * period)
	var wg sync.WaitGroup
	for i, c := range pubs {
		wg.Go(func() {
			offset := period * time.Duration(i) / time.Duration(len(pubs))
			sends := make([]int64, 0, n)
			frames := newPubFrames(c.chName, pad)
			for k := range n {
				at := start.Add(offset + time.Duration(k)*period)
				if cmd.Overrun > 0 && time.Since(end) > cmd.Overrun {
					break // still behind its schedule: the rest is unsent
				}
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				now := time.Now()
				lags[i] = max(lags[i], now.Sub(at))
				allLags[i] = append(allLags[i], now.Sub(at))
				id := k + 1
				if err := c.sendRaw(frames.build(id, now.UnixNano())); err != nil {
					lg.pubErrors.add("send: " + err.Error())
					break
				}
				sends = append(sends, now.UnixNano())
			}
			res.SendNS[c.ch] = sends
			res.Published[c.ch] = len(sends)
		})
	}
	wg.Wait()
	total := 0
	for _, p := range res.Published {
		total += p
	}
	for deadline := time.Now().Add(10 * time.Second); lg.acks.Load() < int64(total) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	res.MaxLag = slices.Max(lags)
	res.LagP99 = percentile(slices.Concat(allLags...), 99)
	res.Acks = lg.acks.Load()
	res.Errors, res.ErrCount = lg.pubErrors.list(), lg.pubErrors.count()
	return lgEvent{Ev: evPublished, Published: res}
}

// pubFrames builds one publisher's frames
//
//	{"op":"pub","id":N,"ch":"C","data":{"id":N,"t":T[,"pad":"x..."]}}
//
// without fmt or reflection: the JSON around the id and the send time is
// encoded once, and every frame is built and masked (with the
// publisher's own mask) into one buffer that the next frame reuses.
type pubFrames struct {
	mid  []byte // `,"ch":"C","data":{"id":`
	tail []byte // the padding and `}}`
	mask [4]byte
	p    []byte // the payload
	hb   [ws.MaxHeaderSize]byte
	fb   bytes.Buffer // the frame
}

func newPubFrames(ch, pad string) *pubFrames {
	return &pubFrames{
		mid:  []byte(`,"ch":` + strconv.Quote(ch) + `,"data":{"id":`),
		tail: []byte(pad + `}}`),
		mask: ws.NewMask(),
	}
}

// build returns message id's frame, sent at t (unix ns); valid until the
// next call.
func (f *pubFrames) build(id int, t int64) []byte {
	p := append(f.p[:0], `{"op":"pub","id":`...)
	p = strconv.AppendInt(p, int64(id), 10)
	p = append(p, f.mid...)
	p = strconv.AppendInt(p, int64(id), 10)
	p = append(p, `,"t":`...)
	p = strconv.AppendInt(p, t, 10)
	f.p = append(p, f.tail...)
	f.fb.Reset()
	_ = ws.WriteHeaderBuffer(&f.fb, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: f.mask, Length: int64(len(f.p))}, f.hb[:])
	start := f.fb.Len()
	f.fb.Write(f.p)
	ws.Cipher(f.fb.Bytes()[start:], f.mask, 0)
	return f.fb.Bytes()
}

// ---- helpers ----

// percentile is the q-th percentile (nearest rank) of ds, which it sorts;
// 0 for none.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(q/100*float64(len(ds)))) - 1
	return ds[min(len(ds)-1, max(0, i))]
}

// reasonSet keeps the first few distinct reasons and counts all of them.
type reasonSet struct {
	mu    sync.Mutex
	order []string
	n     map[string]int
	total int
}

func newReasonSet() *reasonSet { return &reasonSet{n: map[string]int{}} }

func (r *reasonSet) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	if _, ok := r.n[s]; !ok && len(r.order) >= 8 {
		return
	}
	if r.n[s] == 0 {
		r.order = append(r.order, s)
	}
	r.n[s]++
}

// reset forgets every reason.
func (r *reasonSet) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.order, r.n, r.total = nil, map[string]int{}, 0
}

// count is how many reasons were added, shown or not.
func (r *reasonSet) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// list is "reason (xN)" for the first distinct reasons.
func (r *reasonSet) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	shown := 0
	for _, s := range r.order {
		out = append(out, fmt.Sprintf("%s (x%d)", s, r.n[s]))
		shown += r.n[s]
	}
	if rest := r.total - shown; rest > 0 {
		out = append(out, fmt.Sprintf("... and %d more", rest))
	}
	return out
}
