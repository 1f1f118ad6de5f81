package docbackend_test

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/examples/docbackend"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/gwtest"
)

// TestPublishProxyGateway is the walkthrough's step 2 end to end: a
// gateway with proxy.publish.url at the backend's POST /proxy/publish.
// A loose edit reaches subscribers normalised, a malformed one is refused
// with the backend's bad_request and its message, an edit on a channel
// that is not a document is forbidden; nothing refused is published.
func TestPublishProxyGateway(t *testing.T) {
	store, _ := docbackend.OpenStore("")
	hs := httptest.NewServer((&docbackend.Backend{Store: store}).Handler())
	t.Cleanup(hs.Close)
	n := gwtest.Start(t, memory.New(memory.Config{HistorySize: 100}), func(c *config.Config) {
		c.Proxy.Publish.URL = hs.URL + "/proxy/publish"
	})
	ann, bob := n.Dial(t, "ann"), n.Dial(t, "bob")
	bob.Sub("doc:7")
	bob.Sub("chat:7")

	ann.Pub("doc:7", map[string]any{"set": map[string]any{"title": "  Hi \n", "b": 1}})
	m := bob.Msgs("doc:7", 1, wait)
	if len(m) != 1 || m[0].Str("from") != "ann" {
		t.Fatalf("normalised edit: %v", m)
	}
	if got := string(mustMarshal(t, m[0]["data"])); got != `{"set":{"b":1,"title":"Hi"}}` {
		t.Fatalf("subscriber got %s, want the backend's normalised edit", got)
	}
	r := ann.MustCall("pub", map[string]any{"ch": "doc:7", "data": map[string]any{"set": map[string]any{}}}, "error")
	if r.Str("code") != "bad_request" || r.Str("message") != "bad edit: set must have 1 to 32 fields" {
		t.Fatalf("malformed edit: %v", r)
	}
	if r := ann.MustCall("pub", map[string]any{"ch": "chat:7", "data": "hi"}, "error"); r.Str("code") != "forbidden" {
		t.Fatalf("not a document: %v", r)
	}
	ack := ann.Pub("doc:7", map[string]any{"set": map[string]any{"a": 2}})
	if ack.Num("seq") != 2 {
		t.Fatalf("ack %v: want seq 2 (nothing refused was published)", ack)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
