package multinode_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
)

// childEnv, when set to a Redis address, makes the test binary run one
// gateway node on it instead of the tests (see startChild).
const childEnv = "SYNCGATE_MULTINODE_CHILD"

func TestMain(m *testing.M) {
	goredis.SetLogger(quietLogger{log.New(io.Discard, "", 0)})
	if addr := os.Getenv(childEnv); addr != "" {
		runChild(addr)
		return
	}
	goleak.VerifyTestMain(m)
}

type quietLogger struct{ *log.Logger }

func (l quietLogger) Printf(_ context.Context, format string, v ...any) {
	l.Logger.Printf(format, v...)
}

// nodeConfig is the gateway configuration of a test node on Redis addr.
func nodeConfig(addr string) config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Broker.Type = "redis"
	cfg.Redis.Addrs = []string{addr}
	cfg.Presence.TTL = time.Second // the smallest allowed
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	return cfg
}

// newBroker is the node's broker, with short timeouts for tests.
func newBroker(cfg config.Config) *redis.Broker {
	return redis.New(redis.Config{
		Addrs:         cfg.Redis.Addrs,
		HistorySize:   cfg.History.Size,
		HistoryTTL:    cfg.History.TTL,
		DialTimeout:   500 * time.Millisecond,
		ReadTimeout:   time.Second,
		ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout:  500 * time.Millisecond,
		ReconnectMin:  20 * time.Millisecond,
		ReconnectMax:  200 * time.Millisecond,
	})
}

type node struct {
	srv *gateway.Server
	url string
}

// startNode runs a gateway node on Redis addr, shut down at cleanup.
func startNode(t *testing.T, addr string) *node {
	t.Helper()
	cfg := nodeConfig(addr)
	srv, err := gateway.New(cfg, newBroker(cfg), nil)
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
		<-done
	})
	return &node{srv: srv, url: "ws://" + ln.Addr().String() + "/ws"}
}

// runChild runs one node until killed, printing its address.
func runChild(addr string) {
	cfg := nodeConfig(addr)
	srv, err := gateway.New(cfg, newBroker(cfg), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	_ = srv.Serve(ln)
}

// startChild runs a node in a child process (this test binary) and
// returns its WebSocket URL and the process, killed at cleanup.
func startChild(t *testing.T, addr string) (string, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+addr)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child node: %v", err)
	}
	listen, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
	if !ok {
		t.Fatalf("child node said %q", line)
	}
	return "ws://" + listen + "/ws", cmd
}

// obj is one decoded server message.
type obj map[string]any

func (o obj) str(k string) string { s, _ := o[k].(string); return s }
func (o obj) num(k string) uint64 { f, _ := o[k].(float64); return uint64(f) }
func (o obj) op() string          { return o.str("op") }

// client is a WebSocket client reading every frame in the background.
type client struct {
	t      testing.TB
	ws     *websocket.Conn
	in     chan obj
	done   chan struct{}
	nextID uint64

	mu      sync.Mutex
	backlog []obj // received, not yet taken by next
}

func dial(t testing.TB, url string) *client {
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
	t.Cleanup(c.close)
	return c
}

func (c *client) readLoop() {
	defer close(c.done)
	for {
		_, data, err := c.ws.Read(context.Background())
		if err != nil {
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the first message matching keep (others stay queued in
// order), failing after timeout.
func (c *client) next(timeout time.Duration, keep func(obj) bool) obj {
	c.t.Helper()
	c.mu.Lock()
	for i, o := range c.backlog {
		if keep(o) {
			c.backlog = append(c.backlog[:i:i], c.backlog[i+1:]...)
			c.mu.Unlock()
			return o
		}
	}
	c.mu.Unlock()
	deadline := time.After(timeout)
	for {
		select {
		case o := <-c.in:
			if keep(o) {
				return o
			}
			c.mu.Lock()
			c.backlog = append(c.backlog, o)
			c.mu.Unlock()
		case <-deadline:
			c.t.Fatalf("timed out after %v waiting for a message", timeout)
			return nil
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
	return c.next(10*time.Second, func(o obj) bool { return o.num("id") == id })
}

func (c *client) mustCall(op string, fields map[string]any, want string) obj {
	c.t.Helper()
	r := c.call(op, fields)
	if r.op() != want {
		c.t.Fatalf("%s %v: got %v, want op %q", op, fields, r, want)
	}
	return r
}

func (c *client) connect(user string) string {
	c.t.Helper()
	return c.mustCall("connect", map[string]any{"user": user}, "connected").str("client")
}

// msgs waits for n msg frames on ch and returns them.
func (c *client) msgs(ch string, n int, timeout time.Duration) []obj {
	c.t.Helper()
	out := make([]obj, 0, n)
	for len(out) < n {
		out = append(out, c.next(timeout, func(o obj) bool { return o.op() == "msg" && o.str("ch") == ch }))
	}
	return out
}

// presenceEvent waits for a join or leave of client on ch.
func (c *client) presenceEvent(op, ch, client string, timeout time.Duration) obj {
	c.t.Helper()
	return c.next(timeout, func(o obj) bool { return o.op() == op && o.str("ch") == ch && o.str("client") == client })
}

// members returns the clients the presence command lists on ch.
func (c *client) members(ch string) map[string]string {
	c.t.Helper()
	r := c.mustCall("presence", map[string]any{"ch": ch}, "presence")
	out := make(map[string]string)
	users, _ := r["users"].([]any)
	for _, u := range users {
		m, _ := u.(map[string]any)
		cl, _ := m["client"].(string)
		us, _ := m["user"].(string)
		out[cl] = us
	}
	return out
}
