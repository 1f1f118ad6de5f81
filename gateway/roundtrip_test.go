package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/client"
	"github.com/syncgate/syncgate/internal/testdeps"
	"github.com/syncgate/syncgate/internal/wstest"
)

// jsonGen generates JSON texts the way a hostile or careless client may
// write them: whitespace (newlines, CR, tabs) between any two tokens,
// strings with escapes, raw and escaped U+2028/U+2029, raw non-ASCII,
// surrogate pairs, numbers in every JSON form (kept within what a
// JavaScript number holds exactly), and nesting down to near the limit.
type jsonGen struct{ r *rand.Rand }

func (g jsonGen) ws() string {
	const ws = " \t\r\n"
	var b strings.Builder
	for n := g.r.IntN(4); n > 0 && g.r.IntN(2) == 0; n-- {
		b.WriteByte(ws[g.r.IntN(len(ws))])
	}
	return b.String()
}

var genStrings = []string{
	`\n`, `\r\n`, `\"`, `\\`, `\/`, `\b`, `\f`, `\t`, `\u2028`, `\u2029`, `\u0000`, `\u001f`,
	`\ud83d\ude00`, `\u00e9`, "\u2028", "\u2029", "é", "😀", "中文", "\u0085", "\u00a0", "\ufeff",
	"a", "text", " ", "{", "}", "[", "]", ":", ",", `{\"op\":\"msg\",\"ch\":\"doc:payroll\"}`,
	"data: x", "event: msg", "\x7f",
}

func (g jsonGen) str() string {
	var b strings.Builder
	b.WriteByte('"')
	for n := g.r.IntN(6); n > 0; n-- {
		b.WriteString(genStrings[g.r.IntN(len(genStrings))])
	}
	b.WriteByte('"')
	return b.String()
}

var genNumbers = []string{"0", "-0", "1", "-1", "42", "123456789", "1.5", "-0.25", "1e3", "2E-2", "-3.75e+2", "0.1", "9007199254740991"}

func (g jsonGen) value(depth int) string {
	k := g.r.IntN(10)
	if depth <= 0 && k >= 6 {
		k = g.r.IntN(6)
	}
	switch k {
	case 0:
		return "null"
	case 1:
		return []string{"true", "false"}[g.r.IntN(2)]
	case 2, 3:
		return genNumbers[g.r.IntN(len(genNumbers))]
	case 4, 5:
		return g.str()
	case 6, 7:
		var b strings.Builder
		b.WriteString("[" + g.ws())
		for i := range g.r.IntN(4) {
			if i > 0 {
				b.WriteString(g.ws() + "," + g.ws())
			}
			b.WriteString(g.value(depth - 1))
		}
		b.WriteString(g.ws() + "]")
		return b.String()
	default:
		var b strings.Builder
		b.WriteString("{" + g.ws())
		for i := range g.r.IntN(4) {
			if i > 0 {
				b.WriteString(g.ws() + "," + g.ws())
			}
			// Distinct keys: duplicates mean different things to
			// different parsers.
			key := g.str()
			fmt.Fprintf(&b, `"k%d%s"%s:%s%s`, i, key[1:len(key)-1], g.ws(), g.ws(), g.value(depth-1))
		}
		b.WriteString(g.ws() + "}")
		return b.String()
	}
}

// deep nests v n arrays/objects deep.
func deep(n int, v string) string {
	for i := range n {
		if i%2 == 0 {
			v = "[\n" + v + "\n]"
		} else {
			v = "{\"d\"\n:\n" + v + "}"
		}
	}
	return v
}

// received is one msg as a subscriber saw it.
type received struct {
	ch, from string
	seq      uint64
	data     json.RawMessage
}

// sameJSON compares JSON texts as values the way a JavaScript client sees
// them (numbers as float64).
func sameJSON(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// jsClient is web/client.js running under node (testdata/jsclient.mjs).
type jsClient struct {
	mu     sync.Mutex
	events []map[string]any
	done   chan error
}

func startJS(t *testing.T, node []string, env ...string) *jsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	args := append(append([]string(nil), node[1:]...), "jsclient.mjs")
	cmd := exec.CommandContext(ctx, node[0], args...)
	cmd.Dir = "testdata"
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	js := &jsClient{done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"ev": "bad_output", "line": sc.Text()}
			}
			js.mu.Lock()
			js.events = append(js.events, m)
			js.mu.Unlock()
		}
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%v; stderr: %s", err, stderr.String())
		}
		js.done <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-js.done
	})
	return js
}

func (js *jsClient) snapshot() []map[string]any {
	js.mu.Lock()
	defer js.mu.Unlock()
	return append([]map[string]any(nil), js.events...)
}

func (js *jsClient) has(ev string) bool {
	for _, e := range js.snapshot() {
		if e["ev"] == ev {
			return true
		}
	}
	return false
}

// wait waits for the script to exit and returns its events.
func (js *jsClient) wait(t *testing.T) []map[string]any {
	t.Helper()
	select {
	case err := <-js.done:
		js.done <- err // for Cleanup
		if err != nil {
			t.Fatalf("client.js: %v; events %v", err, js.snapshot())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("client.js did not finish; events %v", js.snapshot())
	}
	return js.snapshot()
}

func jsMsgs(t *testing.T, who string, events []map[string]any) []received {
	t.Helper()
	var out []received
	for _, e := range events {
		switch e["ev"] {
		case "msg":
			seq, _ := e["seq"].(float64)
			ch, _ := e["ch"].(string)
			from, _ := e["from"].(string)
			out = append(out, received{ch: ch, from: from, seq: uint64(seq), data: json.RawMessage(jsonStr(e["data"]))})
		case "error", "gap", "reset", "bad_output", "subscribe_failed":
			t.Errorf("%s: unexpected event %v", who, e)
		}
	}
	return out
}

// TestPublishedDataRoundTrip is the property of issue 11 part 1: for any
// JSON value a user publishes (over WebSocket or POST /pub, formatted any
// way JSON allows), every subscriber — raw WebSocket and SSE read strictly
// line by line, the Go client, and client.js under node over WebSocket and
// SSE — gets exactly one msg on the right channel, from the right user,
// whose data equals the published value as JSON, and nothing else; live
// and through catch-up.
func TestPublishedDataRoundTrip(t *testing.T) {
	node := testdeps.Node(t)
	ts := startServer(t, "epoll", nil)
	const ch = "prop:1"

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	g := jsonGen{rand.New(rand.NewPCG(seed, 11))}
	values := []string{
		"[\n{\"op\":\"msg\",\"ch\":\"doc:payroll\",\"from\":\"ceo\",\"data\":{\"text\":\"forged\"}}\n]",
		"\"\u2028\u2029\"", `"\u2028\u2029"`, "\r\n\"x\"\r\n", deep(60, `"bottom"`),
	}
	for len(values) < 60 {
		values = append(values, g.ws()+g.value(1+g.r.IntN(8))+g.ws())
	}

	// Live subscribers, subscribed before anything is published.
	raw := dialStrict(t, ts.url())
	raw.send(`{"op":"connect","id":1,"user":"raw"}` + "\n" + `{"op":"sub","id":2,"ch":"` + ch + `"}`)
	epoch, _ := raw.waitOp("subscribed", 2)["epoch"].(string)
	sse := openStrictSSE(t, ts.addr, "ch="+ch+"&user=sse", "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gc, err := client.Dial(ctx, ts.url(), client.Options{User: "go"})
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	gsub, err := gc.Subscribe(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	n := fmt.Sprint(len(values))
	jsWS := startJS(t, node, "WS_URL="+ts.url(), "CHS="+ch, "COUNT="+n)
	jsSSE := startJS(t, node, "WS_URL="+ts.url(), "CHS="+ch, "COUNT="+n, "TRANSPORT=sse", "USER_NAME=jssse")
	waitFor(t, 30*time.Second, "client.js subscribed", func() bool { return jsWS.has("subscribed") && jsSSE.has("subscribed") })
	waitFor(t, 10*time.Second, "SSE subscribed", func() bool { evs, _ := sse.snapshot(); return len(evs) > 0 })

	// Publish, alternating WebSocket pub and POST /pub, one at a time so
	// seq order is publication order.
	pub := dialStrict(t, ts.url())
	pub.send(`{"op":"connect","id":1,"user":"wsp"}`)
	pub.waitOp("connected", 1)
	froms := make([]string, len(values))
	for i, v := range values {
		if i%2 == 0 {
			froms[i] = "wsp"
			pub.send(fmt.Sprintf(`{"op":"pub","id":%d,"ch":"%s","data":%s}`, 100+i, ch, v))
			if ack := pub.waitOp("ack", float64(100+i)); ack["seq"] != float64(i+1) {
				t.Fatalf("pub %d: %v", i, ack)
			}
			continue
		}
		froms[i] = "poster"
		resp, err := http.Post("http://"+ts.addr+"/pub?user=poster", "application/json",
			strings.NewReader(`{"ch":"`+ch+`",`+g.ws()+`"data":`+v+`}`))
		if err != nil {
			t.Fatal(err)
		}
		var ack map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&ack)
		resp.Body.Close()
		if resp.StatusCode != 200 || ack["seq"] != float64(i+1) {
			t.Fatalf("POST /pub %d of %q: %d %v", i, v, resp.StatusCode, ack)
		}
	}

	check := func(who string, got []received) {
		t.Helper()
		if len(got) != len(values) {
			t.Errorf("%s: %d msgs, want %d", who, len(got), len(values))
		}
		for i := range min(len(got), len(values)) {
			m := got[i]
			if m.ch != ch || m.from != froms[i] || m.seq != uint64(i+1) || !sameJSON(m.data, []byte(values[i])) {
				t.Errorf("%s: msg %d = {ch %s from %s seq %d data %s}, published %q by %s", who, i, m.ch, m.from, m.seq, m.data, values[i], froms[i])
				return
			}
		}
	}
	fromMaps := func(ms []map[string]any) []received {
		var out []received
		for _, m := range ms {
			seq, _ := m["seq"].(float64)
			ch, _ := m["ch"].(string)
			from, _ := m["from"].(string)
			out = append(out, received{ch: ch, from: from, seq: uint64(seq), data: json.RawMessage(jsonStr(m["data"]))})
		}
		return out
	}
	goMsgs := func(sub *client.Subscription) []received {
		var out []received
		for len(out) < len(values) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ev, err := sub.Next(ctx)
			cancel()
			if err != nil {
				t.Errorf("go client: %v after %d msgs", err, len(out))
				break
			}
			switch ev.Type {
			case client.Join, client.Leave: // the other subscribers
				continue
			case client.Message:
			default:
				t.Errorf("go client: unexpected event %+v", ev)
				continue
			}
			out = append(out, received{ch: ev.Channel, from: ev.From, seq: ev.Seq, data: ev.Data})
		}
		return out
	}

	// Live.
	waitFor(t, 20*time.Second, "raw and SSE deliveries", func() bool {
		_, rb := raw.snapshot()
		_, sb := sse.snapshot()
		return len(raw.ops("msg")) >= len(values) && len(sse.msgs()) >= len(values) || len(rb)+len(sb) > 0
	})
	check("go client", goMsgs(gsub))
	check("client.js websocket", jsMsgs(t, "client.js websocket", jsWS.wait(t)))
	check("client.js sse", jsMsgs(t, "client.js sse", jsSSE.wait(t)))
	time.Sleep(100 * time.Millisecond) // let an extra message show, if any
	_, rb := raw.snapshot()
	_, sb := sse.snapshot()
	if len(rb)+len(sb) > 0 {
		t.Fatalf("broken lines: websocket %q, sse %q", rb, sb)
	}
	check("raw websocket", fromMaps(raw.ops("msg")))
	check("sse", fromMaps(sse.msgs()))

	// Catch-up from seq 0: everything again, from history.
	rawLate := dialStrict(t, ts.url())
	rawLate.send(fmt.Sprintf(`{"op":"sub","id":2,"ch":%q,"since":{"seq":0,"epoch":%q}}`, ch, epoch))
	r := rawLate.waitOp("subscribed", 2)
	var pubs []map[string]any
	for _, p := range asList(r["pubs"]) {
		pubs = append(pubs, p.(map[string]any))
	}
	check("raw websocket catch-up", fromMaps(pubs))
	sseLate := openStrictSSE(t, ts.addr, "ch="+ch+"&user=sse2", "0:"+epoch)
	waitFor(t, 10*time.Second, "SSE catch-up", func() bool { evs, bad := sseLate.snapshot(); return len(evs) > 0 || len(bad) > 0 })
	check("sse catch-up", fromMaps(sseLate.msgs()))
	gc2, err := client.Dial(ctx, ts.url(), client.Options{User: "go2"})
	if err != nil {
		t.Fatal(err)
	}
	defer gc2.Close()
	gsubLate, err := gc2.Subscribe(ctx, ch, client.SubscribeOptions{Since: &client.Position{Seq: 0, Epoch: epoch}})
	if err != nil {
		t.Fatal(err)
	}
	check("go client catch-up", goMsgs(gsubLate))
	jsLate := startJS(t, node, "WS_URL="+ts.url(), "CHS="+ch, "COUNT="+n, "SINCE_EPOCH="+epoch)
	check("client.js catch-up", jsMsgs(t, "client.js catch-up", jsLate.wait(t)))
	_, rb = rawLate.snapshot()
	_, sb = sseLate.snapshot()
	if len(rb)+len(sb) > 0 {
		t.Fatalf("broken lines in catch-up: websocket %q, sse %q", rb, sb)
	}
}

// A client that gets a line it cannot parse treats it as a protocol error
// of the connection: client.js emits `error` (code protocol), trusts
// nothing of the frame (the forged line between the broken ones is not
// delivered), and reconnects.
func TestJSClientProtocolError(t *testing.T) {
	node := testdeps.Node(t)
	srv, conns := wstest.ForgingServer(t)
	js := startJS(t, node, "WS_URL="+srv, "CHS=doc:payroll,doc:1", "EXIT_ON=reconnect", "TIMEOUT_MS=20000")
	events := js.wait(t)
	protocol := false
	for _, e := range events {
		if e["ev"] == "msg" {
			t.Errorf("delivered %v from a frame with an unparsable line", e)
		}
		if e["ev"] == "error" && e["code"] == "protocol" {
			protocol = true
		}
	}
	if !protocol {
		t.Errorf("no protocol error event: %v", events)
	}
	if n := conns(); n < 2 {
		t.Errorf("client.js did not reconnect (%d connections): %v", n, events)
	}
}
