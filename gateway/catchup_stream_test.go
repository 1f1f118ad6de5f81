package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// bigHistory configures a node whose history is far larger than a
// client's queue: 200 messages of 4 KB against a 64 KB queue.
func bigHistory(c *config.Config) {
	c.History.Size = 1000
	c.Client.MaxQueueBytes = 64 << 10
	c.Client.MaxMessageSize = 8 << 10
	c.History.PageBytes = 16 << 10
}

// fill publishes n messages of about size bytes on ch and returns the
// channel's epoch.
func fill(t *testing.T, ts *testServer, ch string, n, size int) string {
	t.Helper()
	pub := dial(t, ts)
	pub.Connect("writer")
	pad := strings.Repeat("x", size)
	var epoch string
	for i := 1; i <= n; i++ {
		ack := pub.MustCall("pub", map[string]any{"ch": ch, "data": map[string]any{"i": i, "pad": pad}}, "ack")
		epoch = ack.Str("epoch")
	}
	pub.Close()
	return epoch
}

// streamed reads a streamed catch-up to its end and returns the seqs and
// data indexes received, in order, and the caught_up marker.
func streamed(t *testing.T, c *wstest.Client, ch string, sub wstest.Msg) (seqs []uint64, caught wstest.Msg) {
	t.Helper()
	for _, p := range sub["pubs"].([]any) {
		m := wstest.Msg(p.(map[string]any))
		if d, _ := m["data"].(map[string]any); d["i"] != float64(m.Num("seq")) {
			t.Fatalf("pub %v carries the wrong data", m.Num("seq"))
		}
		seqs = append(seqs, m.Num("seq"))
	}
	if sub["more"] != true {
		return seqs, nil
	}
	for {
		m := c.NextWithin(20*time.Second, "catch-up of "+ch, func(m wstest.Msg) bool {
			return m.Str("ch") == ch || m.Op() == "disconnect" || m.Op() == "error"
		})
		switch m.Op() {
		case "msg":
			if d, _ := m["data"].(map[string]any); d["i"] != float64(m.Num("seq")) {
				t.Fatalf("msg %v carries the wrong data", m.Num("seq"))
			}
			seqs = append(seqs, m.Num("seq"))
		case "caught_up":
			return seqs, m
		default:
			t.Fatalf("during catch-up: %v", m)
		}
	}
}

func checkSeqs(t *testing.T, seqs []uint64, from, to uint64) {
	t.Helper()
	if uint64(len(seqs)) != to-from+1 {
		t.Fatalf("got %d messages, want %d (seqs %d..%d)", len(seqs), to-from+1, from, to)
	}
	for i, s := range seqs {
		if s != from+uint64(i) {
			t.Fatalf("message %d has seq %d, want %d", i, s, from+uint64(i))
		}
	}
}

// Attack (issue 11.4): a catch-up larger than client.max_queue_bytes used
// to go out as one `subscribed` frame, so the client was cut off as a slow
// consumer at once, every time it reconnected. A client that opts in to
// streaming now gets it in pages, paced by its reading, exactly once.
func TestCatchUpStreamsHistoryLargerThanQueue(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, bigHistory)
		epoch := fill(t, ts, "doc:big", 200, 4<<10)

		a := dial(t, ts)
		r := a.MustCall("sub", map[string]any{"ch": "doc:big", "since": since(0, epoch), "stream": true}, "subscribed")
		if r["recovered"] != true || r.Num("seq") != 200 || r["more"] != true {
			t.Fatalf("subscribed = %v", r)
		}
		seqs, caught := streamed(t, a, "doc:big", r)
		checkSeqs(t, seqs, 1, 200)
		if caught["recovered"] != true || caught.Num("seq") != 200 || caught.Str("epoch") != epoch {
			t.Fatalf("caught_up = %v", caught)
		}
		// Live continues right after, on the same connection.
		p := dial(t, ts)
		p.Pub("doc:big", map[string]any{"i": 201})
		if m := a.NextOp("msg"); m.Num("seq") != 201 {
			t.Fatalf("live after catch-up = %v", m)
		}
		a.None(200*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "disconnect" })
	})
}

// A client that did not opt in never gets a page it cannot handle: a
// catch-up too large for one frame is `recovered: false` (reload), not a
// slow-consumer disconnect, and live messages follow.
func TestCatchUpTooLargeForOldClient(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, bigHistory)
		epoch := fill(t, ts, "doc:old", 200, 4<<10)

		a := dial(t, ts)
		r := a.MustCall("sub", map[string]any{"ch": "doc:old", "since": since(0, epoch)}, "subscribed")
		if r["recovered"] != false || r.Num("seq") != 200 || r["pubs"] != nil || r["more"] != nil {
			t.Fatalf("subscribed = %v", r)
		}
		p := dial(t, ts)
		p.Pub("doc:old", map[string]any{"i": 201})
		if m := a.NextOp("msg"); m.Num("seq") != 201 {
			t.Fatalf("live after reset = %v", m)
		}
		// A small catch-up still comes whole, as in v1.
		b := dial(t, ts)
		r = b.MustCall("sub", map[string]any{"ch": "doc:old", "since": since(195, epoch)}, "subscribed")
		if r["recovered"] != true || len(r["pubs"].([]any)) != 6 || r["more"] != nil {
			t.Fatalf("small catch-up: %v", r)
		}
	})
}

// Live publications during a streamed catch-up merge in exactly once, also
// when more arrive than the live buffer holds (the catch-up then reads on
// from history).
func TestCatchUpStreamWithLivePublishes(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) {
			bigHistory(c)
			c.History.PageBytes = 4096 // one message per read; the live buffer overflows
			// Room for live bursts under a loaded CPU: this test is about
			// the merge, not the queue.
			c.Client.MaxQueueBytes = 1 << 20
		})
		epoch := fill(t, ts, "doc:live", 100, 2<<10)

		var wg sync.WaitGroup
		defer wg.Wait()
		stop := make(chan struct{})
		defer close(stop)
		p := wstest.Dial(t, ts.url(), wstest.NonFatal())
		wg.Go(func() {
			for i := 101; i <= 400; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if p.Call("pub", map[string]any{"ch": "doc:live", "data": map[string]any{"i": i, "pad": strings.Repeat("y", 2<<10)}}) == nil {
					return
				}
			}
		})
		a := dial(t, ts)
		r := a.MustCall("sub", map[string]any{"ch": "doc:live", "since": since(0, epoch), "stream": true}, "subscribed")
		if r["recovered"] != true || r["more"] != true {
			t.Fatalf("subscribed = %v", r)
		}
		seqs, caught := streamed(t, a, "doc:live", r)
		if caught["recovered"] != true {
			t.Fatalf("caught_up = %v", caught)
		}
		// Everything up to 400 arrives, in order, once.
		for len(seqs) < 400 {
			m := a.NextWithin(20*time.Second, "live msg", func(m wstest.Msg) bool { return m.Op() == "msg" || m.Op() == "disconnect" })
			if m.Op() != "msg" {
				t.Fatalf("got %v", m)
			}
			seqs = append(seqs, m.Num("seq"))
		}
		checkSeqs(t, seqs, 1, 400)
		a.None(100*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })
	})
}

// Unsubscribing in the middle of a streamed catch-up stops it: nothing for
// the channel follows `unsubscribed`, and a `sub` whose catch-up had not
// started is answered with its error after `unsubscribed`
// (docs/protocol.md). The sub and the unsub go in one frame, so which one
// wins is up to timing; rounds on channels of their own give the race
// many chances in one run (the error came first about once in 60 runs of
// a single round before cmdUnsub queued its reply under the sub's lock).
func TestCatchUpStreamUnsub(t *testing.T) {
	ts := startServer(t, "epoll", bigHistory)
	const rounds = 16
	epochs := make([]string, rounds)
	for r := range rounds {
		// 40 x 4 KB: more than the client's 64 KB queue, in 16 KB pages.
		epochs[r] = fill(t, ts, fmt.Sprintf("doc:u%d", r), 40, 4<<10)
	}
	a := dial(t, ts)
	done := map[string]bool{} // channels whose unsubscribed came
	answered, refused := 0, 0
	for r := range rounds {
		ch := fmt.Sprintf("doc:u%d", r)
		subID, unsubID := 2*r+1, 2*r+2
		a.SendRaw(fmt.Sprintf(`{"op":"sub","id":%d,"ch":%q,"since":{"seq":0,"epoch":%q},"stream":true}`+"\n"+`{"op":"unsub","id":%d,"ch":%q}`, subID, ch, epochs[r], unsubID, ch))
		// Pages queued before the reply may still arrive; nothing after it.
		subAnswered := false
		for {
			m := a.Next(nil)
			if done[m.Str("ch")] {
				t.Fatalf("round %d: after unsubscribed from %s: %v", r, m.Str("ch"), m)
			}
			if m.Op() == "unsubscribed" {
				if m.Str("ch") != ch || m.Num("id") != uint64(unsubID) {
					t.Fatalf("round %d: %v", r, m)
				}
				done[ch] = true
				break
			}
			if m.Op() == "subscribed" && m["more"] == true && m.Str("ch") == ch {
				subAnswered = true
				continue
			}
			// A catch-up may even end before the unsub runs.
			if (m.Op() != "msg" && m.Op() != "caught_up") || m.Str("ch") != ch {
				t.Fatalf("round %d: before unsubscribed: %v", r, m)
			}
		}
		if subAnswered {
			answered++
			continue
		}
		// The sub still gets an answer, after unsubscribed.
		e := a.Next(nil)
		if e.Op() != "error" || e.Num("id") != uint64(subID) || e.Str("code") != "bad_request" {
			t.Fatalf("round %d: after unsubscribed: %v", r, e)
		}
		refused++
	}
	a.None(300*time.Millisecond, func(m wstest.Msg) bool { return strings.HasPrefix(m.Str("ch"), "doc:u") })
	t.Logf("%d subs answered subscribed, %d refused", answered, refused)
}

// "stream" must be a boolean; anything else is a bad_request that names it.
func TestSubStreamFlagType(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	a := dial(t, ts)
	a.Send(map[string]any{"op": "sub", "ch": "doc:f", "stream": 1})
	r := a.NextOp("error")
	if r.Str("code") != "bad_request" || !strings.Contains(r.Str("message"), `"stream"`) {
		t.Fatalf("reply = %v", r)
	}
	// stream without since is a plain subscribe.
	r = a.MustCall("sub", map[string]any{"ch": "doc:f", "stream": true}, "subscribed")
	if r["more"] != nil || r["recovered"] != nil {
		t.Fatalf("subscribed = %v", r)
	}
}

// A client that stops reading in the middle of a streamed catch-up holds
// back only itself; if history moves past where it is meanwhile, the
// catch-up ends with caught_up recovered:false at the channel's position
// (the messages sent so far were exact) and live messages follow it.
func TestCatchUpStreamOutrunByHistory(t *testing.T) {
	ts := startServer(t, "epoll", bigHistory)
	const ch = "doc:roll"
	epoch := fill(t, ts, ch, 1000, 7<<10) // 7 MB: more than the socket buffers hold

	// A client with a tiny receive buffer that does not read yet.
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	defer hc.CloseIdleConnections()
	ws, _, err := websocket.Dial(ctx, ts.url(), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(16 << 20)
	sub := fmt.Sprintf(`{"op":"sub","id":1,"ch":%q,"since":{"seq":0,"epoch":%q},"stream":true}`, ch, epoch)
	if err := ws.Write(ctx, websocket.MessageText, []byte(sub)); err != nil {
		t.Fatal(err)
	}
	// The stream stalls on the client's full queue; history rolls past it.
	waitFor(t, 10*time.Second, "the catch-up to start", func() bool {
		_, body := httpGet(t, "http://"+ts.metricsAddr+"/metrics")
		return strings.Contains(body, "syncgate_catchup_streams 1\n")
	})
	fill(t, ts, ch, 1000, 1<<10)

	var seqs []uint64
	var caught map[string]any
	for caught == nil {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(seqs), err)
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("bad line %q: %v", line, err)
			}
			switch m["op"] {
			case "subscribed":
				if m["more"] != true {
					t.Fatalf("subscribed: more = %v", m["more"])
				}
				for _, p := range m["pubs"].([]any) {
					seqs = append(seqs, uint64(p.(map[string]any)["seq"].(float64)))
				}
			case "msg":
				seqs = append(seqs, uint64(m["seq"].(float64)))
			case "caught_up":
				caught = m
			default:
				t.Fatalf("during the catch-up: %v", m)
			}
		}
	}
	if caught["recovered"] != false || caught["seq"] != float64(2000) || caught["epoch"] != epoch {
		t.Fatalf("caught_up = %v", caught)
	}
	if len(seqs) == 0 || len(seqs) >= 1000 {
		t.Fatalf("%d messages before caught_up: the client never stalled", len(seqs))
	}
	checkSeqs(t, seqs, 1, uint64(len(seqs)))
	p := dial(t, ts)
	p.Pub(ch, map[string]any{"i": 2001})
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		if m["op"] == "msg" {
			if m["seq"] != float64(2001) {
				t.Fatalf("live after reset = %v", m)
			}
			return
		}
	}
}

// A client that asks for streamed catch-ups and never reads ties up no
// read worker: with a single one, other clients' commands still run.
func TestCatchUpStreamStalledClientBlocksNoReader(t *testing.T) {
	ts := startServer(t, "epoll", func(c *config.Config) {
		bigHistory(c)
		c.Server.Workers = 1
	})
	var epochs []string
	for i := range 3 {
		epochs = append(epochs, fill(t, ts, fmt.Sprintf("doc:s%d", i), 400, 7<<10)) // 2.8 MB each
	}
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	defer hc.CloseIdleConnections()
	ws, _, err := websocket.Dial(ctx, ts.url(), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	sub := func(i int) {
		t.Helper()
		cmd := fmt.Sprintf(`{"op":"sub","id":%d,"ch":"doc:s%d","since":{"seq":0,"epoch":%q},"stream":true}`, i+1, i, epochs[i])
		if err := ws.Write(ctx, websocket.MessageText, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
	}
	// The first catch-up fills the client's queue and stalls...
	sub(0)
	waitFor(t, 10*time.Second, "the client's queue to fill", func() bool {
		_, body := httpGet(t, "http://"+ts.metricsAddr+"/metrics")
		for line := range strings.SplitSeq(body, "\n") {
			if v, ok := strings.CutPrefix(line, "syncgate_queue_bytes "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f > 32<<10
			}
		}
		return false
	})
	// ...then more subscribes arrive on the stalled connection.
	sub(1)
	sub(2)
	// Another client's command still runs on the node's only read worker.
	other := dial(t, ts)
	if r := other.Call("ping", nil); r == nil || r.Op() != "pong" {
		t.Fatalf("ping = %v", r)
	}
	waitFor(t, 10*time.Second, "the catch-ups to start", func() bool {
		_, body := httpGet(t, "http://"+ts.metricsAddr+"/metrics")
		return strings.Contains(body, "syncgate_catchup_streams 3\n")
	})
}
