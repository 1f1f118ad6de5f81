package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ioModes are the two connection paths; every end-to-end test runs on both.
var ioModes = []string{"epoll", "goroutine"}

type testServer struct {
	srv  *gateway.Server
	addr string
	cfg  config.Config
}

func (ts *testServer) url() string { return "ws://" + ts.addr + "/ws" }

// startServer runs a gateway on a random loopback port with the memory
// broker; it is shut down when the test ends.
func startServer(t testing.TB, mode string, edit func(*config.Config)) *testServer {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Server.IO = mode
	cfg.Client.PublishRate = 0 // tests publish in bursts; the limit has its own test
	cfg.Server.DrainWindow = 50 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	b := memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL})
	srv, err := gateway.New(cfg, b, nil)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != gateway.ErrServerClosed {
			t.Errorf("serve returned %v", err)
		}
	})
	return &testServer{srv: srv, addr: ln.Addr().String(), cfg: cfg}
}

// obj is one decoded server message.
type obj map[string]any

func (o obj) str(k string) string { s, _ := o[k].(string); return s }
func (o obj) num(k string) uint64 { f, _ := o[k].(float64); return uint64(f) }
func (o obj) op() string          { return o.str("op") }

// client is a test client on github.com/coder/websocket (not our server's
// library), reading every frame in the background.
type client struct {
	t      testing.TB
	ws     *websocket.Conn
	in     chan obj
	done   chan struct{}
	mu     sync.Mutex
	closed error
	nextID uint64

	backlog []obj // received but not yet taken by next; test goroutine only
}

func dial(t testing.TB, ts *testServer) *client {
	t.Helper()
	return dialURL(t, ts.url())
}

func dialURL(t testing.TB, url string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	ws.SetReadLimit(16 << 20)
	c := &client{t: t, ws: ws, in: make(chan obj, 100000), done: make(chan struct{})}
	go c.readLoop()
	t.Cleanup(func() { c.close() })
	return c
}

func (c *client) readLoop() {
	defer close(c.done)
	for {
		_, data, err := c.ws.Read(context.Background())
		if err != nil {
			c.mu.Lock()
			c.closed = err
			c.mu.Unlock()
			return
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		for {
			var o obj
			if err := dec.Decode(&o); err == io.EOF {
				break
			} else if err != nil {
				c.t.Errorf("server sent invalid JSON %q: %v", data, err)
				break
			}
			c.in <- o
		}
	}
}

func (c *client) close() {
	_ = c.ws.CloseNow()
	<-c.done
}

func (c *client) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(string(b))
}

func (c *client) sendRaw(s string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the first message matching keep, leaving the others queued
// in order for later calls, and fails after the timeout.
func (c *client) next(keep func(obj) bool) obj {
	c.t.Helper()
	for i, o := range c.backlog {
		if keep == nil || keep(o) {
			c.backlog = append(c.backlog[:i:i], c.backlog[i+1:]...)
			return o
		}
	}
	timeout := time.After(10 * time.Second) // generous: CI runs packages side by side on 2 cores
	for {
		select {
		case o := <-c.in:
			if keep == nil || keep(o) {
				return o
			}
			c.backlog = append(c.backlog, o)
		case <-timeout:
			c.t.Fatalf("timed out waiting for a message; backlog %v", c.backlog)
			return nil
		}
	}
}

func (c *client) nextOp(op string) obj {
	c.t.Helper()
	return c.next(func(o obj) bool { return o.op() == op })
}

// none asserts no message matching keep arrives within d.
func (c *client) none(d time.Duration, keep func(obj) bool) {
	c.t.Helper()
	for _, o := range c.backlog {
		if keep == nil || keep(o) {
			c.t.Fatalf("unexpected message %v", o)
		}
	}
	timeout := time.After(d)
	for {
		select {
		case o := <-c.in:
			if keep == nil || keep(o) {
				c.t.Fatalf("unexpected message %v", o)
			}
			c.backlog = append(c.backlog, o)
		case <-timeout:
			return
		}
	}
}

// call sends a command with a fresh id and returns the reply with that id.
func (c *client) call(op string, fields map[string]any) obj {
	c.t.Helper()
	c.nextID++
	id := c.nextID
	m := map[string]any{"op": op, "id": id}
	for k, v := range fields {
		m[k] = v
	}
	c.send(m)
	return c.next(func(o obj) bool { return o.num("id") == id })
}

func (c *client) mustCall(op string, fields map[string]any, want string) obj {
	c.t.Helper()
	r := c.call(op, fields)
	if r.op() != want {
		c.t.Fatalf("%s %v: got %v, want op %q", op, fields, r, want)
	}
	return r
}

func (c *client) connect(user string) obj {
	c.t.Helper()
	return c.mustCall("connect", map[string]any{"user": user}, "connected")
}

func (c *client) sub(ch string) obj {
	c.t.Helper()
	return c.mustCall("sub", map[string]any{"ch": ch}, "subscribed")
}

func (c *client) pub(ch string, data any) obj {
	c.t.Helper()
	return c.mustCall("pub", map[string]any{"ch": ch, "data": data}, "ack")
}

// waitClosed waits for the server to close the connection.
func (c *client) waitClosed() error {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.t.Fatal("connection was not closed by the server")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func forModes(t *testing.T, f func(t *testing.T, mode string)) {
	for _, m := range ioModes {
		t.Run(m, func(t *testing.T) { f(t, m) })
	}
}

func jsonStr(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func mustJSON(s string) any {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		panic(err)
	}
	return v
}
