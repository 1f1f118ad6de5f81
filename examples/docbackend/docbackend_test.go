package docbackend_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/examples/docbackend"
	"github.com/syncgate/syncgate/feed"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/gwtest"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/wstest"
)

const wait = 10 * time.Second

// running is a backend process: its feed loop and its HTTP server.
type running struct {
	b      *docbackend.Backend
	url    string
	cancel func()
}

// start runs a backend on the store file path, following the feed of
// the NATS server at nc ("a process start": the store is read from the
// file, the feed opened at its position).
func start(t *testing.T, nc *nats.Conn, path string) *running {
	t.Helper()
	store, err := docbackend.OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	b := &docbackend.Backend{Store: store}
	hs := httptest.NewServer(b.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx, func(ctx context.Context, r feed.Resume) (feed.Reader, error) {
			return feed.OpenJetStream(ctx, feed.JetStreamConfig{Conn: nc, Pattern: b.Pattern()}, r)
		}, 50*time.Millisecond)
	}()
	r := &running{b: b, url: hs.URL}
	r.cancel = func() { cancel(); <-done; hs.Close() }
	t.Cleanup(r.cancel)
	return r
}

// doc GETs /doc/{id}.
func (r *running) doc(t *testing.T, id string) docbackend.Doc {
	t.Helper()
	resp, err := http.Get(r.url + "/doc/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d docbackend.Doc
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&d) != nil {
		t.Fatalf("GET /doc/%s: %s", id, resp.Status)
	}
	return d
}

// waitSeq waits until document id is at seq.
func (r *running) waitSeq(t *testing.T, id string, seq uint64) docbackend.Doc {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		d := r.doc(t, id)
		if d.Seq == seq {
			return d
		}
		if d.Seq > seq || time.Now().After(deadline) {
			t.Fatalf("doc %s at seq %d, want %d", id, d.Seq, seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWalkthrough is docs/integration.md's walkthrough on two gateways
// sharing a JetStream server: clients on both edit a document; the
// backend stores every edit from the feed; it restarts while edits go
// on and misses none, applies none twice; a client opens the document
// from the backend's state at seq S and subscribes since S: it gets
// what follows S and nothing before.
func TestWalkthrough(t *testing.T) {
	srv := natstest.RunServer(t)
	newBroker := func() *jetstream.Broker { return jetstream.New(jetstream.Config{URL: srv.URL()}) }
	b1 := newBroker()
	// Edits go through the backend's publish hook (its web tier, up while
	// the feed worker below restarts).
	hookStore, _ := docbackend.OpenStore("")
	hook := httptest.NewServer((&docbackend.Backend{Store: hookStore}).Handler())
	defer hook.Close()
	withHook := func(c *config.Config) { c.Proxy.Publish.URL = hook.URL + "/proxy/publish" }
	n1, n2 := gwtest.Start(t, b1, withHook), gwtest.Start(t, newBroker(), withHook)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	path := filepath.Join(t.TempDir(), "docs.json")
	be := start(t, nc, path)

	ann, bob := n1.Dial(t, "ann"), n2.Dial(t, "bob")
	edit := func(c *wstest.Client, field string, i int) {
		c.Pub("doc:42", map[string]any{"set": map[string]any{field: i}})
	}
	const each = 20
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= each; i++ {
			edit(ann, "a", i)
		}
	})
	wg.Go(func() {
		for i := 1; i <= each; i++ {
			edit(bob, "b", i)
		}
	})
	wg.Wait()
	d := be.waitSeq(t, "42", 2*each)
	if string(d.State["a"]) != fmt.Sprint(each) || string(d.State["b"]) != fmt.Sprint(each) || d.Epoch == "" {
		t.Fatalf("doc %+v: want a=%d b=%d", d, each, each)
	}

	// The backend goes down; edits go on; it comes back from its file.
	be.cancel()
	for i := each + 1; i <= each+10; i++ {
		edit(ann, "a", i)
	}
	be = start(t, nc, path)
	d = be.waitSeq(t, "42", 2*each+10)
	if string(d.State["a"]) != fmt.Sprint(each+10) || d.Gaps != 0 {
		t.Fatalf("after restart doc %+v", d)
	}
	if got, again := be.b.Applied(), be.b.Redelivered(); got != 10 || again != 0 {
		t.Fatalf("the restarted backend applied %d edits and saw %d again, want the 10 made while it was down and none again", got, again)
	}

	// Opening the document: state at seq S from the backend, then
	// subscribe since S.
	d = be.doc(t, "42")
	carol := n2.Dial(t, "carol")
	sub := carol.SubSince("doc:42", d.Seq, d.Epoch)
	if sub.Num("seq") != d.Seq || sub.Str("epoch") != d.Epoch {
		t.Fatalf("subscribed %v, backend at seq %d epoch %s", sub, d.Seq, d.Epoch)
	}
	carol.None(200*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })
	bob.Pub("doc:42", map[string]any{"set": map[string]any{"note": "  hi  ", "b": 99}})
	m := carol.Msgs("doc:42", 1, wait)
	if len(m) != 1 || m[0].Num("seq") != d.Seq+1 {
		t.Fatalf("after since %d got %v", d.Seq, m)
	}
	// The publish hook normalised the edit before anyone saw it.
	if got := jsonOf(t, m[0]["data"]); got != `{"set":{"b":99,"note":"hi"}}` {
		t.Fatalf("edit as received %s, want the hook's normalised form", got)
	}
	be.waitSeq(t, "42", d.Seq+1)

	// A server-side change through node 1's server API.
	if _, err := n1.API(t).Publish(context.Background(), "doc:42", []byte(`{"set":{"title":"Imported"}}`), ""); err != nil {
		t.Fatal(err)
	}
	if m := carol.Msgs("doc:42", 1, wait); len(m) != 1 || m[0].Num("seq") != d.Seq+2 {
		t.Fatalf("server-side change: got %v", m)
	}
	if d := be.waitSeq(t, "42", d.Seq+2); string(d.State["title"]) != `"Imported"` {
		t.Fatalf("server-side change not applied: %+v", d)
	}
}

// TestPublishProxy: the backend's publish hook allows a normalised edit
// ({}), replaces a loose one ({"data": ...}), denies a malformed one or
// an anonymous user ({"error": ...}), over a real socket.
func TestPublishProxy(t *testing.T) {
	store, _ := docbackend.OpenStore("")
	hs := httptest.NewServer((&docbackend.Backend{Store: store}).Handler())
	defer hs.Close()
	call := func(body string) (int, string) {
		resp, err := http.Post(hs.URL+"/proxy/publish", "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out bytes.Buffer
		_, _ = out.ReadFrom(resp.Body)
		return resp.StatusCode, out.String()
	}
	for _, c := range []struct{ body, want string }{
		{`{"client":"c1","user":"ann","ch":"doc:1","data":{"set":{"title":"Hi"}},"transport":"websocket"}`, `{}`},
		{`{"user":"ann","ch":"doc:1","data":{"set":{"title":"  Hi \n"}}}`, `{"data":{"set":{"title":"Hi"}}}`},
		{`{"user":"ann","ch":"doc:1","data":{"set":{"b":1,"a":2}}}`, `{"data":{"set":{"a":2,"b":1}}}`},
		{`{"user":"ann","ch":"doc:1","data":{"set":{}}}`, `{"error":{"code":"bad_request","message":"bad edit: set must have 1 to 32 fields"}}`},
		{`{"user":"ann","ch":"doc:1","data":{"set":{"x":1},"rm":1}}`, `{"error":{"code":"bad_request","message":"bad edit: json: unknown field \"rm\""}}`},
		{`{"user":"ann","ch":"doc:1","data":{"set":{"a b":1}}}`, `{"error":{"code":"bad_request","message":"bad edit: field name \"a b\": want [A-Za-z0-9_]{1,64}"}}`},
		{`{"user":"","ch":"doc:1","data":{"set":{"a":1}}}`, `{"error":{"code":"forbidden","message":"sign in to edit"}}`},
		{`{"user":"ann","ch":"chat:1","data":{"set":{"a":1}}}`, `{"error":{"code":"forbidden","message":"not a document channel"}}`},
	} {
		if code, got := call(c.body); code != http.StatusOK || got != c.want {
			t.Errorf("%s: got %d %s, want 200 %s", c.body, code, got, c.want)
		}
	}
	if code, _ := call(`{"user":`); code != http.StatusBadRequest {
		t.Errorf("truncated request: %d", code)
	}
	big := `{"user":"ann","ch":"doc:1","data":{"set":{"a":"` + string(bytes.Repeat([]byte("x"), 300<<10)) + `"}}}`
	if code, _ := call(big); code != http.StatusBadRequest {
		t.Errorf("oversized request: %d", code)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
