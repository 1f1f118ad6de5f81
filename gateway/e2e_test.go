package gateway_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
)

func TestConnectPing(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		c := dial(t, ts)
		r := c.connect("alice")
		if r.str("user") != "alice" || !strings.HasPrefix(r.str("client"), ts.srv.NodeID()+"-") || r.num("ping") != 25 {
			t.Fatalf("connected = %v", r)
		}
		c.mustCall("ping", nil, "pong")
		// connect twice is an error, and the connection stays usable.
		r = c.call("connect", map[string]any{"user": "bob"})
		if r.op() != "error" || r.str("code") != "bad_request" {
			t.Fatalf("second connect = %v", r)
		}
		c.mustCall("ping", nil, "pong")
	})
}

func TestAnonymousWithoutConnect(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		c := dial(t, ts)
		c.sub("doc:1")
		r := c.mustCall("presence", map[string]any{"ch": "doc:1"}, "presence")
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
		a.connect("alice")
		b.connect("bob")
		sa := a.sub("doc:123")
		sb := b.sub("doc:123")
		if sa.num("seq") != 0 || sa.str("epoch") == "" || sa.str("epoch") != sb.str("epoch") {
			t.Fatalf("subscribed: %v / %v", sa, sb)
		}
		if _, ok := sa["recovered"]; ok {
			t.Fatalf("recovered present without since: %v", sa)
		}
		ack := a.pub("doc:123", map[string]any{"text": "hello", "n": 1})
		if ack.num("seq") != 1 || ack.str("ch") != "doc:123" || ack.str("epoch") != sa.str("epoch") {
			t.Fatalf("ack = %v", ack)
		}
		for _, c := range []*client{a, b} {
			m := c.nextOp("msg")
			if m.str("ch") != "doc:123" || m.num("seq") != 1 || m.str("epoch") != sa.str("epoch") || m.str("from") != "alice" {
				t.Fatalf("msg = %v", m)
			}
			if jsonStr(m["data"]) != `{"n":1,"text":"hello"}` {
				t.Fatalf("data = %v", jsonStr(m["data"]))
			}
		}
		// Any JSON value is valid data.
		for i, d := range []string{`"s"`, `3.5e2`, `null`, `[1,{"a":[]}]`, `true`} {
			a.sendRaw(fmt.Sprintf(`{"op":"pub","id":%d,"ch":"doc:123","data":%s}`, 100+i, d))
			m := b.nextOp("msg")
			if jsonStr(m["data"]) != jsonStr(mustJSON(d)) {
				t.Fatalf("data %s arrived as %s", d, jsonStr(m["data"]))
			}
		}
		// unsub: no more messages.
		b.mustCall("unsub", map[string]any{"ch": "doc:123"}, "unsubscribed")
		a.pub("doc:123", "after")
		a.nextOp("msg")
		b.none(200*time.Millisecond, func(o obj) bool { return o.op() == "msg" })
	})
}

func TestOrdering(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		pub, s := dial(t, ts), dial(t, ts)
		s.sub("doc:o")
		const n = 1000
		// Batched: several objects per frame, separated by newlines.
		var batch strings.Builder
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&batch, `{"op":"pub","ch":"doc:o","data":%d}`+"\n", i)
			if i%50 == 0 {
				pub.sendRaw(batch.String())
				batch.Reset()
			}
		}
		for i := 1; i <= n; i++ {
			m := s.nextOp("msg")
			if m.num("seq") != uint64(i) || m.num("data") != uint64(i) {
				t.Fatalf("message %d: %v", i, m)
			}
		}
	})
}

func TestConcurrentPublishers(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		const pubs, each, subs = 4, 250, 3
		var ss []*client
		for range subs {
			c := dial(t, ts)
			c.sub("doc:c")
			ss = append(ss, c)
		}
		var wg sync.WaitGroup
		for p := range pubs {
			c := dial(t, ts)
			c.connect(fmt.Sprintf("p%d", p))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					c.sendRaw(fmt.Sprintf(`{"op":"pub","ch":"doc:c","data":"%d-%d"}`, p, i))
				}
			}()
		}
		wg.Wait()
		var first []string
		for k, c := range ss {
			var got []string
			perPub := map[string]int{}
			for i := 1; i <= pubs*each; i++ {
				m := c.nextOp("msg")
				if m.num("seq") != uint64(i) {
					t.Fatalf("subscriber %d: seq %d at position %d", k, m.num("seq"), i)
				}
				d := m.str("data")
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
		ca := a.connect("alice")
		cb := b.connect("bob")
		cc := c.connect("carol")
		a.sub("doc:p")
		b.sub("doc:p")
		j := a.nextOp("join")
		if j.str("user") != "bob" || j.str("client") != cb.str("client") || j.str("ch") != "doc:p" {
			t.Fatalf("join = %v", j)
		}
		c.sub("doc:p")
		a.nextOp("join")
		b.nextOp("join")
		// Nobody gets a join for themselves.
		c.none(100*time.Millisecond, func(o obj) bool { return o.op() == "join" })

		r := a.mustCall("presence", map[string]any{"ch": "doc:p"}, "presence")
		got := map[string]string{}
		for _, u := range r["users"].([]any) {
			m := u.(map[string]any)
			got[m["client"].(string)] = m["user"].(string)
		}
		want := map[string]string{ca.str("client"): "alice", cb.str("client"): "bob", cc.str("client"): "carol"}
		if jsonStr(got) != jsonStr(want) {
			t.Fatalf("presence = %v, want %v", got, want)
		}

		// unsub -> leave
		b.mustCall("unsub", map[string]any{"ch": "doc:p"}, "unsubscribed")
		for _, x := range []*client{a, c} {
			l := x.nextOp("leave")
			if l.str("user") != "bob" || l.str("client") != cb.str("client") {
				t.Fatalf("leave = %v", l)
			}
		}
		// abrupt TCP close -> leave
		c.close()
		l := a.nextOp("leave")
		if l.str("client") != cc.str("client") {
			t.Fatalf("leave = %v", l)
		}
		r = a.mustCall("presence", map[string]any{"ch": "doc:p"}, "presence")
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
			a.sub("doc:x")
			b.sub("doc:x")
			a.none(200*time.Millisecond, func(o obj) bool { return o.op() == "join" })
			// presence still answers
			r := a.mustCall("presence", map[string]any{"ch": "doc:x"}, "presence")
			if len(r["users"].([]any)) != 2 {
				t.Fatalf("presence = %v", r)
			}
		})
		t.Run("limit", func(t *testing.T) {
			ts := startServer(t, mode, func(c *config.Config) { c.Presence.JoinLeaveLimit = 2 })
			a, b, c := dial(t, ts), dial(t, ts), dial(t, ts)
			a.sub("doc:x")
			b.sub("doc:x")
			a.nextOp("join") // 2 subscribers: at the limit, events flow
			c.sub("doc:x")   // 3 > 2: suppressed
			a.none(200*time.Millisecond, func(o obj) bool { return o.op() == "join" })
		})
	})
}

func TestHeartbeatTimeout(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		// 2 s: the pinging client (every 300 ms) keeps a wide margin on a
		// loaded machine; the silent one is cut after 4-5 s.
		ts := startServer(t, mode, func(c *config.Config) { c.Client.PingInterval = 2 * time.Second })
		a, silent := dial(t, ts), dial(t, ts)
		a.sub("doc:h")
		cs := silent.connect("sleepy")
		silent.sub("doc:h")
		a.nextOp("join")
		// a keeps pinging; silent sends nothing more.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(300 * time.Millisecond):
					a.sendRaw(`{"op":"ping"}`)
				}
			}
		}()
		d := silent.nextOp("disconnect")
		if d.str("code") != "timeout" || d["reconnect"] != true {
			t.Fatalf("disconnect = %v", d)
		}
		silent.waitClosed()
		l := a.nextOp("leave")
		if l.str("client") != cs.str("client") {
			t.Fatalf("leave = %v", l)
		}
		if a.isClosed() {
			t.Fatal("the pinging client was disconnected")
		}
	})
}

func (c *client) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func TestHealthAndReady(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		code, body := httpGet(t, "http://"+ts.addr+"/healthz")
		if code != 200 || !strings.Contains(body, `"status":"ok"`) || !strings.Contains(body, `"io":"`+mode+`"`) {
			t.Fatalf("healthz: %d %s", code, body)
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
