package serverapi_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/client"
	"github.com/syncgate/syncgate/client/api"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/gateway/serverapi"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	key    = "key-new-0123456789abcdef"
	oldKey = "key-old-0123456789abcdef"
)

type testNode struct {
	gw   *gateway.Server
	ws   string // ws://.../ws
	base string // http://... of the API
	api  *api.Client
}

// startNode runs a node on the memory broker (no cluster secret: actions
// are local) with its server API; both stop when the test ends.
func startNode(t testing.TB, edit func(*config.Config, *serverapi.Config)) *testNode {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Broker.Type = "memory"
	cfg.Client.MaxMessageSize = 1024
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 10 * time.Millisecond
	acfg := serverapi.Config{Keys: []string{oldKey, key}, MaxBodyBytes: 4096}
	if edit != nil {
		edit(&cfg, &acfg)
	}
	gw, err := gateway.New(cfg.Gateway(), memory.New(memory.Config{HistorySize: 100, HistoryTTL: time.Minute}), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, done := wstest.Serve(t, gw, cfg.Listen)
	s, err := serverapi.New(acfg, gw, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adone := make(chan error, 1)
	go func() { adone <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		if err := <-adone; !errors.Is(err, serverapi.ErrServerClosed) {
			t.Errorf("api serve: %v", err)
		}
		_ = gw.Shutdown(ctx)
		<-done
	})
	base := "http://" + ln.Addr().String()
	return &testNode{gw: gw, ws: "ws://" + addr + "/ws", base: base, api: api.New(base, key, api.Options{})}
}

// post sends a raw request and returns the status and the body.
func post(t *testing.T, verb, url, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(verb, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBadRequests: every way a request can be wrong gets its status and
// an {"error":{"code","message"}} body, and nothing is published.
func TestBadRequests(t *testing.T) {
	n := startNode(t, nil)
	pub := n.base + "/api/publish"
	big := `{"ch":"doc:1","data":"` + strings.Repeat("x", 2000) + `"}`
	for _, tc := range []struct {
		name, verb, url, auth, body string
		status                      int
		code, msg                   string
	}{
		{"no key", "POST", pub, "", `{"ch":"a","data":1}`, 401, "unauthorized", "apikey"},
		{"bad key", "POST", pub, "apikey wrong-0123456789abcdef", `{"ch":"a","data":1}`, 401, "unauthorized", ""},
		{"bearer scheme", "POST", pub, "Bearer " + key, `{"ch":"a","data":1}`, 401, "unauthorized", ""},
		{"unknown method", "POST", n.base + "/api/nope", "apikey " + key, `{}`, 404, "not_found", "publish"},
		{"no method", "POST", n.base + "/", "apikey " + key, `{}`, 404, "not_found", ""},
		{"wrong verb", "GET", pub, "apikey " + key, ``, 405, "method_not_allowed", "POST"},
		{"bad json", "POST", pub, "apikey " + key, `{"ch":`, 400, "bad_request", "body"},
		{"unknown field", "POST", pub, "apikey " + key, `{"ch":"a","data":1,"chan":"b"}`, 400, "bad_request", "chan"},
		{"two objects", "POST", pub, "apikey " + key, `{"ch":"a","data":1} {}`, 400, "bad_request", "one JSON object"},
		{"empty body", "POST", pub, "apikey " + key, ``, 400, "bad_request", "JSON object"},
		{"missing data", "POST", pub, "apikey " + key, `{"ch":"a"}`, 400, "bad_request", `missing`},
		{"bad channel", "POST", pub, "apikey " + key, `{"ch":"a b","data":1}`, 400, "bad_request", "channel name"},
		{"control channel", "POST", pub, "apikey " + key, `{"ch":"$syncgate:control","data":1}`, 400, "bad_request", "channel name"},
		{"invalid utf-8 data", "POST", pub, "apikey " + key, "{\"ch\":\"a\",\"data\":\"\xff\"}", 400, "bad_request", "UTF-8"},
		{"data over max_message_size", "POST", pub, "apikey " + key, big, 413, "too_large", "client.max_message_size"},
		{"body over MaxBodyBytes", "POST", pub, "apikey " + key, `{"ch":"a","data":"` + strings.Repeat("x", 5000) + `"}`, 413, "too_large", "4096"},
		{"history limit", "POST", n.base + "/api/history", "apikey " + key, `{"ch":"a","limit":5000}`, 400, "bad_request", "limit"},
		{"channels pattern", "POST", n.base + "/api/channels", "apikey " + key, `{"pattern":"a b"}`, 400, "bad_request", "pattern"},
		{"revoke before", "POST", n.base + "/api/revoke", "apikey " + key, `{"user":"u"}`, 400, "bad_request", "before"},
		{"broadcast bad channel", "POST", n.base + "/api/broadcast", "apikey " + key, `{"chs":["a","b c"],"data":1}`, 400, "bad_request", "channel name"},
		{"broadcast twice", "POST", n.base + "/api/broadcast", "apikey " + key, `{"chs":["a","a"],"data":1}`, 400, "bad_request", "twice"},
		{"long user", "POST", n.base + "/api/disconnect", "apikey " + key, `{"user":"` + strings.Repeat("u", 256) + `"}`, 400, "bad_request", "user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(t, tc.verb, tc.url, tc.auth, tc.body)
			if status != tc.status || !strings.Contains(body, `"code":"`+tc.code+`"`) || !strings.Contains(body, tc.msg) {
				t.Fatalf("got %d %s; want %d with code %s and %q", status, body, tc.status, tc.code, tc.msg)
			}
		})
	}
	// Nothing of the above was published (the broadcast's "a" included).
	for _, ch := range []string{"a", "doc:1"} {
		h, err := n.api.History(t.Context(), ch, 0, 10)
		if err != nil || h.Seq != 0 {
			t.Fatalf("history %s = %+v, %v; want nothing published", ch, h, err)
		}
	}
	// Errors are counted per method and code.
	mfs, err := n.gw.MetricsRegisterer().(prometheus.Gatherer).Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "syncgate_api_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := m.GetLabel()
			if l[0].GetValue() == "bad_request" && l[1].GetValue() == "publish" && m.GetCounter().GetValue() >= 6 {
				found = true
			}
		}
	}
	if !found {
		t.Error(`syncgate_api_errors_total{method="publish",code="bad_request"} not counted`)
	}
}

// TestMethodsOneNode: every method on a memory-broker node; with no
// cluster secret, actions say they reached this node only.
func TestMethodsOneNode(t *testing.T) {
	n := startNode(t, nil)
	ctx := t.Context()
	c := wstest.Dial(t, n.ws)
	c.Connect("ann")
	c.Sub("doc:1")

	// The old key still works (rotation).
	old := api.New(n.base, oldKey, api.Options{})
	r, err := old.Publish(ctx, "doc:1", map[string]any{"a": []int{1, 2}}, "")
	if err != nil || r.Seq != 1 {
		t.Fatalf("publish with the old key = %+v, %v", r, err)
	}
	if m := c.NextOp("msg"); m.Str("from") != "" || m.Num("seq") != 1 {
		t.Fatalf("got %v", m)
	}
	h, err := n.api.History(ctx, "doc:1", 0, 0)
	if err != nil || h.Seq != 1 || len(h.Pubs) != 0 {
		t.Fatalf("history limit 0 = %+v, %v; want the position only", h, err)
	}
	ms, err := n.api.Presence(ctx, "doc:1")
	if err != nil || len(ms) != 1 || ms[0].User != "ann" {
		t.Fatalf("presence = %+v, %v", ms, err)
	}
	chs, err := n.api.Channels(ctx, "")
	if err != nil || len(chs) != 1 || chs[0].Subscribers != 1 {
		t.Fatalf("channels = %+v, %v", chs, err)
	}
	if chs, _ := n.api.Channels(ctx, "other:*"); len(chs) != 0 {
		t.Fatalf("channels other:* = %+v", chs)
	}
	nodes, err := n.api.Info(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Node != n.gw.NodeID() || nodes[0].Connections != 1 {
		t.Fatalf("info = %+v, %v", nodes, err)
	}
	ar, err := n.api.Unsubscribe(ctx, "ann", "doc:1")
	if err != nil || ar.Local != 1 || ar.Cluster {
		t.Fatalf("unsubscribe = %+v, %v; want 1 local, cluster false", ar, err)
	}
	c.NextOp("unsubscribed")
	ar, err = n.api.Disconnect(ctx, "ann", true)
	if err != nil || ar.Local != 1 || ar.Cluster {
		t.Fatalf("disconnect = %+v, %v", ar, err)
	}
	if m := c.NextOp("disconnect"); m.Str("code") != "disconnected" || m["reconnect"] != true {
		t.Fatalf("got %v", m)
	}
	if _, err := n.api.Revoke(ctx, "ann", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := n.api.Call(ctx, "info", map[string]any{"x": 1}, nil); !api.IsCode(err, "bad_request") {
		t.Fatalf("info with an unknown field = %v", err)
	}
}

// TestReservedChannel: no client can subscribe or publish to the control
// channel: its name is outside the client protocol's alphabet.
func TestReservedChannel(t *testing.T) {
	n := startNode(t, nil)
	c := wstest.Dial(t, n.ws)
	c.Connect("mallory")
	for _, op := range []string{"sub", "pub", "presence"} {
		r := c.Call(op, map[string]any{"ch": gateway.ControlChannel, "data": 1})
		if r.Op() != "error" || r.Str("code") != "bad_request" {
			t.Fatalf("%s %s = %v; want bad_request", op, gateway.ControlChannel, r)
		}
	}
}

// TestGoClientUnsubscribedByServer: the Go client ends a Subscription the
// server API unsubscribed, with ErrUnsubscribedByServer.
func TestGoClientUnsubscribedByServer(t *testing.T) {
	n := startNode(t, nil)
	ctx := t.Context()
	cl, err := client.Dial(ctx, n.ws, client.Options{User: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sub, err := cl.Subscribe(ctx, "doc:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.api.Unsubscribe(ctx, "ann", "doc:1"); err != nil {
		t.Fatal(err)
	}
	nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := sub.Next(nctx); !errors.Is(err, client.ErrUnsubscribedByServer) || !errors.Is(err, client.ErrUnsubscribed) {
		t.Fatalf("Next = %v; want ErrUnsubscribedByServer", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  serverapi.Config
		want string
	}{
		{serverapi.Config{}, "api.keys"},
		{serverapi.Config{Keys: []string{"short"}}, "Keys[0]"},
		{serverapi.Config{Keys: []string{key}, Timeout: -1}, "negative"},
		{serverapi.Config{Keys: []string{key}}, ""},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v; want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestAPIKeyWrongKeysRefused: a key is accepted only when it equals one of
// api.keys exactly. Every proper prefix of a configured key (the empty one
// included), the key with one more byte, with any single byte changed, in
// another case, or with a leading space is refused 401 and publishes
// nothing; both configured keys are accepted. (That the comparison takes
// the same time whatever the key is: TestAPIKeyCompareShape holds the
// code to it; no test measures time.)
func TestAPIKeyWrongKeysRefused(t *testing.T) {
	n := startNode(t, nil)
	pub := n.base + "/api/publish"
	var wrong []string
	for _, k := range []string{key, oldKey} {
		for i := 0; i < len(k); i++ {
			wrong = append(wrong, k[:i])
			b := []byte(k)
			b[i] ^= 0x01
			wrong = append(wrong, string(b))
		}
		// (Trailing space is not a different key: HTTP trims it from
		// header values before the server sees them.)
		wrong = append(wrong, k+"x", k+k, " "+k, strings.ToUpper(k))
	}
	for _, w := range wrong {
		if status, body := post(t, "POST", pub, "apikey "+w, `{"ch":"keys","data":1}`); status != 401 || !strings.Contains(body, `"code":"unauthorized"`) {
			t.Fatalf("key %q: got %d %s, want 401 unauthorized", w, status, body)
		}
	}
	if h, err := n.api.History(t.Context(), "keys", 0, 10); err != nil || h.Seq != 0 {
		t.Fatalf("history = %+v, %v; want nothing published by a wrong key", h, err)
	}
	for _, k := range []string{key, oldKey} {
		if status, body := post(t, "POST", pub, "apikey "+k, `{"ch":"keys","data":1}`); status != 200 {
			t.Fatalf("configured key %q: got %d %s, want 200", k, status, body)
		}
	}
}
