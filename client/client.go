package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Options configures a Client. The zero value connects anonymously (auth
// off) with the defaults below.
type Options struct {
	// Token is the JWT sent in `connect` when the server has auth on.
	Token string
	// TokenFunc, when set, supplies tokens: for `connect` when Token is
	// empty, shortly before the current token's exp (sent as `refresh`),
	// and after the server closed the connection with `token_expired`.
	TokenFunc func(ctx context.Context) (string, error)
	// User is the user name sent in `connect` when auth is off.
	User string

	// MinBackoff is the first reconnect delay; default 250ms. Each failed
	// attempt doubles it up to MaxBackoff (default 10s); the delay used is
	// half fixed, half random ("equal jitter").
	MinBackoff, MaxBackoff time.Duration
	// WriteTimeout bounds one frame write; default 10s.
	WriteTimeout time.Duration
	// RefreshMargin: the token is renewed this long before exp (at most a
	// fifth of its remaining lifetime); default 30s.
	RefreshMargin time.Duration
	// MaxMessageSize bounds one frame read from the server (a `subscribed`
	// reply carries the missed messages); default 32 MiB.
	MaxMessageSize int64

	// HTTPClient and HTTPHeader are used for the WebSocket handshake.
	HTTPClient *http.Client
	HTTPHeader http.Header

	// OnState is called on every connection state change, from the
	// client's goroutine: it must not block or call the Client's methods
	// synchronously. err is why the connection was lost (nil otherwise).
	OnState func(s State, err error)
	// Log gets reconnects and dropped events; nil discards.
	Log *slog.Logger
}

func (o *Options) setDefaults() {
	if o.MinBackoff <= 0 {
		o.MinBackoff = 250 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.RefreshMargin <= 0 {
		o.RefreshMargin = 30 * time.Second
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = 32 << 20
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// State is the connection state of a Client.
type State int

const (
	StateConnected    State = iota + 1 // connected and subscribed
	StateReconnecting                  // the connection dropped; retrying
	StateClosed                        // Close was called, or the server refused for good
)

func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Member is one entry of a presence list.
type Member struct {
	User   string `json:"user"`
	Client string `json:"client"`
}

// Client is a connection to a syncgate node that reconnects by itself.
type Client struct {
	url  string
	opts Options

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	nextID atomic.Uint64

	mu        sync.Mutex
	cn        *wsConn       // the live connection; nil while reconnecting
	ready     chan struct{} // closed while cn != nil; replaced when it drops
	state     State
	token     string
	exp       int64 // unix seconds; 0 = none
	user      string
	clientID  string
	pingEvery time.Duration
	subs      map[string]*Subscription
	closeErr  error // why the client is closed
	rtt       time.Duration
}

// wsConn is one WebSocket connection with its pending commands.
type wsConn struct {
	ws   *websocket.Conn
	done chan struct{} // closed when the reader exits

	mu         sync.Mutex
	pending    map[uint64]*pending
	dead       bool
	err        error  // why the reader exited
	disconnect *frame // the server's `disconnect`, if it sent one
}

type pending struct {
	reply   chan *frame // buffered 1
	onReply func(*frame)
}

// frame is one server message.
type frame struct {
	Op        string          `json:"op"`
	ID        uint64          `json:"id"`
	Ch        string          `json:"ch"`
	Seq       uint64          `json:"seq"`
	Epoch     string          `json:"epoch"`
	Was       *Position       `json:"was"`
	From      string          `json:"from"`
	Data      json.RawMessage `json:"data"`
	Bin       []byte          `json:"bin"` // a binary publication's bytes (base64 on the wire)
	User      string          `json:"user"`
	Client    string          `json:"client"`
	Ping      int64           `json:"ping"`
	Exp       int64           `json:"exp"`
	Recovered *bool           `json:"recovered"`
	Pubs      []frame         `json:"pubs"`
	More      bool            `json:"more"`
	Users     []Member        `json:"users"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	Reason    string          `json:"reason"`
	Reconnect bool            `json:"reconnect"`
}

// Dial connects to the node at url (ws://host:port/ws or wss://...) and
// sends `connect`. It makes one attempt: an error means no Client. After it
// returns, the Client reconnects by itself until Close.
func Dial(ctx context.Context, url string, opts Options) (*Client, error) {
	opts.setDefaults()
	cctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		url:    url,
		opts:   opts,
		ctx:    cctx,
		cancel: cancel,
		ready:  make(chan struct{}),
		token:  opts.Token,
		subs:   make(map[string]*Subscription),
	}
	cn, err := c.connect(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	c.wg.Add(1)
	go c.run(cn)
	return c, nil
}

// User is the user id the server gave this client (from the last
// `connected`).
func (c *Client) User() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// ClientID is this connection's id from the last `connected`; it changes
// on every reconnect.
func (c *Client) ClientID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientID
}

// State is the current connection state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// RTT is the round trip of the last ping (0 before the first).
func (c *Client) RTT() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtt
}

// Close closes the connection and stops reconnecting. Subscriptions end
// with ErrClosed after their queued events; commands waiting fail with
// ErrClosed. It returns once the client's goroutines have exited.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closeErr == nil {
		c.closeErr = ErrClosed
	}
	cn := c.cn
	c.mu.Unlock()
	if cn != nil {
		// A clean close handshake (the server then removes us from presence
		// at once); bounded by the library's own close timeout.
		_ = cn.ws.Close(websocket.StatusNormalClosure, "")
	}
	c.cancel()
	c.wg.Wait()
	return nil
}

// Publish publishes data (marshalled with encoding/json; a json.RawMessage
// is sent as is) on ch and returns the seq the server gave it.
func (c *Client) Publish(ctx context.Context, ch string, data any) (uint64, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("client: publish %s: %w", ch, err)
	}
	f, err := c.call(ctx, map[string]any{"op": "pub", "ch": ch, "data": json.RawMessage(raw)}, nil)
	if err != nil {
		return 0, err
	}
	return f.Seq, nil
}

// Presence lists who is subscribed to ch now.
func (c *Client) Presence(ctx context.Context, ch string) ([]Member, error) {
	f, err := c.call(ctx, map[string]any{"op": "presence", "ch": ch}, nil)
	if err != nil {
		return nil, err
	}
	return f.Users, nil
}

// Ping sends `ping` and returns the round trip.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	if _, err := c.call(ctx, map[string]any{"op": "ping"}, nil); err != nil {
		return 0, err
	}
	d := time.Since(t0)
	c.mu.Lock()
	c.rtt = d
	c.mu.Unlock()
	return d, nil
}

// ---- commands ----

// waitConn returns the live connection, waiting while reconnecting.
func (c *Client) waitConn(ctx context.Context) (*wsConn, error) {
	for {
		c.mu.Lock()
		cn, ready, cerr := c.cn, c.ready, c.closeErr
		c.mu.Unlock()
		if cerr != nil {
			return nil, cerr
		}
		if cn != nil {
			return cn, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, c.closedErr()
		}
	}
}

func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr != nil {
		return c.closeErr
	}
	return ErrClosed
}

// call sends cmd on the live connection (waiting for one) and returns its
// reply. onReply runs in the reader goroutine before call returns, in order
// with the messages that follow the reply.
func (c *Client) call(ctx context.Context, cmd map[string]any, onReply func(*frame)) (*frame, error) {
	cn, err := c.waitConn(ctx)
	if err != nil {
		return nil, err
	}
	return c.callOn(ctx, cn, cmd, onReply)
}

func (c *Client) callOn(ctx context.Context, cn *wsConn, cmd map[string]any, onReply func(*frame)) (*frame, error) {
	id := c.nextID.Add(1)
	cmd["id"] = id
	p := &pending{reply: make(chan *frame, 1), onReply: onReply}
	if !cn.addPending(id, p) {
		return nil, ErrConnectionLost
	}
	if err := c.write(cn, cmd); err != nil {
		cn.removePending(id)
		return nil, err
	}
	select {
	case f := <-p.reply:
		return replyErr(f)
	case <-cn.done:
		select {
		case f := <-p.reply:
			return replyErr(f)
		default:
		}
		return nil, ErrConnectionLost
	case <-ctx.Done():
		cn.removePending(id)
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, c.closedErr()
	}
}

func replyErr(f *frame) (*frame, error) {
	if f.Op == "error" {
		return nil, &ServerError{Code: f.Code, Message: f.Message}
	}
	return f, nil
}

// write sends one JSON object. The write has its own timeout: cancelling
// a caller's ctx must not close the shared connection mid-frame.
func (c *Client) write(cn *wsConn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.writeRaw(cn, b)
}

func (c *Client) writeRaw(cn *wsConn, b []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.WriteTimeout)
	defer cancel()
	if err := cn.ws.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("%w: %v", ErrConnectionLost, err)
	}
	return nil
}

func (cn *wsConn) addPending(id uint64, p *pending) bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.dead {
		return false
	}
	cn.pending[id] = p
	return true
}

func (cn *wsConn) removePending(id uint64) {
	cn.mu.Lock()
	delete(cn.pending, id)
	cn.mu.Unlock()
}

// ---- connection lifecycle ----

// connect dials, sends `connect`, resubscribes every subscription and then
// makes the connection live for waiting commands.
func (c *Client) connect(ctx context.Context) (*wsConn, error) {
	c.mu.Lock()
	token := c.token
	c.mu.Unlock()
	if token == "" && c.opts.TokenFunc != nil {
		t, err := c.opts.TokenFunc(ctx)
		if err != nil {
			return nil, fmt.Errorf("client: token: %w", err)
		}
		token = t
		c.mu.Lock()
		c.token = t
		c.mu.Unlock()
	}
	ws, _, err := websocket.Dial(ctx, c.url, &websocket.DialOptions{HTTPClient: c.opts.HTTPClient, HTTPHeader: c.opts.HTTPHeader})
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", c.url, err)
	}
	ws.SetReadLimit(c.opts.MaxMessageSize)
	cn := &wsConn{ws: ws, done: make(chan struct{}), pending: make(map[uint64]*pending)}
	c.wg.Add(1)
	go c.readLoop(cn)

	cmd := map[string]any{"op": "connect"}
	if token != "" {
		cmd["token"] = token
	} else if c.opts.User != "" {
		cmd["user"] = c.opts.User
	}
	f, err := c.callOn(ctx, cn, cmd, nil)
	if err != nil {
		cn.ws.CloseNow()
		<-cn.done
		var se *ServerError
		if errors.As(err, &se) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if d := cn.disconnectFrame(); d != nil {
			return nil, &DisconnectError{Code: d.Code, Reason: d.Reason, Reconnect: d.Reconnect}
		}
		return nil, fmt.Errorf("client: connect: %w", err)
	}

	c.mu.Lock()
	c.user, c.clientID = f.User, f.Client
	c.exp = f.Exp
	c.pingEvery = time.Duration(f.Ping) * time.Second
	if c.pingEvery <= 0 {
		c.pingEvery = 25 * time.Second
	}
	// Resubscribe before waiting commands run, so nothing published by
	// this client overtakes its own subscriptions. Replies are handled by
	// the reader (in order with the messages that follow them).
	var batch [][]byte
	for _, s := range c.subs {
		batch = append(batch, c.subCmdLocked(cn, s))
	}
	c.cn = cn
	c.state = StateConnected
	close(c.ready)
	c.mu.Unlock()
	if len(batch) > 0 {
		if err := c.writeRaw(cn, bytes.Join(batch, []byte("\n"))); err != nil {
			cn.ws.CloseNow() // the supervisor reconnects
		}
	}
	c.notify(StateConnected, nil)
	return cn, nil
}

// run is the supervisor: it keeps a connection up until Close.
func (c *Client) run(cn *wsConn) {
	defer c.wg.Done()
	attempt := 0
	for {
		up := time.Now()
		c.serve(cn)
		err := c.lost(cn)
		if c.ctx.Err() != nil {
			c.shutdown(cn, nil)
			return
		}
		var de *DisconnectError
		if errors.As(err, &de) && !de.Reconnect {
			c.shutdown(cn, err)
			return
		}
		if errors.As(err, &de) && de.Code == "token_expired" && c.opts.TokenFunc != nil {
			c.mu.Lock()
			c.token = ""
			c.mu.Unlock()
		}
		if time.Since(up) > 5*time.Second {
			attempt = 0
		}
		c.notify(StateReconnecting, err)
		for {
			d := backoff(c.opts.MinBackoff, c.opts.MaxBackoff, attempt)
			attempt++
			t := time.NewTimer(d)
			select {
			case <-c.ctx.Done():
				t.Stop()
				c.shutdown(nil, nil)
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second+c.opts.MaxBackoff)
			next, err := c.connect(ctx)
			cancel()
			if err == nil {
				cn = next
				break
			}
			if c.ctx.Err() != nil {
				c.shutdown(nil, nil)
				return
			}
			var se *ServerError
			if errors.As(err, &se) && (se.Code == "unauthorized" || se.Code == "forbidden") {
				if c.opts.TokenFunc != nil && attempt < 3 {
					c.mu.Lock()
					c.token = "" // try a fresh token
					c.mu.Unlock()
				} else {
					c.shutdown(nil, err)
					return
				}
			}
			if errors.As(err, &de) && !de.Reconnect {
				c.shutdown(nil, err)
				return
			}
			c.opts.Log.Debug("syncgate client: reconnect failed", "attempt", attempt, "err", err)
		}
	}
}

// backoff is the delay before attempt n (0-based): min*2^n capped at max,
// half of it fixed and half random.
func backoff(min, max time.Duration, n int) time.Duration {
	d := max
	if n < 30 {
		d = min << n
		if d > max || d <= 0 {
			d = max
		}
	}
	return d/2 + rand.N(d/2+1)
}

// serve pings and refreshes the token until cn's reader exits or the
// client closes.
func (c *Client) serve(cn *wsConn) {
	c.mu.Lock()
	every := c.pingEvery
	c.mu.Unlock()
	ping := time.NewTicker(every)
	defer ping.Stop()
	refresh := c.refreshTimer()
	defer refresh.Stop()
	// Pings run in their own short-lived goroutine so a slow pong never
	// blocks this loop; one at a time.
	var pinging atomic.Bool
	var pw sync.WaitGroup
	defer pw.Wait()
	for {
		select {
		case <-cn.done:
			return
		case <-c.ctx.Done():
			return
		case <-ping.C:
			if !pinging.CompareAndSwap(false, true) {
				// No pong for a whole interval: the connection is dead.
				c.opts.Log.Info("syncgate client: no pong; reconnecting")
				cn.ws.CloseNow()
				continue
			}
			pw.Add(1)
			go func() {
				defer pw.Done()
				ctx, cancel := context.WithTimeout(c.ctx, 2*every)
				defer cancel()
				t0 := time.Now()
				if _, err := c.callOn(ctx, cn, map[string]any{"op": "ping"}, nil); err == nil {
					c.mu.Lock()
					c.rtt = time.Since(t0)
					c.mu.Unlock()
					pinging.Store(false)
				}
			}()
		case <-refresh.C:
			c.refreshToken(cn)
			refresh.Stop()
			refresh = c.refreshTimer()
		}
	}
}

// refreshTimer fires RefreshMargin (at most a fifth of the remaining
// lifetime) before the token's exp; never without TokenFunc or exp.
func (c *Client) refreshTimer() *time.Timer {
	c.mu.Lock()
	exp := c.exp
	c.mu.Unlock()
	if exp == 0 || c.opts.TokenFunc == nil {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	left := time.Until(time.Unix(exp, 0))
	return time.NewTimer(max(0, left-min(c.opts.RefreshMargin, left/5)))
}

func (c *Client) refreshToken(cn *wsConn) {
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	tok, err := c.opts.TokenFunc(ctx)
	if err != nil {
		c.opts.Log.Warn("syncgate client: token refresh failed", "err", err)
		c.mu.Lock()
		c.exp = 0 // don't spin; the server closes with token_expired and we reconnect
		c.mu.Unlock()
		return
	}
	f, err := c.callOn(ctx, cn, map[string]any{"op": "refresh", "token": tok}, nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.opts.Log.Warn("syncgate client: refresh rejected", "err", err)
		c.exp = 0
		return
	}
	c.token, c.exp = tok, f.Exp
}

// lost takes cn out of service: waiting commands fail, subscriptions stop
// being live until resubscribed. It returns why cn ended.
func (c *Client) lost(cn *wsConn) error {
	cn.ws.CloseNow()
	<-cn.done
	c.mu.Lock()
	if c.cn == cn {
		c.cn = nil
		c.ready = make(chan struct{})
		c.state = StateReconnecting
	}
	for _, s := range c.subs {
		s.live = false
	}
	c.mu.Unlock()
	if d := cn.disconnectFrame(); d != nil {
		return &DisconnectError{Code: d.Code, Reason: d.Reason, Reconnect: d.Reconnect}
	}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if errors.Is(cn.err, ErrProtocol) {
		return cn.err
	}
	return fmt.Errorf("%w: %v", ErrConnectionLost, cn.err)
}

// shutdown ends the client: closes cn, fails subscriptions and waiting
// commands with err (ErrClosed when nil).
func (c *Client) shutdown(cn *wsConn, err error) {
	if cn != nil {
		cn.ws.CloseNow()
		<-cn.done
	}
	c.mu.Lock()
	if c.closeErr == nil {
		if err == nil {
			err = ErrClosed
		}
		c.closeErr = err
	}
	err = c.closeErr
	c.cn = nil
	c.state = StateClosed
	subs := c.subs
	c.subs = map[string]*Subscription{}
	c.mu.Unlock()
	c.cancel()
	for _, s := range subs {
		s.end(err)
	}
	if errors.Is(err, ErrClosed) {
		err = nil
	}
	c.notify(StateClosed, err)
}

func (c *Client) notify(s State, err error) {
	if c.opts.OnState != nil {
		c.opts.OnState(s, err)
	}
}

func (cn *wsConn) disconnectFrame() *frame {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.disconnect
}

// ---- reading ----

func (c *Client) readLoop(cn *wsConn) {
	defer c.wg.Done()
	var err error
	defer func() {
		cn.mu.Lock()
		cn.dead = true
		cn.err = err
		cn.pending = nil
		cn.mu.Unlock()
		close(cn.done)
	}()
	for {
		var data []byte
		_, data, err = cn.ws.Read(c.ctx)
		if err != nil {
			return
		}
		frames, perr := parseFrame(data)
		if perr != nil {
			err = perr
			c.opts.Log.Warn("syncgate client: protocol error; reconnecting", "err", perr)
			return
		}
		for _, f := range frames {
			c.dispatch(cn, f)
		}
	}
}

// parseFrame splits a frame into its messages: one JSON object per line
// (PROTOCOL.md: no object the server sends contains a raw newline). A line
// that is not exactly one JSON object is a protocol error of the
// connection, and then nothing of the frame is used: the other lines are
// not to be trusted either.
func parseFrame(data []byte) ([]*frame, error) {
	var out []*frame
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = bytes.TrimRight(line, " \t\r")
		line = bytes.TrimLeft(line, " \t\r")
		if len(line) == 0 {
			continue
		}
		f := new(frame)
		if line[0] != '{' {
			return nil, fmt.Errorf("%w: line %d of a frame is not a JSON object: %.64q", ErrProtocol, n, line)
		}
		if err := json.Unmarshal(line, f); err != nil {
			return nil, fmt.Errorf("%w: line %d of a frame: %v: %.64q", ErrProtocol, n, err, line)
		}
		out = append(out, f)
	}
	return out, nil
}

func (c *Client) dispatch(cn *wsConn, f *frame) {
	if f.ID != 0 {
		cn.mu.Lock()
		p := cn.pending[f.ID]
		delete(cn.pending, f.ID)
		cn.mu.Unlock()
		if p != nil {
			if p.onReply != nil {
				p.onReply(f)
			}
			p.reply <- f
			return
		}
	}
	switch f.Op {
	case "msg":
		c.mu.Lock()
		s := c.subs[f.Ch]
		if s != nil && s.live && s.conn == cn {
			if s.deliverLocked(f) && s.catching {
				s.missed++
			}
		}
		c.mu.Unlock()
	case "caught_up":
		c.mu.Lock()
		s := c.subs[f.Ch]
		if s != nil && s.live && s.conn == cn && s.catching {
			s.caughtUpLocked(f)
		}
		c.mu.Unlock()
	case "join", "leave":
		c.mu.Lock()
		s := c.subs[f.Ch]
		if s != nil && s.live && s.conn == cn {
			t := Join
			if f.Op == "leave" {
				t = Leave
			}
			s.push(Event{Type: t, Channel: f.Ch, User: f.User, Client: f.Client})
		}
		c.mu.Unlock()
	case "unsubscribed":
		// No id: the server ended the subscription (server API
		// unsubscribe); it is not resubscribed on reconnect.
		c.mu.Lock()
		s := c.subs[f.Ch]
		if s != nil && s.conn == cn {
			delete(c.subs, f.Ch)
		} else {
			s = nil
		}
		c.mu.Unlock()
		if s != nil {
			s.end(ErrUnsubscribedByServer)
		}
	case "disconnect":
		cn.mu.Lock()
		cn.disconnect = f
		cn.mu.Unlock()
	case "error":
		c.opts.Log.Warn("syncgate client: server error", "code", f.Code, "message", f.Message)
	}
}
