package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// strictWS is a WebSocket client that reads frames the way client.js does:
// split on '\n', every non-blank line must be exactly one JSON object. Any
// other line is recorded as a broken frame (the attack of issue 11 part 1
// shows up as one), never skipped.
type strictWS struct {
	t  testing.TB
	ws *websocket.Conn

	mu     sync.Mutex
	msgs   []map[string]any
	broken []string
	done   chan struct{}
}

func dialStrict(t testing.TB, url string) *strictWS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	ws.SetReadLimit(16 << 20)
	c := &strictWS{t: t, ws: ws, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			objs, bad := splitStrict(data)
			c.mu.Lock()
			c.msgs = append(c.msgs, objs...)
			c.broken = append(c.broken, bad...)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = ws.CloseNow(); <-c.done })
	return c
}

// splitStrict splits a frame into lines and parses each as one JSON object.
func splitStrict(data []byte) (objs []map[string]any, bad []string) {
	if !utf8.Valid(data) {
		// A browser closes the connection on a text frame that is not UTF-8.
		return nil, []string{string(data)}
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var m map[string]any
		// A raw U+2028/U+2029 ends a line for some JavaScript parsers: our
		// encoder escapes them.
		if err := json.Unmarshal(line, &m); err != nil || m == nil || bytes.ContainsAny(line, "\u2028\u2029") {
			bad = append(bad, string(line))
			continue
		}
		objs = append(objs, m)
	}
	return objs, bad
}

func (c *strictWS) send(s string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// waitOp waits for the first message with op (and id when id > 0) and
// returns it.
func (c *strictWS) waitOp(op string, id float64) map[string]any {
	c.t.Helper()
	var found map[string]any
	waitFor(c.t, 10*time.Second, "op "+op, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, m := range c.msgs {
			if m["op"] == op && (id == 0 || m["id"] == id) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

func (c *strictWS) snapshot() ([]map[string]any, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.msgs...), append([]string(nil), c.broken...)
}

func (c *strictWS) ops(op string) []map[string]any {
	msgs, _ := c.snapshot()
	var out []map[string]any
	for _, m := range msgs {
		if m["op"] == op {
			out = append(out, m)
		}
	}
	return out
}

// strictSSE reads /sse the way EventSource does: an event ends at a blank
// line, `data:` lines are joined with '\n', the data must be one JSON
// object.
type strictSSE struct {
	mu     sync.Mutex
	events []sseRecord
	broken []string
	done   chan struct{}
}

type sseRecord struct {
	id, event string
	data      map[string]any
}

func openStrictSSE(t testing.TB, addr, query string, lastID string) *strictSSE {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/sse?"+query, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		cancel()
		t.Fatalf("GET /sse: %v %v", err, resp)
	}
	s := &strictSSE{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		br := bufio.NewReader(resp.Body)
		var id, event string
		var data []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
			field, val, _ := strings.Cut(line, ":")
			val = strings.TrimPrefix(val, " ")
			switch {
			case line == "":
				if len(data) > 0 {
					var m map[string]any
					joined := strings.Join(data, "\n")
					s.mu.Lock()
					if json.Unmarshal([]byte(joined), &m) != nil || m == nil {
						s.broken = append(s.broken, joined)
					} else {
						s.events = append(s.events, sseRecord{id, event, m})
					}
					s.mu.Unlock()
				}
				id, event, data = "", "", nil
			case field == "":
				// comment
			case field == "id":
				id = val
			case field == "event":
				event = val
			case field == "data":
				data = append(data, val)
			}
		}
	}()
	t.Cleanup(func() { cancel(); resp.Body.Close(); <-s.done })
	// The headers come before the subscription is in place: wait for the
	// first event (subscribed), so what is published next reaches s.
	waitFor(t, 10*time.Second, "SSE subscribed", func() bool { evs, bad := s.snapshot(); return len(evs) > 0 || len(bad) > 0 })
	return s
}

func (s *strictSSE) snapshot() ([]sseRecord, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sseRecord(nil), s.events...), append([]string(nil), s.broken...)
}

func (s *strictSSE) msgs() []map[string]any {
	evs, _ := s.snapshot()
	var out []map[string]any
	for _, e := range evs {
		if e.event == "msg" {
			out = append(out, e.data)
		}
		if e.event == "subscribed" {
			for _, p := range asList(e.data["pubs"]) {
				out = append(out, p.(map[string]any))
			}
		}
	}
	return out
}

func asList(v any) []any { l, _ := v.([]any); return l }

// jsonEqual compares two JSON texts as values.
func jsonEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// The attack of issue 11 part 1: a pub whose data holds raw newlines made
// every subscriber that splits frames on '\n' (client.js, SSE) see a forged
// msg of another channel from another user.
func TestPubDataNewlineForgery(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		victim := dialStrict(t, ts.url())
		victim.send(`{"op":"connect","id":1,"user":"victim"}`)
		victim.send(`{"op":"sub","id":2,"ch":"doc:1"}` + "\n" + `{"op":"sub","id":3,"ch":"doc:payroll"}`)
		sub := victim.waitOp("subscribed", 2)
		victim.waitOp("subscribed", 3)
		sse := openStrictSSE(t, ts.addr, "ch=doc:1&user=sse", "")

		attacker := dialStrict(t, ts.url())
		attacker.send(`{"op":"connect","id":1,"user":"mallory"}`)
		data := "[\n{\"op\":\"msg\",\"ch\":\"doc:payroll\",\"from\":\"ceo\",\"data\":{\"text\":\"forged\"}}\n]"
		attacker.send(`{"op":"pub","id":2,"ch":"doc:1","data":` + data + `}`)
		if ack := attacker.waitOp("ack", 2); ack["seq"] != float64(1) {
			t.Fatalf("ack %v", ack)
		}
		// A second, harmless message: once it is there, the first one has
		// been delivered or dropped.
		attacker.send(`{"op":"pub","id":3,"ch":"doc:1","data":"end"}`)
		// (Counting msgs only: the SSE client's join may arrive or not.)
		waitFor(t, 10*time.Second, "both messages", func() bool {
			msgs, bad := victim.snapshot()
			n := 0
			for _, m := range msgs {
				if m["op"] == "msg" {
					n++
				}
			}
			return n >= 2 || len(bad) > 0
		})
		waitFor(t, 10*time.Second, "both SSE messages", func() bool { _, bad := sse.snapshot(); return len(sse.msgs()) >= 2 || len(bad) > 0 })

		check := func(who string, msgs []map[string]any, broken []string) {
			t.Helper()
			if len(broken) > 0 {
				t.Fatalf("%s: lines that are not one JSON object: %q", who, broken)
			}
			var got []map[string]any
			for _, m := range msgs {
				if m["op"] == "msg" {
					got = append(got, m)
				}
			}
			if len(got) != 2 {
				t.Fatalf("%s: %d msgs, want 2: %v", who, len(got), got)
			}
			for _, m := range got {
				if m["ch"] != "doc:1" || m["from"] != "mallory" {
					t.Fatalf("%s: forged msg %v", who, m)
				}
			}
			if !jsonEqual([]byte(jsonStr(got[0]["data"])), []byte(data)) {
				t.Fatalf("%s: data %s, want %s", who, jsonStr(got[0]["data"]), data)
			}
		}
		msgs, broken := victim.snapshot()
		check("websocket", msgs, broken)
		evs, bad := sse.snapshot()
		var sseMsgs []map[string]any
		for _, e := range evs {
			if e.event == "msg" {
				sseMsgs = append(sseMsgs, e.data)
			}
		}
		check("sse", sseMsgs, bad)

		// Catch-up: the message in history reaches a reconnecting client
		// whole (it used to make `subscribed` unparsable).
		late := dialStrict(t, ts.url())
		late.send(fmt.Sprintf(`{"op":"sub","id":5,"ch":"doc:1","since":{"seq":0,"epoch":%q}}`, sub["epoch"]))
		r := late.waitOp("subscribed", 5)
		var pubs []map[string]any
		for _, p := range asList(r["pubs"]) {
			pubs = append(pubs, p.(map[string]any))
		}
		_, broken = late.snapshot()
		check("catch-up", pubs, broken)
		sseLate := openStrictSSE(t, ts.addr, "ch=doc:1&user=sse2", fmt.Sprintf("0:%s", sub["epoch"]))
		waitFor(t, 10*time.Second, "SSE catch-up", func() bool { evs, bad := sseLate.snapshot(); return len(evs) >= 1 || len(bad) > 0 })
		evs, bad = sseLate.snapshot()
		check("sse catch-up", sseLate.msgs(), bad)
	})
}

// Issue 11 part 9: an error answering a command that failed to decode
// carries the command's id whenever it can be read.
func TestDecodeErrorCarriesID(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	c := dialStrict(t, ts.url())
	c.send(`{"op":"connect","id":1,"user":"u"}`)
	c.waitOp("connected", 1)
	for i, tc := range []struct {
		send string
		id   float64 // 0: no id in the reply
	}{
		{`{"id":3}`, 3},
		{`{"ch":5,"id":4,"op":"sub"}`, 4},
		{`{"op":"sub","id":5,"ch":5}`, 5},
		{`{"op":"pub","id":6,"ch":"doc:1","data":[1,2}`, 6},
		{`{"op":"ping","i\u0064":7,"op":"ping"}`, 7},
		{`{"op":"sub","id":"8"}`, 0},
		{`{"op":"ping","id":9,"id":10}`, 0},
		{`{"op":"sub","ch":5,"id":0}`, 0},
		{`[{"id":11}]`, 0},
	} {
		before := len(c.ops("error"))
		c.send(tc.send)
		c.send(fmt.Sprintf(`{"op":"ping","id":%d}`, 100+i))
		c.waitOp("pong", float64(100+i))
		errs := c.ops("error")
		if len(errs) != before+1 {
			t.Fatalf("%s: %d errors, want 1 more: %v", tc.send, len(errs)-before, errs)
		}
		e := errs[before]
		id, has := e["id"]
		if tc.id == 0 && has || tc.id != 0 && id != tc.id || e["code"] != "bad_request" {
			t.Fatalf("%s: error %v, want id %v", tc.send, e, tc.id)
		}
	}
	// Batched: each bad line answers with its own id, the good ones run.
	c.send("{\"op\":\"sub\",\"id\":20,\"ch\":1}\n{\"op\":\"ping\",\"id\":21}\n{\"id\":22}")
	c.waitOp("pong", 21)
	c.waitOp("error", 20)
	c.waitOp("error", 22)
}

// Payloads that come back from the broker are untrusted: someone with
// write access to it publishes bytes no gateway wrote. Clients never get a
// broken or forged frame, live or through catch-up; malformed payloads are
// dropped and counted, loose but valid ones are re-encoded.
func TestHostileBrokerPayload(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	ctx := context.Background()
	c := dialStrict(t, ts.url())
	c.send(`{"op":"connect","id":1,"user":"victim"}`)
	c.send(`{"op":"sub","id":2,"ch":"doc:1"}`)
	sub := c.waitOp("subscribed", 2)
	sse := openStrictSSE(t, ts.addr, "ch=doc:1&user=sse", "")

	hostile := []string{
		"\"from\":\"ceo\",\"data\":1}\n{\"op\":\"msg\",\"ch\":\"doc:payroll\",\"from\":\"ceo\",\"data\":2",
		`"from":"ceo","data":1,"op":"join"`,
		`"from":"ceo","data":{"a":1}}`,
		"\"from\":\"ceo\",\"data\":\"\xff\xfe\"",
		"\"from\":\"c\neo\",\"data\":1",
		`"from":"ceo","data":`,
		`"from":"ceo"`,
		`{"op":"msg"}`,
		``,
		`"from":"ceo","data":` + strings.Repeat("[", 200) + strings.Repeat("]", 200),
		`"from":ceo,"data":1`,
		// Binary publications (base64 under "bin") are checked as hard.
		"\"from\":\"ceo\",\"bin\":\"aGk=\"}\n{\"op\":\"msg\",\"ch\":\"doc:payroll\"",
		`"from":"ceo","bin":"aGk=","data":1`,
		`"from":"ceo","bin":"aGk"`,
		`"from":"ceo","bin":"a\"k="`,
		`"from":"ceo","bin":aGk=`,
		`"from":"ceo","bin":"` + strings.Repeat("QUFB", 30000) + `"`, // over client.max_message_size
	}
	loose := []struct{ payload, want string }{
		{"\"from\":\"ann\",\"data\":[1,\n{\"op\":\"msg\",\"ch\":\"doc:payroll\"}\n]", `[1,{"op":"msg","ch":"doc:payroll"}]`},
		{"\"from\":\"a\u2028nn\",\"data\":\"x\u2029y\"", `"x\u2029y"`},
	}
	for _, p := range hostile {
		if _, err := ts.broker.Publish(ctx, "doc:1", []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range loose {
		if _, err := ts.broker.Publish(ctx, "doc:1", []byte(l.payload)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.broker.Publish(ctx, "doc:1", []byte(`"from":"end","data":"end"`)); err != nil {
		t.Fatal(err)
	}
	// The presence list is the broker's too.
	pres := brokers.Presence(ts.broker)
	for _, m := range []brokers.Member{{User: "ceo", Client: "EVIL\n{}"}, {User: "\xff", Client: "abc-1"}, {User: "", Client: "abc-3"}} {
		if err := pres.Join(ctx, "doc:1", m, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := pres.Join(ctx, "doc:1", brokers.Member{User: "bob", Client: "abc-2"}, time.Minute); err != nil {
		t.Fatal(err)
	}

	checkMsgs := func(who string, msgs []map[string]any, broken []string) {
		t.Helper()
		if len(broken) > 0 {
			t.Fatalf("%s: lines that are not one JSON object: %q", who, broken)
		}
		var got []map[string]any
		for _, m := range msgs {
			if m["op"] == "msg" {
				got = append(got, m)
			}
		}
		if len(got) != len(loose)+1 {
			t.Fatalf("%s: got %d msgs, want %d: %v", who, len(got), len(loose)+1, got)
		}
		for i, l := range loose {
			if got[i]["ch"] != "doc:1" || !jsonEqual([]byte(jsonStr(got[i]["data"])), []byte(l.want)) {
				t.Fatalf("%s: msg %d = %v, want data %s", who, i, got[i], l.want)
			}
		}
		if got[1]["from"] != "a\u2028nn" {
			t.Fatalf("%s: from %q", who, got[1]["from"])
		}
	}
	waitFor(t, 10*time.Second, "the last message", func() bool {
		for _, m := range c.ops("msg") {
			if m["from"] == "end" {
				return true
			}
		}
		_, broken := c.snapshot()
		return len(broken) > 0
	})
	bobJoined := func() []map[string]any {
		var out []map[string]any
		for _, j := range c.ops("join") {
			if j["user"] != "sse" {
				out = append(out, j)
			}
		}
		return out
	}
	waitFor(t, 10*time.Second, "bob's join", func() bool { return len(bobJoined()) > 0 })
	msgs, broken := c.snapshot()
	checkMsgs("live", msgs, broken)
	if joins := bobJoined(); len(joins) != 1 || joins[0]["user"] != "bob" {
		t.Fatalf("joins %v", joins)
	}
	c.send(`{"op":"presence","id":3,"ch":"doc:1"}`)
	if users := asList(c.waitOp("presence", 3)["users"]); len(users) != 3 { // victim, sse and bob
		t.Fatalf("presence %v", users)
	}
	waitFor(t, 10*time.Second, "SSE's last message", func() bool {
		for _, m := range sse.msgs() {
			if m["from"] == "end" {
				return true
			}
		}
		_, bad := sse.snapshot()
		return len(bad) > 0
	})
	_, bad := sse.snapshot()
	checkMsgs("sse", sse.msgs(), bad)

	late := dialStrict(t, ts.url())
	late.send(fmt.Sprintf(`{"op":"sub","id":5,"ch":"doc:1","since":{"seq":0,"epoch":%q}}`, sub["epoch"]))
	r := late.waitOp("subscribed", 5)
	if r["recovered"] != true {
		t.Fatalf("catch-up %v", r)
	}
	var pubs []map[string]any
	for _, p := range asList(r["pubs"]) {
		pubs = append(pubs, p.(map[string]any))
	}
	_, broken = late.snapshot()
	checkMsgs("catch-up", pubs, broken)

	code, body := httpGet(t, "http://"+ts.metricsAddr+"/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		fmt.Sprintf(`syncgate_broker_payload_rejected_total{kind="publication"} %d`, len(hostile)),
		fmt.Sprintf(`syncgate_broker_payload_rejected_total{kind="history"} %d`, len(hostile)),
		`syncgate_broker_payload_rejected_total{kind="presence"} 6`, // 3 joins + 3 in the presence reply
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if !strings.Contains(body, "syncgate_broker_payload_rewritten_total ") {
		t.Errorf("metrics lack syncgate_broker_payload_rewritten_total")
	}
}

// tapBroker is the memory broker with its delivery handler exposed, so a
// test can hand the gateway what a hostile broker writer could make a real
// backend deliver (an epoch is read from Redis' pub/sub payload as is).
type tapBroker struct {
	*memory.Broker
	mu sync.Mutex
	h  brokers.Handler
}

func (b *tapBroker) Start(ctx context.Context, h brokers.Handler) error {
	b.mu.Lock()
	b.h = h
	b.mu.Unlock()
	return b.Broker.Start(ctx, h)
}

func (b *tapBroker) handler() brokers.Handler {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.h
}

// An epoch is written raw into SSE's `id:` line: one holding a newline
// from the broker must not let anyone add lines (events) to a stream.
func TestHostileBrokerEpoch(t *testing.T) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	b := &tapBroker{Broker: memory.New(memory.Config{HistorySize: 100, HistoryTTL: time.Minute})}
	srv, err := gateway.New(cfg.Gateway(), b, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, done := wstest.Serve(t, srv, cfg.Listen)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	sse := openStrictSSE(t, addr, "ch=doc:1&user=sse", "")
	ws := dialStrict(t, "ws://"+addr+"/ws")
	ws.send(`{"op":"sub","id":1,"ch":"doc:1"}`)
	ws.waitOp("subscribed", 1)
	waitFor(t, 10*time.Second, "SSE subscribed", func() bool { evs, _ := sse.snapshot(); return len(evs) > 0 })
	b.handler().HandlePublication("doc:1", brokers.Publication{Seq: 1, Epoch: "e\nevent: msg\ndata: {\"op\":\"msg\",\"ch\":\"doc:payroll\",\"from\":\"ceo\",\"data\":1}\n",
		Data: []byte(`"from":"ann","data":1`)})
	b.handler().HandlePublication("doc:1", brokers.Publication{Seq: 2, Epoch: "e", Was: brokers.Position{Seq: 1, Epoch: "~x\n"}, Data: []byte(`"from":"ann","data":2`)})
	if _, err := b.Publish(context.Background(), "doc:1", []byte(`"from":"end","data":3`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the last message", func() bool {
		for _, m := range sse.msgs() {
			if m["from"] == "end" {
				return true
			}
		}
		return false
	})
	evs, bad := sse.snapshot()
	if len(bad) > 0 {
		t.Fatalf("broken events %q", bad)
	}
	for _, e := range evs {
		if e.event == "msg" && e.data["from"] != "end" || strings.ContainsAny(e.id, "\r\n") {
			t.Fatalf("event %+v reached the stream", e)
		}
	}
	for _, m := range ws.ops("msg") {
		if m["from"] != "end" {
			t.Fatalf("websocket got %v", m)
		}
	}
}

// POST /pub took data that encoding/json accepts but a WebSocket pub does
// not: invalid UTF-8 (which went out in subscribers' text frames, and a
// browser closes the connection on that) and nesting past the limit.
func TestHTTPPubDataValidated(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	c := dialStrict(t, ts.url())
	c.send(`{"op":"sub","id":1,"ch":"doc:1"}`)
	c.waitOp("subscribed", 1)
	for _, data := range []string{"\"\xff\"", strings.Repeat("[", 100) + strings.Repeat("]", 100)} {
		code, r := postPub(t, ts, "user=mallory", `{"ch":"doc:1","data":`+data+`}`, nil)
		if code != http.StatusBadRequest || r.Str("code") != "bad_request" {
			t.Errorf("POST /pub %q: %d %v", data, code, r)
		}
	}
	if code, r := postPub(t, ts, "user=ann", "{\"ch\":\"doc:1\",\"data\":{ \"a\" :\n[1, \"\u2028\"] }}", nil); code != 200 || r.Num("seq") != 1 {
		t.Fatalf("POST /pub: %d %v", code, r)
	}
	m := c.waitOp("msg", 0)
	if m["from"] != "ann" || jsonStr(m["data"]) != `{"a":[1,"\u2028"]}` {
		t.Fatalf("msg %v", m)
	}
	if _, bad := c.snapshot(); len(bad) > 0 {
		t.Fatalf("broken frames %q", bad)
	}
}

// A broker writer publishing a payload larger than any node would write
// (data past client.max_message_size) must not reach subscribers: one such
// message per second would otherwise fill every subscriber's queue and cut
// them all off as slow consumers.
func TestHostileBrokerOversize(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	c := dialStrict(t, ts.url())
	c.send(`{"op":"connect","id":1,"user":"victim"}`)
	c.send(`{"op":"sub","id":2,"ch":"doc:1"}`)
	c.waitOp("subscribed", 2)
	big := `"from":"ceo","data":"` + strings.Repeat("x", 2*ts.cfg.Client.MaxMessageSize) + `"`
	ctx := context.Background()
	for _, p := range []string{big, `"from":"end","data":"end"`} {
		if _, err := ts.broker.Publish(ctx, "doc:1", []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the last message", func() bool { return len(c.ops("msg")) > 0 && c.ops("msg")[len(c.ops("msg"))-1]["from"] == "end" })
	if msgs := c.ops("msg"); len(msgs) != 1 {
		t.Fatalf("got %d msgs, want only the last one: the oversize one was delivered", len(msgs))
	}
	if n := scrape(t, ts, `syncgate_broker_payload_rejected_total{kind="publication"}`); n != 1 {
		t.Fatalf("rejected publications: %v, want 1", n)
	}
}
