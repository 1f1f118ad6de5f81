package multinode_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestProxyTwoNodes: two gateways on one JetStream server share one
// backend. The backend replaces a publication made on node 1 and a
// subscriber on node 2 sees the replacement (and never the original); a
// deny on node 2 reaches its client with the backend's code and message;
// permissions from the connect hook hold on either node.
func TestProxyTwoNodes(t *testing.T) {
	srv := natstest.RunServer(t)
	var calls atomic.Int32
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var req struct {
			Client, User, Ch, Transport string
			Data                        json.RawMessage
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		switch {
		case r.URL.Path == "/connect":
			io.WriteString(w, `{"user":"u-`+req.Client+`","channels":{"sub":["doc:*"],"pub":["doc:*"]}}`)
		case string(req.Data) == `"bad word"`:
			io.WriteString(w, `{"error":{"code":"bad_request","message":"edit rejected by the app"}}`)
		default:
			io.WriteString(w, `{"data":{"original":`+string(req.Data)+`,"by":"`+req.User+`"}}`)
		}
	}))
	t.Cleanup(be.Close)
	proxied := func(c *config.Config) {
		c.Proxy.Connect.URL = be.URL + "/connect"
		c.Proxy.Publish.URL = be.URL + "/publish"
	}
	newBroker := func() *jetstream.Broker { return jetstream.New(jetstream.Config{URL: srv.URL()}) }
	n1, n2 := startNode(t, newBroker(), proxied), startNode(t, newBroker(), proxied)
	a, b := dial(t, n1, "a"), dial(t, n2, "b")
	ca := a.MustCall("connect", nil, "connected")
	cb := b.MustCall("connect", nil, "connected")
	if ca.Str("user") != "u-"+ca.Str("client") || cb.Str("user") != "u-"+cb.Str("client") {
		t.Fatalf("connected %v / %v: want the backend's users", ca, cb)
	}
	b.Sub("doc:2n")
	if r := b.MustCall("sub", map[string]any{"ch": "chat:2n"}, "error"); r.Str("code") != "forbidden" {
		t.Fatalf("sub outside the connect hook's permissions on node 2: %v", r)
	}
	a.Pub("doc:2n", "hello")
	m := b.NextWithin(wait, "the replaced msg on node 2", func(m wstest.Msg) bool { return m.Op() == "msg" })
	if got, _ := json.Marshal(m["data"]); string(got) != `{"by":"`+ca.Str("user")+`","original":"hello"}` || m.Str("from") != ca.Str("user") {
		t.Fatalf("node 2 got %v", m)
	}
	r := b.MustCall("pub", map[string]any{"ch": "doc:2n", "data": "bad word"}, "error")
	if r.Str("code") != "bad_request" || r.Str("message") != "edit rejected by the app" {
		t.Fatalf("deny on node 2: %v", r)
	}
	b.None(200*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })
	if calls.Load() != 4 {
		t.Fatalf("backend calls %d, want 4 (2 connect, 2 publish)", calls.Load())
	}
}
