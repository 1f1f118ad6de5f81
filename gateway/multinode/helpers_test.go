package multinode_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
)

const wait = 10 * time.Second

// node is one gateway on a loopback port.
type node struct {
	srv    *gateway.Server
	addr   string
	broker brokers.Broker
	once   sync.Once
}

// startNode runs a gateway on b; it is shut down when the test ends.
func startNode(t *testing.T, b brokers.Broker, edit func(*config.Config)) *node {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	cfg.Presence.TTL = 2 * time.Second
	if edit != nil {
		edit(&cfg)
	}
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
	n := &node{srv: srv, addr: ln.Addr().String(), broker: b}
	t.Cleanup(func() {
		n.shutdown(t)
		if err := <-done; err != gateway.ErrServerClosed {
			t.Errorf("serve returned %v", err)
		}
	})
	return n
}

func (n *node) shutdown(t *testing.T) {
	n.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.srv.Shutdown(ctx); err != nil {
			t.Logf("shutdown: %v", err)
		}
	})
}

// obj is one decoded server message.
type obj map[string]any

func (o obj) str(k string) string { s, _ := o[k].(string); return s }
func (o obj) num(k string) uint64 { f, _ := o[k].(float64); return uint64(f) }
func (o obj) op() string          { return o.str("op") }

// client is a WebSocket client reading every frame in the background. Its
// methods are for one goroutine; they report failures with t.Errorf and
// return zero values, so they can run off the test goroutine.
type client struct {
	t      *testing.T
	name   string
	ws     *websocket.Conn
	in     chan obj
	done   chan struct{}
	nextID uint64
	queued []obj
}

func dial(t *testing.T, n *node, name string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+n.addr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", n.addr, err)
	}
	ws.SetReadLimit(16 << 20)
	c := &client{t: t, name: name, ws: ws, in: make(chan obj, 100000), done: make(chan struct{})}
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
				c.t.Errorf("%s: invalid JSON %q: %v", c.name, data, err)
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

func (c *client) send(v any) bool {
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Errorf("%s: write: %v", c.name, err)
		return false
	}
	return true
}

// next returns the first message matching keep (others stay queued), or
// nil after timeout (and an error).
func (c *client) next(timeout time.Duration, what string, keep func(obj) bool) obj {
	for i, o := range c.queued {
		if keep(o) {
			c.queued = append(c.queued[:i:i], c.queued[i+1:]...)
			return o
		}
	}
	deadline := time.After(timeout)
	for {
		select {
		case o := <-c.in:
			if keep(o) {
				return o
			}
			c.queued = append(c.queued, o)
		case <-deadline:
			c.t.Errorf("%s: timed out after %v waiting for %s", c.name, timeout, what)
			return nil
		}
	}
}

// drain returns the queued and arriving messages matching keep until none
// arrives for quiet.
func (c *client) drain(quiet time.Duration, keep func(obj) bool) []obj {
	var out []obj
	rest := c.queued[:0:0]
	for _, o := range c.queued {
		if keep(o) {
			out = append(out, o)
		} else {
			rest = append(rest, o)
		}
	}
	c.queued = rest
	for {
		select {
		case o := <-c.in:
			if keep(o) {
				out = append(out, o)
			} else {
				c.queued = append(c.queued, o)
			}
		case <-time.After(quiet):
			return out
		}
	}
}

func (c *client) call(op string, fields map[string]any) obj {
	c.nextID++
	id := c.nextID
	m := map[string]any{"op": op, "id": id}
	for k, v := range fields {
		m[k] = v
	}
	if !c.send(m) {
		return nil
	}
	return c.next(wait, fmt.Sprintf("the reply to %s %v", op, fields), func(o obj) bool { return o.num("id") == id })
}

func (c *client) mustCall(op string, fields map[string]any, want string) obj {
	r := c.call(op, fields)
	if r != nil && r.op() != want {
		c.t.Errorf("%s: %s %v: got %v, want op %q", c.name, op, fields, r, want)
		return nil
	}
	return r
}

func (c *client) connect(user string) obj {
	return c.mustCall("connect", map[string]any{"user": user}, "connected")
}

func (c *client) sub(ch string) obj {
	return c.mustCall("sub", map[string]any{"ch": ch}, "subscribed")
}

func (c *client) subSince(ch string, seq uint64, epoch string) obj {
	return c.mustCall("sub", map[string]any{"ch": ch, "since": map[string]any{"seq": seq, "epoch": epoch}}, "subscribed")
}

func (c *client) pub(ch string, data any) obj {
	return c.mustCall("pub", map[string]any{"ch": ch, "data": data}, "ack")
}

// msgs waits for n msg frames of ch and returns them.
func (c *client) msgs(ch string, n int) []obj {
	out := make([]obj, 0, n)
	for len(out) < n {
		o := c.next(wait, fmt.Sprintf("msg %d of %d on %s", len(out)+1, n, ch), func(o obj) bool { return o.op() == "msg" && o.str("ch") == ch })
		if o == nil {
			return out
		}
		out = append(out, o)
	}
	return out
}

// presenceEvent waits for a join or leave of user on ch.
func (c *client) presenceEvent(op, ch, user string, timeout time.Duration) obj {
	return c.next(timeout, fmt.Sprintf("%s of %s on %s", op, user, ch), func(o obj) bool {
		return o.op() == op && o.str("ch") == ch && o.str("user") == user
	})
}
