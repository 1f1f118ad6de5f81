// Package wstest is a WebSocket test client for the gateway protocol: it
// dials a real server over a real socket (with github.com/coder/websocket,
// not the server's own library), reads every frame in the background and
// lets a test send commands and wait for the messages it expects.
package wstest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// DefaultTimeout is how long Next, Call and their kin wait for a message:
// generous, as CI runs packages side by side on 2 cores.
const DefaultTimeout = 10 * time.Second

// Msg is one decoded server message.
type Msg map[string]any

// Str is the string field k, or "".
func (m Msg) Str(k string) string { s, _ := m[k].(string); return s }

// Num is the number field k, or 0.
func (m Msg) Num(k string) uint64 { f, _ := m[k].(float64); return uint64(f) }

// Op is the message's op.
func (m Msg) Op() string { return m.Str("op") }

// Bytes is the data of a binary publication or snapshot (docs/protocol.md
// "Binary data"): the bytes of a binary message, or the base64 "bin" of a
// JSON one decoded; nil when the message has neither.
func (m Msg) Bytes() []byte {
	if b, ok := m[BinaryKey].([]byte); ok {
		return b
	}
	s, ok := m["bin"].(string)
	if !ok {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}

// Binary reports whether m came in a binary message.
func (m Msg) Binary() bool { _, ok := m[BinaryKey].([]byte); return ok }

// BinaryKey holds, in a Msg that came in a binary message, the bytes after
// its header line.
const BinaryKey = "_bytes"

// Client is one WebSocket connection of a test. Its methods are for one
// goroutine at a time. A failure ends the test with t.Fatalf, unless the
// client was dialed NonFatal: then it is reported with t.Errorf and the
// method returns a zero value (nil Msg, false), so the client can run off
// the test goroutine.
type Client struct {
	t        testing.TB
	name     string
	nonFatal bool
	binary   bool // binary messages expected (AcceptBinary)
	ws       *websocket.Conn
	in       chan Msg
	done     chan struct{}
	nextID   uint64

	mu      sync.Mutex
	closed  error // why the read loop ended
	backlog []Msg // received, not yet taken by Next
}

// Option changes how Dial sets up a client.
type Option func(*Client)

// Named prefixes the client's failure reports with name.
func Named(name string) Option { return func(c *Client) { c.name = name } }

// NonFatal makes the client report failures with t.Errorf and go on.
func NonFatal() Option { return func(c *Client) { c.nonFatal = true } }

// AcceptBinary lets the client take binary messages (a header line, then
// bytes: docs/protocol.md "Binary data"); without it a binary message from
// the server fails the test. It does not opt in: send "binary": true on
// connect for that.
func AcceptBinary() Option { return func(c *Client) { c.binary = true } }

// Dial connects to the WebSocket URL url (failing the test at once if it
// cannot); the connection is closed when the test ends.
func Dial(t testing.TB, url string, opts ...Option) *Client {
	t.Helper()
	c, err := DialHeader(t, url, nil, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

// DialHeader is Dial sending hdr (Cookie, Origin, ...) with the upgrade
// request; a refused upgrade is returned as the error, with the status.
func DialHeader(t testing.TB, url string, hdr http.Header, opts ...Option) (*Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("status %d: %w", resp.StatusCode, err)
		}
		return nil, err
	}
	ws.SetReadLimit(16 << 20)
	c := &Client{t: t, ws: ws, in: make(chan Msg, 100000), done: make(chan struct{})}
	for _, o := range opts {
		o(c)
	}
	go c.readLoop()
	t.Cleanup(c.Close)
	return c, nil
}

func (c *Client) readLoop() {
	defer close(c.done)
	for {
		typ, data, err := c.ws.Read(context.Background())
		if err != nil {
			c.mu.Lock()
			c.closed = err
			c.mu.Unlock()
			return
		}
		if typ == websocket.MessageBinary {
			c.binaryMessage(data)
			continue
		}
		// Read frames the strictest way a client may (PROTOCOL.md): split
		// on '\n', every non-blank line exactly one JSON object, with no
		// raw U+2028/U+2029 (the server escapes them). Anything else is
		// a broken frame, reported, never skipped.
		if !utf8.Valid(data) {
			c.t.Errorf("%sserver sent a text frame that is not UTF-8 (a browser closes the connection): %q", c.prefix(), data)
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var m Msg
			if err := json.Unmarshal(line, &m); err != nil || m == nil {
				c.t.Errorf("%sserver sent a line that is not one JSON object %q (frame %q): %v", c.prefix(), line, data, err)
				continue
			}
			if bytes.ContainsAny(line, "\u2028\u2029") {
				c.t.Errorf("%sserver sent a raw U+2028/U+2029: %q", c.prefix(), line)
			}
			c.in <- m
		}
	}
}

// binaryMessage takes a binary message: one JSON object, '\n', bytes.
func (c *Client) binaryMessage(data []byte) {
	if !c.binary {
		c.t.Errorf("%sserver sent a binary message to a client that did not ask for them: %q", c.prefix(), data)
		return
	}
	head, rest, ok := bytes.Cut(data, []byte("\n"))
	var m Msg
	if err := json.Unmarshal(head, &m); !ok || err != nil || m == nil {
		c.t.Errorf("%sserver sent a binary message without a JSON header line %q: %v", c.prefix(), data, err)
		return
	}
	if _, dup := m["data"]; dup {
		c.t.Errorf("%sbinary message with data in its header: %q", c.prefix(), head)
	}
	m[BinaryKey] = bytes.Clone(rest)
	c.in <- m
}

// SendBinary sends a binary message: header (a command without its
// data) as one JSON line, then data.
func (c *Client) SendBinary(header map[string]any, data []byte) bool {
	c.t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		c.fail("marshal %v: %v", header, err)
		return false
	}
	return c.SendBinaryRaw(append(append(h, '\n'), data...))
}

// SendBinaryRaw sends b as one binary message, as it is.
func (c *Client) SendBinaryRaw(b []byte) bool {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		c.fail("send binary: %v", err)
		return false
	}
	return true
}

// CallBinary sends a binary command (its id set here) and waits for the
// reply with that id.
func (c *Client) CallBinary(op string, header map[string]any, data []byte) Msg {
	c.t.Helper()
	c.nextID++
	h := map[string]any{"op": op, "id": c.nextID}
	for k, v := range header {
		h[k] = v
	}
	id := c.nextID
	if !c.SendBinary(h, data) {
		return nil
	}
	return c.Next(func(m Msg) bool { return m.Num("id") == id })
}

func (c *Client) prefix() string {
	if c.name == "" {
		return ""
	}
	return c.name + ": "
}

// fail reports a failure the client's way (see Client).
func (c *Client) fail(format string, args ...any) {
	c.t.Helper()
	if c.nonFatal {
		c.t.Errorf(c.prefix()+format, args...)
	} else {
		c.t.Fatalf(c.prefix()+format, args...)
	}
}

// Name is the name given with Named ("" without).
func (c *Client) Name() string { return c.name }

// Conn is the underlying connection, for what the methods do not cover.
func (c *Client) Conn() *websocket.Conn { return c.ws }

// Close drops the connection at once and waits for the read loop.
func (c *Client) Close() {
	_ = c.ws.CloseNow()
	<-c.done
}

// IsClosed says whether the connection has ended.
func (c *Client) IsClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// WaitClosed waits for the server to close the connection and returns the
// read error that ended it.
func (c *Client) WaitClosed() error {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(DefaultTimeout):
		c.fail("connection was not closed by the server")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Send writes v as one JSON text frame.
func (c *Client) Send(v any) bool {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.fail("marshal: %v", err)
		return false
	}
	return c.SendRaw(string(b))
}

// SendRaw writes s as one text frame.
func (c *Client) SendRaw(s string) bool {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		c.fail("write: %v", err)
		return false
	}
	return true
}

// Next returns the first message matching keep (nil keeps any), leaving
// the others queued in order for later calls; it fails after
// DefaultTimeout.
func (c *Client) Next(keep func(Msg) bool) Msg {
	c.t.Helper()
	return c.NextWithin(DefaultTimeout, "a message", keep)
}

// NextOp returns the first message with op.
func (c *Client) NextOp(op string) Msg {
	c.t.Helper()
	return c.NextWithin(DefaultTimeout, "op "+op, func(m Msg) bool { return m.Op() == op })
}

// NextWithin is Next with its own timeout; what names the awaited message
// in the failure.
func (c *Client) NextWithin(timeout time.Duration, what string, keep func(Msg) bool) Msg {
	c.t.Helper()
	if m := c.TryNext(timeout, keep); m != nil {
		return m
	}
	c.mu.Lock()
	backlog := fmt.Sprint(c.backlog)
	c.mu.Unlock()
	c.fail("timed out after %v waiting for %s; backlog %s", timeout, what, backlog)
	return nil
}

// TryNext is Next that returns nil, without failing, when no matching
// message arrives within timeout.
func (c *Client) TryNext(timeout time.Duration, keep func(Msg) bool) Msg {
	c.mu.Lock()
	for i, m := range c.backlog {
		if keep == nil || keep(m) {
			c.backlog = append(c.backlog[:i:i], c.backlog[i+1:]...)
			c.mu.Unlock()
			return m
		}
	}
	c.mu.Unlock()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-c.in:
			if keep == nil || keep(m) {
				return m
			}
			c.mu.Lock()
			c.backlog = append(c.backlog, m)
			c.mu.Unlock()
		case <-deadline:
			return nil
		}
	}
}

// None asserts that no message matching keep (nil: any) arrives within d.
func (c *Client) None(d time.Duration, keep func(Msg) bool) {
	c.t.Helper()
	c.mu.Lock()
	for _, m := range c.backlog {
		if keep == nil || keep(m) {
			c.mu.Unlock()
			c.fail("unexpected message %v", m)
			return
		}
	}
	c.mu.Unlock()
	timeout := time.After(d)
	for {
		select {
		case m := <-c.in:
			if keep == nil || keep(m) {
				c.fail("unexpected message %v", m)
				return
			}
			c.mu.Lock()
			c.backlog = append(c.backlog, m)
			c.mu.Unlock()
		case <-timeout:
			return
		}
	}
}

// Drain takes the queued and arriving messages matching keep until none
// arrives for quiet.
func (c *Client) Drain(quiet time.Duration, keep func(Msg) bool) []Msg {
	var out []Msg
	c.mu.Lock()
	rest := c.backlog[:0:0]
	for _, m := range c.backlog {
		if keep(m) {
			out = append(out, m)
		} else {
			rest = append(rest, m)
		}
	}
	c.backlog = rest
	c.mu.Unlock()
	for {
		select {
		case m := <-c.in:
			if keep(m) {
				out = append(out, m)
			} else {
				c.mu.Lock()
				c.backlog = append(c.backlog, m)
				c.mu.Unlock()
			}
		case <-time.After(quiet):
			return out
		}
	}
}

// Call sends command op with fields and a fresh id, and returns the reply
// with that id.
func (c *Client) Call(op string, fields map[string]any) Msg {
	c.t.Helper()
	c.nextID++
	id := c.nextID
	m := map[string]any{"op": op, "id": id}
	for k, v := range fields {
		m[k] = v
	}
	if !c.Send(m) {
		return nil
	}
	return c.NextWithin(DefaultTimeout, fmt.Sprintf("the reply to %s %v", op, fields), func(r Msg) bool { return r.Num("id") == id })
}

// MustCall is Call, failing unless the reply's op is want.
func (c *Client) MustCall(op string, fields map[string]any, want string) Msg {
	c.t.Helper()
	r := c.Call(op, fields)
	if r != nil && r.Op() != want {
		c.fail("%s %v: got %v, want op %q", op, fields, r, want)
		return nil
	}
	return r
}

// Connect authenticates as user and returns the connected reply.
func (c *Client) Connect(user string) Msg {
	c.t.Helper()
	return c.MustCall("connect", map[string]any{"user": user}, "connected")
}

// Sub subscribes to ch.
func (c *Client) Sub(ch string) Msg {
	c.t.Helper()
	return c.MustCall("sub", map[string]any{"ch": ch}, "subscribed")
}

// SubSince subscribes to ch, catching up after seq of epoch.
func (c *Client) SubSince(ch string, seq uint64, epoch string) Msg {
	c.t.Helper()
	return c.MustCall("sub", map[string]any{"ch": ch, "since": map[string]any{"seq": seq, "epoch": epoch}}, "subscribed")
}

// Pub publishes data on ch and returns the ack.
func (c *Client) Pub(ch string, data any) Msg {
	c.t.Helper()
	return c.MustCall("pub", map[string]any{"ch": ch, "data": data}, "ack")
}

// Msgs waits up to timeout for each of n msg frames of ch and returns them
// (fewer if one does not come and the client is NonFatal).
func (c *Client) Msgs(ch string, n int, timeout time.Duration) []Msg {
	c.t.Helper()
	out := make([]Msg, 0, n)
	for len(out) < n {
		m := c.NextWithin(timeout, fmt.Sprintf("msg %d of %d on %s", len(out)+1, n, ch), func(m Msg) bool { return m.Op() == "msg" && m.Str("ch") == ch })
		if m == nil {
			return out
		}
		out = append(out, m)
	}
	return out
}

// PresenceEvent waits for a join or leave (op) on ch whose field key
// ("user" or "client") is val.
func (c *Client) PresenceEvent(op, ch, key, val string, timeout time.Duration) Msg {
	c.t.Helper()
	return c.NextWithin(timeout, fmt.Sprintf("%s of %s %s on %s", op, key, val, ch), func(m Msg) bool {
		return m.Op() == op && m.Str("ch") == ch && m.Str(key) == val
	})
}

// Members returns the clients (id to user) the presence command lists on
// ch.
func (c *Client) Members(ch string) map[string]string {
	c.t.Helper()
	r := c.MustCall("presence", map[string]any{"ch": ch}, "presence")
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
