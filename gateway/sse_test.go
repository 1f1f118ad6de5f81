package gateway_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

type sseEvent struct {
	id, event string
	data      wstest.Msg
}

type sseStream struct {
	t    *testing.T
	resp *http.Response
	br   *bufio.Reader
}

func openSSE(t *testing.T, ts *testServer, query string, hdr http.Header) (*sseStream, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+ts.addr+"/sse?"+query, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		return nil, resp.StatusCode
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	s := &sseStream{t: t, resp: resp, br: bufio.NewReader(resp.Body)}
	t.Cleanup(func() { resp.Body.Close() })
	return s, 200
}

// next returns the next event (comments and retry lines skipped).
func (s *sseStream) next() sseEvent {
	s.t.Helper()
	var ev sseEvent
	done := make(chan error, 1)
	go func() {
		for {
			line, err := s.br.ReadString('\n')
			if err != nil {
				done <- err
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "":
				if ev.event != "" {
					done <- nil
					return
				}
			case strings.HasPrefix(line, ":"), strings.HasPrefix(line, "retry:"):
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(line[6:]), &ev.data); err != nil {
					done <- err
					return
				}
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			s.t.Fatalf("reading stream: %v", err)
		}
	case <-time.After(5 * time.Second):
		s.t.Fatal("timed out waiting for an event")
	}
	return ev
}

func (s *sseStream) nextEvent(name string) sseEvent {
	s.t.Helper()
	for {
		if ev := s.next(); ev.event == name {
			return ev
		}
	}
}

func postPub(t *testing.T, ts *testServer, query, body string, hdr http.Header) (int, wstest.Msg) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+ts.addr+"/pub?"+query, strings.NewReader(body))
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var o wstest.Msg
	json.NewDecoder(resp.Body).Decode(&o)
	return resp.StatusCode, o
}

func TestSSEStreamAndResume(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	ws := dial(t, ts)
	ws.Connect("wsuser")
	ws.Sub("doc:sse")

	s, _ := openSSE(t, ts, "ch=doc:sse&user=ann", nil)
	sub := s.nextEvent("subscribed")
	epoch := sub.data.Str("epoch")
	if sub.id != "0:"+epoch || sub.data.Str("ch") != "doc:sse" {
		t.Fatalf("subscribed event %+v", sub)
	}
	// The SSE client is on the presence list; the WS client saw it join.
	if j := ws.NextOp("join"); j.Str("user") != "ann" {
		t.Fatalf("join = %v", j)
	}
	code, ack := postPub(t, ts, "user=ann", `{"ch":"doc:sse","data":{"x": 1}}`, nil)
	if code != 200 || ack.Op() != "ack" || ack.Num("seq") != 1 {
		t.Fatalf("POST /pub: %d %v", code, ack)
	}
	m := s.nextEvent("msg")
	if m.id != "1:"+epoch || m.data.Str("from") != "ann" || jsonStr(m.data["data"]) != `{"x":1}` {
		t.Fatalf("msg event %+v", m)
	}
	if wm := ws.NextOp("msg"); wm.Str("from") != "ann" {
		t.Fatalf("ws msg = %v", wm)
	}
	// Drop the stream, miss three messages, resume with Last-Event-ID.
	s.resp.Body.Close()
	if l := ws.NextOp("leave"); l.Str("user") != "ann" {
		t.Fatalf("leave = %v", l)
	}
	for i := 2; i <= 4; i++ {
		ws.Pub("doc:sse", i)
	}
	s2, _ := openSSE(t, ts, "ch=doc:sse", http.Header{"Last-Event-ID": {m.id}})
	r := s2.nextEvent("subscribed")
	if r.data["recovered"] != true || len(r.data["pubs"].([]any)) != 3 || r.id != "4:"+epoch {
		t.Fatalf("resumed subscribed %+v", r)
	}
	ws.Pub("doc:sse", 5)
	if m := s2.nextEvent("msg"); m.id != "5:"+epoch {
		t.Fatalf("live after resume %+v", m)
	}
}

func TestSSEMultiChannelIDs(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	s, _ := openSSE(t, ts, "ch=doc:a&ch=doc:b", nil)
	s.nextEvent("subscribed")
	s.nextEvent("subscribed")
	postPub(t, ts, "", `{"ch":"doc:a","data":1}`, nil)
	postPub(t, ts, "", `{"ch":"doc:b","data":2}`, nil)
	s.nextEvent("msg")
	m := s.nextEvent("msg")
	pos, err := url.ParseQuery(m.id)
	if err != nil || !strings.HasPrefix(pos.Get("doc:a"), "1:") || !strings.HasPrefix(pos.Get("doc:b"), "1:") {
		t.Fatalf("multi-channel id %q", m.id)
	}
}

func TestSSEAuthAndErrors(t *testing.T) {
	ts := startServer(t, "epoll", func(c *config.Config) {
		withHMAC(c)
		c.Client.MaxMessageSize = 256
		c.Client.PublishRate, c.Client.PublishBurst = 1, 2
	})
	if _, code := openSSE(t, ts, "ch=doc:1", nil); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	tok := hsToken(t, userClaims("alice", []string{"doc:1"}, []string{"doc:1"}, time.Hour))
	if _, code := openSSE(t, ts, "ch=secret:1&token="+tok, nil); code != 403 {
		t.Fatalf("forbidden channel: %d", code)
	}
	if _, code := openSSE(t, ts, "ch=bad%20name&token="+tok, nil); code != 400 {
		t.Fatalf("bad channel: %d", code)
	}
	s, _ := openSSE(t, ts, "ch=doc:1", http.Header{"Authorization": {"Bearer " + tok}})
	s.nextEvent("subscribed")

	bearer := http.Header{"Authorization": {"Bearer " + tok}}
	for _, tc := range []struct {
		name, body string
		hdr        http.Header
		status     int
		code       string
	}{
		{"no token", `{"ch":"doc:1","data":1}`, nil, 401, "unauthorized"},
		{"forbidden", `{"ch":"doc:2","data":1}`, bearer, 403, "forbidden"},
		{"bad json", `{"ch":`, bearer, 400, "bad_request"},
		{"no data", `{"ch":"doc:1"}`, bearer, 400, "bad_request"},
		{"too large", `{"ch":"doc:1","data":"` + strings.Repeat("x", 300) + `"}`, bearer, 413, "too_large"},
		{"ok", `{"ch":"doc:1","data":1}`, bearer, 200, ""},
		{"ok", `{"ch":"doc:1","data":2}`, bearer, 200, ""},
		{"rate", `{"ch":"doc:1","data":3}`, bearer, 429, "rate_limited"},
	} {
		code, o := postPub(t, ts, "", tc.body, tc.hdr)
		if code != tc.status || (tc.code != "" && o.Str("code") != tc.code) {
			t.Fatalf("%s: %d %v", tc.name, code, o)
		}
	}
	if m := s.nextEvent("msg"); m.data.Str("from") != "alice" {
		t.Fatalf("msg %+v", m)
	}
}

func TestHTTPPresenceAndEmptyChannelResume(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	a := dial(t, ts)
	a.Connect("alice")
	s := a.Sub("doc:empty") // no message yet: seq 0
	resp, err := http.Get("http://" + ts.addr + "/presence?ch=doc:empty")
	if err != nil {
		t.Fatal(err)
	}
	var p wstest.Msg
	json.NewDecoder(resp.Body).Decode(&p)
	resp.Body.Close()
	if users := p["users"].([]any); p.Op() != "presence" || len(users) != 1 || users[0].(map[string]any)["user"] != "alice" {
		t.Fatalf("GET /presence = %v", p)
	}
	a.Close()
	b := dial(t, ts)
	b.Pub("doc:empty", "first")
	c := dial(t, ts)
	r := c.MustCall("sub", map[string]any{"ch": "doc:empty", "since": since(0, s.Str("epoch"))}, "subscribed")
	if r["recovered"] != true || len(r["pubs"].([]any)) != 1 {
		t.Fatalf("resume from seq 0 = %v", r)
	}
}
