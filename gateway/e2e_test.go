package gateway_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

func TestConnectPing(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		c := dial(t, ts)
		r := c.Connect("alice")
		if r.Str("user") != "alice" || !strings.HasPrefix(r.Str("client"), ts.srv.NodeID()+"-") || r.Num("ping") != 25 {
			t.Fatalf("connected = %v", r)
		}
		c.MustCall("ping", nil, "pong")
		// connect twice is an error, and the connection stays usable.
		r = c.Call("connect", map[string]any{"user": "bob"})
		if r.Op() != "error" || r.Str("code") != "bad_request" {
			t.Fatalf("second connect = %v", r)
		}
		c.MustCall("ping", nil, "pong")
	})
}

func TestAnonymousWithoutConnect(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		c := dial(t, ts)
		c.Sub("doc:1")
		r := c.MustCall("presence", map[string]any{"ch": "doc:1"}, "presence")
		users := r["users"].([]any)
		if len(users) != 1 || !strings.HasPrefix(users[0].(map[string]any)["user"].(string), "anon-") {
			t.Fatalf("presence = %v", r)
		}
	})
}

func TestPubSub(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		a, b := dial(t, ts), dial(t, ts)
		a.Connect("alice")
		b.Connect("bob")
		sa := a.Sub("doc:123")
		sb := b.Sub("doc:123")
		if sa.Num("seq") != 0 || sa.Str("epoch") == "" || sa.Str("epoch") != sb.Str("epoch") {
			t.Fatalf("subscribed: %v / %v", sa, sb)
		}
		if _, ok := sa["recovered"]; ok {
			t.Fatalf("recovered present without since: %v", sa)
		}
		ack := a.Pub("doc:123", map[string]any{"text": "hello", "n": 1})
		if ack.Num("seq") != 1 || ack.Str("ch") != "doc:123" || ack.Str("epoch") != sa.Str("epoch") {
			t.Fatalf("ack = %v", ack)
		}
		for _, c := range []*wstest.Client{a, b} {
			m := c.NextOp("msg")
			if m.Str("ch") != "doc:123" || m.Num("seq") != 1 || m.Str("epoch") != sa.Str("epoch") || m.Str("from") != "alice" {
				t.Fatalf("msg = %v", m)
			}
			if jsonStr(m["data"]) != `{"n":1,"text":"hello"}` {
				t.Fatalf("data = %v", jsonStr(m["data"]))
			}
		}
		// Any JSON value is valid data.
		for i, d := range []string{`"s"`, `3.5e2`, `null`, `[1,{"a":[]}]`, `true`} {
			a.SendRaw(fmt.Sprintf(`{"op":"pub","id":%d,"ch":"doc:123","data":%s}`, 100+i, d))
			m := b.NextOp("msg")
			if jsonStr(m["data"]) != jsonStr(mustJSON(d)) {
				t.Fatalf("data %s arrived as %s", d, jsonStr(m["data"]))
			}
		}
		// unsub: no more messages.
		b.MustCall("unsub", map[string]any{"ch": "doc:123"}, "unsubscribed")
		a.Pub("doc:123", "after")
		a.NextOp("msg")
		b.None(200*time.Millisecond, func(o wstest.Msg) bool { return o.Op() == "msg" })
	})
}

func TestOrdering(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		pub, s := dial(t, ts), dial(t, ts)
		s.Sub("doc:o")
		const n = 1000
		// Batched: several objects per frame, separated by newlines.
		var batch strings.Builder
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&batch, `{"op":"pub","ch":"doc:o","data":%d}`+"\n", i)
			if i%50 == 0 {
				pub.SendRaw(batch.String())
				batch.Reset()
			}
		}
		for i := 1; i <= n; i++ {
			m := s.NextOp("msg")
			if m.Num("seq") != uint64(i) || m.Num("data") != uint64(i) {
				t.Fatalf("message %d: %v", i, m)
			}
		}
	})
}

func TestConcurrentPublishers(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		const pubs, each, subs = 4, 250, 3
		var ss []*wstest.Client
		for range subs {
			c := dial(t, ts)
			c.Sub("doc:c")
			ss = append(ss, c)
		}
		var wg sync.WaitGroup
		for p := range pubs {
			c := dial(t, ts)
			c.Connect(fmt.Sprintf("p%d", p))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					c.SendRaw(fmt.Sprintf(`{"op":"pub","ch":"doc:c","data":"%d-%d"}`, p, i))
				}
			}()
		}
		wg.Wait()
		var first []string
		for k, c := range ss {
			var got []string
			perPub := map[string]int{}
			for i := 1; i <= pubs*each; i++ {
				m := c.NextOp("msg")
				if m.Num("seq") != uint64(i) {
					t.Fatalf("subscriber %d: seq %d at position %d", k, m.Num("seq"), i)
				}
				d := m.Str("data")
				got = append(got, d)
				var p, n int
				fmt.Sscanf(d, "%d-%d", &p, &n)
				if n != perPub[d[:1]] {
					t.Fatalf("publisher %d's messages out of order: %s", p, d)
				}
				perPub[d[:1]]++
			}
			if k == 0 {
				first = got
			} else if strings.Join(got, ",") != strings.Join(first, ",") {
				t.Fatalf("subscriber %d saw a different order", k)
			}
		}
	})
}

func TestPresenceJoinLeave(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		a, b, c := dial(t, ts), dial(t, ts), dial(t, ts)
		ca := a.Connect("alice")
		cb := b.Connect("bob")
		cc := c.Connect("carol")
		a.Sub("doc:p")
		b.Sub("doc:p")
		j := a.NextOp("join")
		if j.Str("user") != "bob" || j.Str("client") != cb.Str("client") || j.Str("ch") != "doc:p" {
			t.Fatalf("join = %v", j)
		}
		c.Sub("doc:p")
		a.NextOp("join")
		b.NextOp("join")
		// Nobody gets a join for themselves.
		c.None(100*time.Millisecond, func(o wstest.Msg) bool { return o.Op() == "join" })

		r := a.MustCall("presence", map[string]any{"ch": "doc:p"}, "presence")
		got := map[string]string{}
		for _, u := range r["users"].([]any) {
			m := u.(map[string]any)
			got[m["client"].(string)] = m["user"].(string)
		}
		want := map[string]string{ca.Str("client"): "alice", cb.Str("client"): "bob", cc.Str("client"): "carol"}
		if jsonStr(got) != jsonStr(want) {
			t.Fatalf("presence = %v, want %v", got, want)
		}

		// unsub -> leave
		b.MustCall("unsub", map[string]any{"ch": "doc:p"}, "unsubscribed")
		for _, x := range []*wstest.Client{a, c} {
			l := x.NextOp("leave")
			if l.Str("user") != "bob" || l.Str("client") != cb.Str("client") {
				t.Fatalf("leave = %v", l)
			}
		}
		// abrupt TCP close -> leave
		c.Close()
		l := a.NextOp("leave")
		if l.Str("client") != cc.Str("client") {
			t.Fatalf("leave = %v", l)
		}
		r = a.MustCall("presence", map[string]any{"ch": "doc:p"}, "presence")
		if n := len(r["users"].([]any)); n != 1 {
			t.Fatalf("presence after leaves = %v", r)
		}
	})
}

func TestJoinLeaveSwitches(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		t.Run("off", func(t *testing.T) {
			ts := startServer(t, mode, func(c *config.Config) { c.Presence.JoinLeave = false })
			a, b := dial(t, ts), dial(t, ts)
			a.Sub("doc:x")
			b.Sub("doc:x")
			a.None(200*time.Millisecond, func(o wstest.Msg) bool { return o.Op() == "join" })
			// presence still answers
			r := a.MustCall("presence", map[string]any{"ch": "doc:x"}, "presence")
			if len(r["users"].([]any)) != 2 {
				t.Fatalf("presence = %v", r)
			}
		})
		t.Run("limit", func(t *testing.T) {
			ts := startServer(t, mode, func(c *config.Config) { c.Presence.JoinLeaveLimit = 2 })
			a, b, c := dial(t, ts), dial(t, ts), dial(t, ts)
			a.Sub("doc:x")
			b.Sub("doc:x")
			a.NextOp("join") // 2 subscribers: at the limit, events flow
			c.Sub("doc:x")   // 3 > 2: suppressed
			a.None(200*time.Millisecond, func(o wstest.Msg) bool { return o.Op() == "join" })
		})
	})
}

func TestHeartbeatTimeout(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		// 2 s: the pinging client (every 300 ms) keeps a wide margin on a
		// loaded machine; the silent one is cut after 4-6 s.
		ts := startServer(t, mode, func(c *config.Config) { c.Client.PingInterval = 2 * time.Second })
		a, silent := dial(t, ts), dial(t, ts)
		a.Sub("doc:h")
		cs := silent.Connect("sleepy")
		silent.Sub("doc:h")
		// silent's last frame (the sub) was read before its reply came back.
		lastFrame := time.Now()
		a.NextOp("join")
		// a keeps pinging; silent sends nothing more.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(300 * time.Millisecond):
					a.SendRaw(`{"op":"ping"}`)
				}
			}
		}()
		d := silent.NextOp("disconnect")
		silence := time.Since(lastFrame)
		if d.Str("code") != "timeout" || d["reconnect"] != true {
			t.Fatalf("disconnect = %v", d)
		}
		// The bound docs/security.md states: cut after 2x ping_interval of
		// silence, not before; no later than 2x + 3 s (whole-second clock,
		// a sweep every second, a loaded machine).
		if silence < 4*time.Second-100*time.Millisecond || silence > 7*time.Second {
			t.Fatalf("silent client cut after %v, want 4 s (2x ping_interval) to 7 s", silence)
		}
		silent.WaitClosed()
		l := a.NextOp("leave")
		if l.Str("client") != cs.Str("client") {
			t.Fatalf("leave = %v", l)
		}
		if a.IsClosed() {
			t.Fatal("the pinging client was disconnected")
		}
		// Counted where docs/security.md says.
		assertMetric(t, ts, `syncgate_disconnects_total{code="timeout"}`, 1)
	})
}

func TestHealthAndReady(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		c := dial(t, ts)
		c.Connect("alice")
		code, body := httpGet(t, "http://"+ts.addr+"/healthz")
		if code != 200 || !strings.Contains(body, `"status":"ok"`) || !strings.Contains(body, `"io":"`+mode+`"`) {
			t.Fatalf("healthz: %d %s", code, body)
		}
		// The documented fields: node id, connection and goroutine counts.
		var h struct {
			Node        string `json:"node"`
			Connections *int   `json:"connections"`
			Goroutines  int    `json:"goroutines"`
		}
		if err := json.Unmarshal([]byte(body), &h); err != nil || h.Node != ts.srv.NodeID() || h.Node == "" ||
			h.Connections == nil || *h.Connections != 1 || h.Goroutines <= 0 {
			t.Fatalf("healthz fields: %s (%v), want node %q, connections 1, goroutines > 0", body, err, ts.srv.NodeID())
		}
		code, body = httpGet(t, "http://"+ts.addr+"/readyz")
		if code != 200 {
			t.Fatalf("readyz: %d %s", code, body)
		}
		code, _ = httpGet(t, "http://"+ts.addr+"/nope")
		if code != 404 {
			t.Fatalf("unknown path: %d", code)
		}
	})
}
