package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestProxyRefusesBinary proves docs/protocol.md's "With the event proxy
// on, binary messages are refused (bad_request) ... With the publish hook,
// binary data cannot be published at all": with the publish hook on, a
// binary WebSocket pub, a JSON pub with "bin" and POST /pub with "bin"
// are each answered bad_request (400 on HTTP), reach neither the hook nor
// the channel, and the connection stays usable; a JSON pub with "data"
// goes through the hook and is delivered (the control).
func TestProxyRefusesBinary(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, c proxyCall) { io.WriteString(w, `{}`) })
	ts := startServer(t, "epoll", func(c *config.Config) {
		c.Proxy.Publish.URL = be.URL
		c.Proxy.Publish.Timeout = 5 * time.Second
	})
	const ch = "doc:proxybin"
	sub := dialBinary(t, ts, "sub")
	sub.Sub(ch)
	c := dialBinary(t, ts, "ann")
	c.SendBinary(map[string]any{"op": "pub", "id": 1, "ch": ch}, []byte{0, 1, 2})
	if e := c.NextOp("error"); e.Num("id") != 1 || e.Str("code") != "bad_request" {
		t.Fatalf("binary pub with the event proxy on = %v, want error bad_request id 1", e)
	}
	if e := c.Call("pub", map[string]any{"ch": ch, "bin": "AAEC"}); e.Op() != "error" || e.Str("code") != "bad_request" {
		t.Fatalf("pub with bin through the publish hook = %v, want error bad_request", e)
	}
	resp, err := http.Post("http://"+ts.addr+"/pub?user=web", "application/json", strings.NewReader(`{"ch":"`+ch+`","bin":"AAEC"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "bad_request") {
		t.Fatalf("POST /pub with bin through the publish hook = %d %s, want 400 bad_request", resp.StatusCode, body)
	}
	if r := c.Pub(ch, 1); r.Op() != "ack" || r.Num("seq") != 1 {
		t.Fatalf("JSON pub after the refusals = %v, want ack seq 1", r)
	}
	if m := sub.NextOp("msg"); m.Num("seq") != 1 || m.Binary() {
		t.Fatalf("subscriber's first msg = %v, want the JSON publication at seq 1", m)
	}
	sub.None(200*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })
	if calls := be.received(); len(calls) != 1 || string(calls[0].Data) != "1" {
		t.Fatalf("publish hook calls %+v, want only the JSON pub", calls)
	}
}
