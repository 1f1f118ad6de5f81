package gateway_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// proxyCall is one request a test backend received.
type proxyCall struct {
	Client    string            `json:"client"`
	User      string            `json:"user"`
	Ch        string            `json:"ch"`
	Data      json.RawMessage   `json:"data"`
	Transport string            `json:"transport"`
	Remote    string            `json:"remote_addr"`
	Headers   map[string]string `json:"headers"`
	Cookies   map[string]string `json:"cookies"`
}

// backend is a real HTTP event proxy backend on a loopback port; answer
// writes the response to each call.
type backend struct {
	*httptest.Server
	mu    sync.Mutex
	calls []proxyCall
}

func newBackend(t testing.TB, answer func(w http.ResponseWriter, c proxyCall)) *backend {
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c proxyCall
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want a JSON POST", http.StatusBadRequest)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.calls = append(b.calls, c)
		b.mu.Unlock()
		answer(w, c)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) received() []proxyCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]proxyCall(nil), b.calls...)
}

// metric returns the value of one exposition line of /metrics (0 if absent).
func metric(t testing.TB, ts *testServer, line string) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+ts.metricsAddr+"/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(line) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestProxyPublish: allow, replace (subscribers see the backend's data,
// compact), deny with the backend's code and message, an unknown code
// mapped to forbidden with its message bounded and sanitized; the request
// carries client, user, ch, data and transport.
func TestProxyPublish(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		be := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
			var d map[string]string
			_ = json.Unmarshal(c.Data, &d)
			switch d["x"] {
			case "replace":
				io.WriteString(w, `{"data": { "y" : [1, 2], "by": "backend" }}`)
			case "deny":
				io.WriteString(w, `{"error":{"code":"rate_limited","message":"slow down"}}`)
			case "odd":
				io.WriteString(w, `{"error":{"code":"teapot","message":"`+strings.Repeat("é", 300)+`\n\u2028\u0007"}}`)
			default:
				io.WriteString(w, `{}`)
			}
		})
		ts := startServer(t, mode, func(c *config.Config) { c.Proxy.Publish.URL = be.URL })
		sub, pub := dial(t, ts), dial(t, ts)
		sub.Connect("reader")
		sub.Sub("doc:1")
		conn := pub.Connect("writer")

		pub.Pub("doc:1", map[string]any{"x": "allow"})
		if m := sub.NextOp("msg"); jsonStr(m["data"]) != `{"x":"allow"}` {
			t.Fatalf("allowed msg %v", m)
		}
		pub.Pub("doc:1", map[string]any{"x": "replace"})
		m := sub.NextOp("msg")
		if jsonStr(m["data"]) != `{"by":"backend","y":[1,2]}` || m.Num("seq") != 2 || m.Str("from") != "writer" {
			t.Fatalf("replaced msg %v", m)
		}
		r := pub.MustCall("pub", map[string]any{"ch": "doc:1", "data": map[string]any{"x": "deny"}}, "error")
		if r.Str("code") != "rate_limited" || r.Str("message") != "slow down" {
			t.Fatalf("deny: %v", r)
		}
		r = pub.MustCall("pub", map[string]any{"ch": "doc:1", "data": map[string]any{"x": "odd"}}, "error")
		if msg := r.Str("message"); r.Str("code") != "forbidden" || len(msg) > 256 || strings.ContainsAny(msg, "\n\u2028\a") || !strings.HasPrefix(msg, "éé") {
			t.Fatalf("odd deny: %v (%d bytes)", r, len(r.Str("message")))
		}
		sub.None(100*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })

		calls := be.received()
		if len(calls) != 4 {
			t.Fatalf("backend got %d calls, want 4", len(calls))
		}
		c := calls[0]
		if c.Client != conn.Str("client") || c.User != "writer" || c.Ch != "doc:1" || string(c.Data) != `{"x":"allow"}` || c.Transport != "websocket" || c.Remote != "" {
			t.Fatalf("request %+v", c)
		}
		if v := metric(t, ts, `syncgate_proxy_errors_total{hook="publish",reason="denied"}`); v != 2 {
			t.Fatalf("denied count %v, want 2", v)
		}
		if v := metric(t, ts, `syncgate_proxy_duration_seconds_count{hook="publish"}`); v != 4 {
			t.Fatalf("publish latency count %v, want 4", v)
		}
	})
}

// TestProxyFailClosed: every way a backend can fail gives the client
// `unavailable`, nothing is published, and each is counted by reason.
func TestProxyFailClosed(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
		switch c.Ch {
		case "bad:json":
			io.WriteString(w, `{"data": `)
		case "bad:array":
			io.WriteString(w, `[]`)
		case "bad:status":
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{}`)
		case "bad:big":
			io.WriteString(w, `{"pad":"`+strings.Repeat("x", 200<<10)+`"}`)
		case "bad:data":
			io.WriteString(w, `{"data":"`+strings.Repeat("x", 2000)+`"}`)
		case "bad:slow":
			time.Sleep(1500 * time.Millisecond)
			io.WriteString(w, `{}`)
		}
	})
	// A closed port: connection refused.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + ln.Addr().String() + "/publish"
	ln.Close()

	ts := startServer(t, "epoll", func(c *config.Config) {
		c.Proxy.Publish.URL = be.URL
		c.Proxy.Publish.Timeout = 300 * time.Millisecond
		c.Client.MaxMessageSize = 1024
		c.Server.MaxPartialBytes = 4096
	})
	tsDown := startServer(t, "epoll", func(c *config.Config) { c.Proxy.Publish.URL = down })
	cl := dial(t, ts)
	cl.Connect("u")
	cl.Sub("bad:json")
	for _, ch := range []string{"bad:json", "bad:array", "bad:status", "bad:big", "bad:data", "bad:slow"} {
		r := cl.MustCall("pub", map[string]any{"ch": ch, "data": 1}, "error")
		if r.Str("code") != "unavailable" || r.Str("message") != "publish proxy unavailable, try again" {
			t.Fatalf("%s: %v", ch, r)
		}
	}
	cl.None(100*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })
	for reason, want := range map[string]float64{"bad_json": 2, "status": 1, "too_large": 1, "bad_data": 1, "timeout": 1} {
		if v := metric(t, ts, `syncgate_proxy_errors_total{hook="publish",reason="`+reason+`"}`); v != want {
			t.Errorf("reason %s counted %v, want %v", reason, v, want)
		}
	}
	cd := dial(t, tsDown)
	cd.Connect("u")
	if r := cd.MustCall("pub", map[string]any{"ch": "a", "data": 1}, "error"); r.Str("code") != "unavailable" {
		t.Fatalf("backend down: %v", r)
	}
	if v := metric(t, tsDown, `syncgate_proxy_errors_total{hook="publish",reason="unreachable"}`); v != 1 {
		t.Fatalf("unreachable counted %v", v)
	}
}

// TestProxySlowBackendBlocksNoOne: with one read worker, a client whose
// publish waits for a backend that never answers in time does not hold up
// another client's traffic: the other's 50 round trips all complete while
// the slow call is pending (the order of arrival says so, not a clock),
// and the slow client's later command is answered after its error, in
// order.
func TestProxySlowBackendBlocksNoOne(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
		if c.Ch == "slow" {
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
		}
		io.WriteString(w, `{}`)
	})
	t.Cleanup(func() { close(release) })
	ts := startServer(t, "epoll", func(c *config.Config) {
		c.Server.Workers = 1
		c.Proxy.Publish.URL = be.URL
		c.Proxy.Publish.Timeout = 2 * time.Second
	})
	slow, fast := dial(t, ts), dial(t, ts)
	slow.Connect("slow")
	fast.Connect("fast")
	fast.Sub("fast")
	// The slow pub and a ping behind it, in one frame.
	slow.SendRaw(`{"op":"pub","id":10,"ch":"slow","data":1}` + "\n" + `{"op":"ping","id":11}`)
	waitFor(t, 2*time.Second, "the slow call to reach the backend", func() bool { return len(be.received()) == 1 })
	for i := range 50 {
		if i%2 == 0 {
			fast.MustCall("ping", nil, "pong")
		} else {
			fast.Pub("fast", i)
		}
	}
	if m := slow.TryNext(10*time.Millisecond, func(wstest.Msg) bool { return true }); m != nil {
		t.Fatalf("the slow client was answered (%v) before its backend call ended", m)
	}
	r := slow.NextWithin(3*time.Second, "the slow pub's error", func(wstest.Msg) bool { return true })
	if r.Num("id") != 10 || r.Str("code") != "unavailable" {
		t.Fatalf("slow pub: %v", r)
	}
	if p := slow.NextWithin(time.Second, "the pong", func(wstest.Msg) bool { return true }); p.Op() != "pong" || p.Num("id") != 11 {
		t.Fatalf("after the error: %v", p)
	}
}

// TestProxyOrder: commands batched behind a proxied one are answered in the
// order sent, a malformed one included.
func TestProxyOrder(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		be := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
			time.Sleep(20 * time.Millisecond)
			io.WriteString(w, `{}`)
		})
		ts := startServer(t, mode, func(c *config.Config) {
			c.Proxy.Publish.URL = be.URL
			c.Proxy.Subscribe.URL = be.URL
		})
		cl := dial(t, ts)
		cl.Connect("u")
		cl.SendRaw(strings.Join([]string{
			`{"op":"pub","id":1,"ch":"o","data":1}`,
			`{"op":"ping","id":2}`,
			`{"op":"sub","id":3,"ch":"o"}`,
			`{"op":"ping","id":4,"ch":5`,
			`{"op":"pub","id":5,"ch":"o","data":2}`,
			`{"op":"ping","id":6}`,
		}, "\n"))
		var ids []uint64
		for len(ids) < 6 {
			m := cl.NextWithin(3*time.Second, "replies", func(m wstest.Msg) bool { return m.Num("id") > 0 })
			ids = append(ids, m.Num("id"))
		}
		if jsonStr(ids) != `[1,2,3,4,5,6]` {
			t.Fatalf("reply order %v", ids)
		}
	})
}

// TestProxyConcurrencyBound: with proxy.max_concurrency 1, a second call
// waits for the slot and, not getting it within its timeout, fails with
// unavailable (reason concurrency); the backend never sees two at once.
func TestProxyConcurrencyBound(t *testing.T) {
	var inFlight, most atomic.Int32
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		if n > most.Load() {
			most.Store(n)
		}
		if c.Ch == "hold" {
			<-release
		}
		io.WriteString(w, `{}`)
	})
	ts := startServer(t, "epoll", func(c *config.Config) {
		c.Proxy.Publish.URL = be.URL
		c.Proxy.Publish.Timeout = 3 * time.Second
		c.Proxy.Subscribe.URL = be.URL
		c.Proxy.Subscribe.Timeout = 200 * time.Millisecond
		c.Proxy.MaxConcurrency = 1
	})
	a, b := dial(t, ts), dial(t, ts)
	a.Connect("a")
	b.Connect("b")
	a.Send(map[string]any{"op": "pub", "id": 1, "ch": "hold", "data": 1})
	waitFor(t, 2*time.Second, "the held call", func() bool { return inFlight.Load() == 1 })
	if r := b.MustCall("sub", map[string]any{"ch": "x"}, "error"); r.Str("code") != "unavailable" {
		t.Fatalf("sub without a slot: %v", r)
	}
	close(release)
	if r := a.NextOp("ack"); r.Num("id") != 1 {
		t.Fatalf("held pub: %v", r)
	}
	b.Sub("x") // the slot is free again
	if most.Load() != 1 {
		t.Fatalf("backend saw %d calls at once", most.Load())
	}
	if v := metric(t, ts, `syncgate_proxy_errors_total{hook="subscribe",reason="concurrency"}`); v != 1 {
		t.Fatalf("concurrency counted %v", v)
	}
}

// TestProxySubscribe: the subscribe hook runs after the static checks and
// its deny reaches the client; allowed channels subscribe.
func TestProxySubscribe(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		be := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
			if strings.HasPrefix(c.Ch, "secret:") {
				io.WriteString(w, `{"error":{"code":"forbidden","message":"not shared with `+c.User+`"}}`)
				return
			}
			io.WriteString(w, `{}`)
		})
		ts := startServer(t, mode, func(c *config.Config) {
			c.Proxy.Subscribe.URL = be.URL
			c.Proxy.RemoteAddr = true
		})
		cl := dial(t, ts)
		cl.Connect("bob")
		cl.Sub("doc:1")
		if c := be.received()[0]; c.User != "bob" || c.Ch != "doc:1" || !strings.HasPrefix(c.Remote, "127.0.0.1:") {
			t.Fatalf("subscribe call %+v: want bob, doc:1 and the loopback remote address", c)
		}
		r := cl.MustCall("sub", map[string]any{"ch": "secret:1"}, "error")
		if r.Str("code") != "forbidden" || r.Str("message") != "not shared with bob" {
			t.Fatalf("deny: %v", r)
		}
		// Invalid names never reach the backend.
		cl.MustCall("sub", map[string]any{"ch": "bad name"}, "error")
		if n := len(be.received()); n != 2 {
			t.Fatalf("backend got %d calls, want 2", n)
		}
	})
}

const appOrigin = "https://app.example.com"

// cookieServer runs a node whose connect hook authenticates by the
// "session" cookie: sid-alice is alice with doc:* to read and doc:1 to
// write; anything else is unauthorized.
func cookieServer(t *testing.T, mode string, edit func(*config.Config)) (*testServer, *backend) {
	be := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
		if c.Cookies["session"] != "sid-alice" {
			io.WriteString(w, `{"error":{"code":"unauthorized","message":"no session"}}`)
			return
		}
		io.WriteString(w, `{"user":"alice","channels":{"sub":["doc:*"],"pub":["doc:1"]}}`)
	})
	ts := startServer(t, mode, func(c *config.Config) {
		c.Proxy.Connect.URL = be.URL
		c.Proxy.Connect.Cookies = []string{"session"}
		c.Proxy.Connect.Headers = []string{"User-Agent"}
		c.Server.AllowedOrigins = []string{appOrigin}
		if edit != nil {
			edit(c)
		}
	})
	return ts, be
}

func cookieHeader(origin, sid string) http.Header {
	h := http.Header{"Cookie": {"session=" + sid + "; other=x"}, "User-Agent": {"proxy-test"}}
	if origin != "" {
		h.Set("Origin", origin)
	}
	return h
}

// TestProxyConnectCookieSession: a browser-like client with a session
// cookie and no JWT connects as the user the backend names, with the
// backend's permissions; the backend sees the forwarded cookie and header
// only (not the other cookie).
func TestProxyConnectCookieSession(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts, be := cookieServer(t, mode, nil)
		cl, err := wstest.DialHeader(t, ts.url(), cookieHeader(appOrigin, "sid-alice"))
		if err != nil {
			t.Fatal(err)
		}
		if r := cl.MustCall("sub", map[string]any{"ch": "doc:1"}, "error"); r.Str("code") != "unauthorized" {
			t.Fatalf("sub before connect: %v", r)
		}
		c := cl.MustCall("connect", map[string]any{"user": "mallory"}, "connected")
		if c.Str("user") != "alice" {
			t.Fatalf("connected %v, want alice (the backend's user, not the client's)", c)
		}
		cl.Sub("doc:7")
		cl.Pub("doc:1", "hi")
		if r := cl.MustCall("pub", map[string]any{"ch": "doc:7", "data": 1}, "error"); r.Str("code") != "forbidden" {
			t.Fatalf("pub outside the backend's permissions: %v", r)
		}
		if r := cl.MustCall("sub", map[string]any{"ch": "chat:1"}, "error"); r.Str("code") != "forbidden" {
			t.Fatalf("sub outside the backend's permissions: %v", r)
		}
		calls := be.received()
		if len(calls) != 1 || calls[0].Transport != "websocket" || calls[0].User != "" ||
			jsonStr(calls[0].Cookies) != `{"session":"sid-alice"}` || jsonStr(calls[0].Headers) != `{"User-Agent":"proxy-test"}` {
			t.Fatalf("connect calls %+v", calls)
		}

		bad, err := wstest.DialHeader(t, ts.url(), cookieHeader(appOrigin, "stolen"))
		if err != nil {
			t.Fatal(err)
		}
		if r := bad.MustCall("connect", nil, "error"); r.Str("code") != "unauthorized" || r.Str("message") != "no session" {
			t.Fatalf("bad session: %v", r)
		}
	})
}

// TestProxyCookieHijackRefused reproduces cross-site WebSocket hijacking:
// a page on another origin opens a WebSocket to the node; the browser
// attaches the victim's session cookie. The upgrade is refused (403), as
// is one with the cookie and no Origin at all, and the backend is never
// asked. The same over SSE and POST /pub.
func TestProxyCookieHijackRefused(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts, be := cookieServer(t, mode, func(c *config.Config) { c.Proxy.Publish.URL = "http://127.0.0.1:1/unused" })
		for _, origin := range []string{"https://evil.example", ""} {
			_, err := wstest.DialHeader(t, ts.url(), cookieHeader(origin, "sid-alice"))
			if err == nil || !strings.Contains(err.Error(), "status 403") {
				t.Fatalf("origin %q with the victim's cookie: err %v, want a 403", origin, err)
			}
			if _, code := openSSE(t, ts, "ch=doc:1", cookieHeader(origin, "sid-alice")); code != http.StatusForbidden {
				t.Fatalf("SSE from origin %q: %d, want 403", origin, code)
			}
			if code, _ := postPub(t, ts, "", `{"ch":"doc:1","data":1}`, cookieHeader(origin, "sid-alice")); code != http.StatusForbidden {
				t.Fatalf("POST /pub from origin %q: %d, want 403", origin, code)
			}
		}
		if n := len(be.received()); n != 0 {
			t.Fatalf("backend asked %d times for hijacked requests", n)
		}
		// The app's own origin works.
		cl, err := wstest.DialHeader(t, ts.url(), cookieHeader(appOrigin, "sid-alice"))
		if err != nil {
			t.Fatal(err)
		}
		cl.MustCall("connect", nil, "connected")
		if v := metric(t, ts, `syncgate_limit_rejections_total{kind="origin"}`); v < 6 {
			t.Fatalf("origin rejections %v, want >= 6", v)
		}
	})
}

// TestProxySSECookieSession: SSE and POST /pub authenticate through the
// connect hook too, and POST /pub goes through the publish hook.
func TestProxySSECookieSession(t *testing.T) {
	pubBE := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
		io.WriteString(w, `{"data":{"replaced":true}}`)
	})
	ts, be := cookieServer(t, "epoll", func(c *config.Config) { c.Proxy.Publish.URL = pubBE.URL })
	s, code := openSSE(t, ts, "ch=doc:1", cookieHeader(appOrigin, "sid-alice"))
	if code != 200 {
		t.Fatalf("SSE: %d", code)
	}
	s.nextEvent("subscribed")
	if _, code := openSSE(t, ts, "ch=chat:1", cookieHeader(appOrigin, "sid-alice")); code != http.StatusForbidden {
		t.Fatalf("SSE outside permissions: %d", code)
	}
	if code, r := postPub(t, ts, "", `{"ch":"doc:1","data":{"x":1}}`, cookieHeader(appOrigin, "nobody")); code != 401 || r.Str("code") != "unauthorized" {
		t.Fatalf("POST /pub without a session: %d %v", code, r)
	}
	if code, r := postPub(t, ts, "", `{"ch":"doc:1","data":{"x":1}}`, cookieHeader(appOrigin, "sid-alice")); code != 200 || r.Op() != "ack" {
		t.Fatalf("POST /pub: %d %v", code, r)
	}
	m := s.nextEvent("msg")
	if m.data.Str("from") != "alice" || jsonStr(m.data["data"]) != `{"replaced":true}` {
		t.Fatalf("SSE msg %+v", m)
	}
	calls := be.received()
	if len(calls) < 3 || calls[0].Transport != "sse" || calls[len(calls)-1].Transport != "http" {
		t.Fatalf("connect calls %+v", calls)
	}
	if pc := pubBE.received(); len(pc) != 1 || pc[0].User != "alice" || pc[0].Transport != "http" {
		t.Fatalf("publish calls %+v", pc)
	}
}

// TestProxyRefresh: a proxy-admitted connection is refreshed every
// proxy.refresh.interval; a refresh answer's channels replace the
// permissions, and a deny disconnects with the backend's code and message.
func TestProxyRefresh(t *testing.T) {
	var n atomic.Int32
	refresh := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
		if n.Add(1) == 1 {
			io.WriteString(w, `{"channels":{"sub":["doc:*","chat:*"],"pub":[]}}`)
			return
		}
		io.WriteString(w, `{"error":{"code":"forbidden","message":"session revoked"}}`)
	})
	ts, _ := cookieServer(t, "epoll", func(c *config.Config) {
		c.Proxy.Refresh.URL = refresh.URL
		c.Proxy.Refresh.Cookies = []string{"session"}
		c.Proxy.RefreshInterval = time.Second
	})
	cl, err := wstest.DialHeader(t, ts.url(), cookieHeader(appOrigin, "sid-alice"))
	if err != nil {
		t.Fatal(err)
	}
	cl.MustCall("connect", nil, "connected")
	cl.MustCall("sub", map[string]any{"ch": "chat:1"}, "error")
	waitFor(t, 5*time.Second, "the first refresh", func() bool { return n.Load() >= 1 })
	waitFor(t, 2*time.Second, "new permissions", func() bool {
		r := cl.Call("sub", map[string]any{"ch": "chat:1"})
		return r.Op() == "subscribed"
	})
	if r := cl.MustCall("pub", map[string]any{"ch": "doc:1", "data": 1}, "error"); r.Str("code") != "forbidden" {
		t.Fatalf("pub after refresh took it away: %v", r)
	}
	d := cl.NextWithin(5*time.Second, "the disconnect", func(m wstest.Msg) bool { return m.Op() == "disconnect" })
	if d.Str("code") != "forbidden" || d.Str("reason") != "session revoked" || d["reconnect"] != false {
		t.Fatalf("disconnect %v", d)
	}
	if c := refresh.received(); c[0].User != "alice" || c[0].Cookies["session"] != "sid-alice" {
		t.Fatalf("refresh call %+v", c[0])
	}
}

// TestProxyRefreshUnavailable: when the refresh hook fails (here the
// backend answers 503) the session cannot be renewed, and it is not
// denied either: the client gets `disconnect` `unavailable` with
// `reconnect: true` and close status 1013 (try again later), and the
// failed call is counted by reason (docs/protocol.md, docs/integration.md).
func TestProxyRefreshUnavailable(t *testing.T) {
	refresh := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
		http.Error(w, "backend restarting", http.StatusServiceUnavailable)
	})
	ts, _ := cookieServer(t, "epoll", func(c *config.Config) {
		c.Proxy.Refresh.URL = refresh.URL
		c.Proxy.Refresh.Cookies = []string{"session"}
		c.Proxy.RefreshInterval = time.Second
	})
	cl, err := wstest.DialHeader(t, ts.url(), cookieHeader(appOrigin, "sid-alice"))
	if err != nil {
		t.Fatal(err)
	}
	cl.MustCall("connect", nil, "connected")
	d := cl.NextWithin(5*time.Second, "the disconnect", func(m wstest.Msg) bool { return m.Op() == "disconnect" })
	if d.Str("code") != "unavailable" || d["reconnect"] != true {
		t.Fatalf("disconnect %v, want code unavailable with reconnect true", d)
	}
	if s := websocket.CloseStatus(cl.WaitClosed()); s != 1013 {
		t.Fatalf("close status %d, want 1013", s)
	}
	if n := len(refresh.received()); n != 1 {
		t.Fatalf("refresh hook called %d times, want 1", n)
	}
	if v := metric(t, ts, `syncgate_proxy_errors_total{hook="refresh",reason="status"}`); v != 1 {
		t.Fatalf(`syncgate_proxy_errors_total{hook="refresh",reason="status"} = %v, want 1`, v)
	}
	assertMetric(t, ts, `syncgate_disconnects_total{code="unavailable"}`, 1)
}

// TestProxyConnectWithJWT: with auth on and a connect hook, a client that
// brings a token is decided by the token (the hook is not asked); one
// without is decided by the hook.
func TestProxyConnectWithJWT(t *testing.T) {
	ts, be := cookieServer(t, "epoll", withHMAC)
	tok := hsToken(t, userClaims("tokenuser", []string{"jwt:*"}, nil, time.Minute))
	cl, err := wstest.DialHeader(t, ts.url(), cookieHeader(appOrigin, "sid-alice"))
	if err != nil {
		t.Fatal(err)
	}
	if c := cl.MustCall("connect", map[string]any{"token": tok}, "connected"); c.Str("user") != "tokenuser" {
		t.Fatalf("with a token: %v", c)
	}
	cl.Sub("jwt:1")
	if n := len(be.received()); n != 0 {
		t.Fatalf("connect hook asked %d times for a token connection", n)
	}
	bad := dial(t, ts)
	if r := bad.MustCall("connect", map[string]any{"token": "garbage"}, "error"); r.Str("code") != "unauthorized" {
		t.Fatalf("bad token: %v", r)
	}
	if n := len(be.received()); n != 0 {
		t.Fatalf("a bad token fell through to the hook (%d calls)", n)
	}
	cookie, err := wstest.DialHeader(t, ts.url(), cookieHeader(appOrigin, "sid-alice"))
	if err != nil {
		t.Fatal(err)
	}
	if c := cookie.MustCall("connect", nil, "connected"); c.Str("user") != "alice" {
		t.Fatalf("without a token: %v", c)
	}
}

// TestProxyQueueBound: while a connection's publish waits for the backend,
// what it sends next is queued, up to 256 commands; a client that sends
// more is disconnected (rate_limited), and nothing it queued runs.
func TestProxyQueueBound(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
		<-release
		io.WriteString(w, `{}`)
	})
	ts := startServer(t, "epoll", func(c *config.Config) { c.Proxy.Publish.URL = be.URL })
	cl := dial(t, ts)
	cl.Connect("u")
	cl.Send(map[string]any{"op": "pub", "id": 1, "ch": "q", "data": 1})
	waitFor(t, 2*time.Second, "the held call", func() bool { return len(be.received()) == 1 })
	var batch []string
	for i := range 300 {
		batch = append(batch, `{"op":"ping","id":`+strconv.Itoa(i+2)+`}`)
	}
	cl.SendRaw(strings.Join(batch, "\n"))
	d := cl.NextWithin(3*time.Second, "the disconnect", func(m wstest.Msg) bool { return m.Op() == "disconnect" })
	close(release)
	if d.Str("code") != "rate_limited" || d["reconnect"] != false {
		t.Fatalf("disconnect %v", d)
	}
	if m := cl.TryNext(200*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "pong" }); m != nil {
		t.Fatalf("a queued command ran after the disconnect: %v", m)
	}
}

// TestProxyWaitBound: at most 4 x proxy.max_concurrency calls wait for a
// slot; the next fails at once (before any of the waiting ones is
// answered), and the waiting ones go through once the slot frees.
func TestProxyWaitBound(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
		if c.Ch == "hold" {
			<-release
		}
		io.WriteString(w, `{}`)
	})
	ts := startServer(t, "epoll", func(c *config.Config) {
		c.Proxy.Subscribe.URL = be.URL
		c.Proxy.Subscribe.Timeout = 5 * time.Second
		c.Proxy.MaxConcurrency = 1
	})
	holder := dial(t, ts)
	holder.Connect("h")
	holder.Send(map[string]any{"op": "sub", "id": 1, "ch": "hold"})
	waitFor(t, 2*time.Second, "the held call", func() bool { return len(be.received()) == 1 })
	var waiters []*wstest.Client
	for i := range 4 {
		w := dial(t, ts)
		w.Connect("w" + strconv.Itoa(i))
		w.Send(map[string]any{"op": "sub", "id": 1, "ch": "x"})
		waiters = append(waiters, w)
	}
	waitFor(t, 2*time.Second, "four waiting calls", func() bool {
		return metric(t, ts, "syncgate_proxy_calls_waiting") == 4 && metric(t, ts, "syncgate_proxy_calls_in_flight") == 1
	})
	extra := dial(t, ts)
	extra.Connect("extra")
	if r := extra.MustCall("sub", map[string]any{"ch": "x"}, "error"); r.Str("code") != "unavailable" {
		t.Fatalf("fifth waiter: %v", r)
	}
	for _, w := range waiters {
		if m := w.TryNext(10*time.Millisecond, func(m wstest.Msg) bool { return m.Num("id") == 1 }); m != nil {
			t.Fatalf("a waiting call was answered (%v) while the slot was held", m)
		}
	}
	if v := metric(t, ts, `syncgate_proxy_errors_total{hook="subscribe",reason="concurrency"}`); v != 1 {
		t.Fatalf("concurrency failures %v, want 1", v)
	}
	close(release)
	for _, w := range waiters {
		if m := w.NextWithin(5*time.Second, "the waiter's reply", func(m wstest.Msg) bool { return m.Num("id") == 1 }); m.Op() != "subscribed" {
			t.Fatalf("waiter got %v", m)
		}
	}
}

// TestProxyQueueOrdersUnansweringErrors: errors that answer no command
// (a binary frame, a message over client.max_message_size) sent while
// commands wait in the proxy queue reach the client after those commands'
// replies, in the order the client sent what caused them.
func TestProxyQueueOrdersUnansweringErrors(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
		<-release
		io.WriteString(w, `{}`)
	})
	ts := startServer(t, "epoll", func(c *config.Config) {
		c.Proxy.Publish.URL = be.URL
		c.Proxy.Publish.Timeout = 5 * time.Second
		c.Client.MaxMessageSize = 1024
	})
	cl := dial(t, ts)
	cl.Connect("u")
	cl.Send(map[string]any{"op": "pub", "id": 1, "ch": "q", "data": 1})
	waitFor(t, 2*time.Second, "the held call", func() bool { return len(be.received()) == 1 })
	cl.Send(map[string]any{"op": "ping", "id": 2})
	if err := cl.Conn().Write(t.Context(), websocket.MessageBinary, []byte(`{"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	cl.SendRaw(`{"op":"ping","id":3,"pad":"` + strings.Repeat("x", 2000) + `"}`)
	cl.Send(map[string]any{"op": "ping", "id": 4})
	time.Sleep(50 * time.Millisecond) // the reader has seen all of it
	close(release)
	var got []string
	for len(got) < 5 {
		m := cl.NextWithin(5*time.Second, "the answers", func(m wstest.Msg) bool { return m.Op() == "ack" || m.Op() == "pong" || m.Op() == "error" })
		got = append(got, m.Op()+":"+strconv.FormatUint(m.Num("id"), 10)+":"+m.Str("code"))
	}
	want := []string{"ack:1:", "pong:2:", "error:0:bad_request", "error:0:too_large", "pong:4:"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("answers %v, want %v", got, want)
	}
}

// TestProxyNodeQueueBound: the proxy queues of all connections together
// hold at most proxy.max_queued_bytes; a command past it is answered
// `unavailable` in its turn (its connection stays open, the commands
// around it run), and the bytes are given back once the queues run.
func TestProxyNodeQueueBound(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, c proxyCall) {
		<-release
		io.WriteString(w, `{}`)
	})
	ts := startServer(t, "epoll", func(c *config.Config) {
		c.Proxy.Publish.URL = be.URL
		c.Proxy.Publish.Timeout = 5 * time.Second
		c.Client.MaxMessageSize = 40000
		c.Proxy.MaxQueuedBytes = 65536
	})
	big := `"` + strings.Repeat("x", 39000) + `"`
	a, b := dial(t, ts), dial(t, ts)
	a.Connect("a")
	b.Connect("b")
	a.Send(map[string]any{"op": "pub", "id": 1, "ch": "q", "data": 1})
	b.Send(map[string]any{"op": "pub", "id": 1, "ch": "q", "data": 1})
	waitFor(t, 2*time.Second, "the held calls", func() bool { return len(be.received()) == 2 })
	a.SendRaw(`{"op":"pub","id":2,"ch":"q","data":` + big + `}`)
	waitFor(t, 2*time.Second, "a's queued pub", func() bool { return metric(t, ts, "syncgate_proxy_queued_bytes") > 39000 })
	b.SendRaw(`{"op":"pub","id":2,"ch":"q","data":` + big + `}` + "\n" + `{"op":"ping","id":3}`)
	waitFor(t, 2*time.Second, "b's refused pub", func() bool { return metric(t, ts, "syncgate_proxy_queue_full_total") == 1 })
	close(release)
	for _, tc := range []struct {
		cl   *wstest.Client
		want string
	}{{a, "ack:1: ack:2:"}, {b, "ack:1: error:2:unavailable pong:3:"}} {
		var got []string
		for len(got) < len(strings.Fields(tc.want)) {
			m := tc.cl.NextWithin(5*time.Second, "the answers", func(m wstest.Msg) bool { return m.Num("id") > 0 })
			got = append(got, m.Op()+":"+strconv.FormatUint(m.Num("id"), 10)+":"+m.Str("code"))
		}
		if strings.Join(got, " ") != tc.want {
			t.Fatalf("%s: answers %v, want %s", tc.cl.Name(), got, tc.want)
		}
	}
	waitFor(t, 2*time.Second, "the queue budget given back", func() bool { return metric(t, ts, "syncgate_proxy_queued_bytes") == 0 })
}
