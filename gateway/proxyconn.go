package gateway

import (
	"bytes"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// connProxy is a connection's event proxy state; nil unless a hook is
// configured.
//
// Ordering: commands run in the order the client sent them, and are
// answered in that order. On an epoll read turn a command that needs a
// hook call is not run: it is queued, with every command that follows it,
// and a goroutine of the connection (runQueued) runs the queue, calling
// the backend, until it is empty; the read turn goes on to the next
// connection at once. While the queue is busy the reader only appends to
// it, so the reader and the runner never run commands at the same time.
// The queue is bounded (proxyQueueCmds commands and 2 x
// client.max_message_size bytes); a client that passes it while its
// backend calls are pending is disconnected (rate_limited, no reconnect).
// Errors that answer no command (too_large, a binary frame) are queued
// too while the queue is busy (sendUnanswering), so they keep their place.
//
// In goroutine mode (and for SSE and POST /pub, served on their own
// goroutines) a command calls the backend inline: only its connection
// waits.
type connProxy struct {
	fwd       *forwarded
	remote    string
	transport string
	proxied   atomic.Bool // admitted by the connect hook: the refresh hook renews it

	// refreshed replaces conn.ident once a refresh answer named new
	// permissions (the refresh runs off the reader, so it cannot write
	// conn.ident).
	refreshed atomic.Pointer[identity]

	mu     sync.Mutex
	busy   bool     // a runner owns the command stream
	queue  []pxItem // what waits, oldest first
	queued int      // the bytes of its raw commands
}

// pxItem is one entry of the proxy queue: a raw command, or (frame set)
// an error that answers no command (too_large, a binary frame), which
// goes out in its turn so it does not overtake earlier replies.
type pxItem struct {
	raw   []byte
	frame []byte
}

const proxyQueueCmds = 256

// newConnProxy keeps what the hooks forward from the client's request
// headers (get returns the values of a lower-case header name).
func (s *Server) newConnProxy(remote, transport string, get func(string) []string) *connProxy {
	if s.proxy == nil {
		return nil
	}
	return &connProxy{fwd: s.proxy.capture(get), remote: remote, transport: transport}
}

func httpHeaderGetter(h http.Header) func(string) []string {
	return func(name string) []string { return h.Values(name) }
}

// identity is what governs the connection's permissions now.
func (c *conn) identity() *identity {
	if c.px != nil {
		if id := c.px.refreshed.Load(); id != nil {
			return id
		}
	}
	return c.ident.Load()
}

func (c *conn) clientInfo() clientInfo {
	ci := clientInfo{client: c.id, user: c.user, transport: "websocket"}
	if c.px != nil {
		ci.fwd, ci.remote, ci.transport = c.px.fwd, c.px.remote, c.px.transport
	}
	return ci
}

// needsProxy says whether cmd would call a hook.
func (c *conn) needsProxy(cmd *command) bool {
	p := c.srv.proxy
	switch cmd.op {
	case opConnect:
		return !c.connected && p.on(hookConnect) && c.useConnectProxy(cmd)
	case opSub:
		return p.on(hookSubscribe)
	case opPub:
		return p.on(hookPublish)
	}
	return false
}

// useConnectProxy: the connect hook decides a connect that brings no JWT
// (a token wins when auth is on and one is given).
func (c *conn) useConnectProxy(cmd *command) bool {
	return c.srv.auth == nil || (len(cmd.token) == 0 && c.urlToken == "")
}

// deferCommand queues the raw command (whether it decoded or not) when the
// connection's commands are waiting for a hook, or when cmd (nil if it did
// not decode) needs one and s is a read turn's scratch. It reports whether
// it took the command.
func (c *conn) deferCommand(s *scratch, raw []byte, cmd *command) bool {
	px := c.px
	if px == nil || !s.loop {
		return false
	}
	px.mu.Lock()
	if !px.busy {
		if cmd == nil || !c.needsProxy(cmd) {
			px.mu.Unlock()
			return false
		}
		if !c.srv.proxy.reserveQueue(len(raw)) {
			px.mu.Unlock()
			c.queueFull(raw, cmd)
			return true
		}
		px.busy = true
		px.queue = append(px.queue, pxItem{raw: bytes.Clone(raw)})
		px.queued = len(raw)
		px.mu.Unlock()
		c.srv.goOwned(c.runQueued)
		return true
	}
	if len(px.queue) >= proxyQueueCmds || px.queued+len(raw) > 2*c.srv.cfg.Client.MaxMessageSize {
		px.mu.Unlock()
		c.closeWith("rate_limited", "too many commands waiting for the event proxy", false, ws.StatusPolicyViolation, false)
		return true
	}
	if !c.srv.proxy.reserveQueue(len(raw)) {
		// Answered in its turn, behind what is queued already.
		px.queue = append(px.queue, pxItem{frame: queueFullFrame(raw, cmd)})
		px.mu.Unlock()
		return true
	}
	px.queue = append(px.queue, pxItem{raw: bytes.Clone(raw)})
	px.queued += len(raw)
	px.mu.Unlock()
	return true
}

// reserveQueue takes n bytes of the node's proxy queue budget
// (proxy.max_queued_bytes), or reports that it has no room.
func (p *eventProxy) reserveQueue(n int) bool {
	if p.queued.Add(int64(n)) > p.maxQueued {
		p.queued.Add(-int64(n))
		p.queueFull.Inc()
		return false
	}
	return true
}

// queueFullFrame answers a command the node's proxy queues had no room
// for: `unavailable`, as when no concurrency slot is free.
func queueFullFrame(raw []byte, cmd *command) []byte {
	id := salvageID(raw, 0)
	if cmd != nil {
		id = cmd.id
	}
	var buf [256]byte
	return textFrame(appendError(buf[:0], id, codeUnavailable, "the node's event proxy queues are full (proxy.max_queued_bytes); try again"))
}

func (c *conn) queueFull(raw []byte, cmd *command) {
	c.sendFrame(event{op: "error"}, queueFullFrame(raw, cmd))
}

// sendUnanswering sends an error that answers no command (too_large, a
// binary frame; no id). While commands wait in the proxy queue it is
// queued behind them, so it reaches the client after their replies, in
// the order the client sent what caused it. Called by the reader.
func (c *conn) sendUnanswering(code, msg string) { c.sendErrorInTurn(0, code, msg) }

// sendErrorInTurn sends an error that the proxy queue did not see the
// command of (a refused binary message) after the replies of the
// commands queued before it.
func (c *conn) sendErrorInTurn(id uint64, code, msg string) {
	var buf [256]byte
	frame := textFrame(appendError(buf[:0], id, code, msg))
	if px := c.px; px != nil {
		px.mu.Lock()
		if px.busy {
			if len(px.queue) >= proxyQueueCmds {
				px.mu.Unlock()
				c.closeWith("rate_limited", "too many commands waiting for the event proxy", false, ws.StatusPolicyViolation, false)
				return
			}
			px.queue = append(px.queue, pxItem{frame: frame})
			px.mu.Unlock()
			return
		}
		px.mu.Unlock()
	}
	c.sendFrame(event{op: "error"}, frame)
}

// runQueued runs the queued commands in order, calling hooks inline, then
// hands the command stream back to the reader.
func (c *conn) runQueued() {
	px := c.px
	s := newScratch(0)()
	for {
		px.mu.Lock()
		if len(px.queue) == 0 || c.isClosing() {
			c.srv.proxy.queued.Add(-int64(px.queued))
			px.busy, px.queue, px.queued = false, nil, 0
			px.mu.Unlock()
			return
		}
		it := px.queue[0]
		px.queue[0] = pxItem{}
		px.queue = px.queue[1:]
		px.queued -= len(it.raw)
		c.srv.proxy.queued.Add(-int64(len(it.raw)))
		px.mu.Unlock()
		if it.frame != nil {
			c.sendFrame(event{op: "error"}, it.frame) // queued frames are errors (sendUnanswering)
			continue
		}
		raw := it.raw
		if _, err := decodeObject(raw, 0, &s.cmd); err != nil {
			c.sendError(salvageID(raw, 0), codeBadRequest, decodeErrorText(err))
			continue
		}
		c.handleCommand(s, &s.cmd)
	}
}

// askProxy calls hook h for the connection's command id. On a deny or a
// failure it answers the command itself and returns nil.
func (c *conn) askProxy(id uint64, h hook, ch string, data []byte) *proxyAnswer {
	ans, perr := c.srv.proxy.call(c.srv.ctx, h, c.clientInfo(), ch, data)
	if perr != nil {
		c.proxyRefused(id, h, perr)
		return nil
	}
	return ans
}

func (c *conn) proxyRefused(id uint64, h hook, perr *proxyErr) {
	switch {
	case perr.code == codeUnauthorized || h == hookConnect && perr.code != codeUnavailable:
		c.srv.reject(rejAuth)
	case perr.code == codeForbidden:
		c.srv.reject(rejForbidden)
	}
	c.sendError(id, perr.code, perr.msg)
}

// proxyIdentity turns a connect (or refresh) answer into an identity.
func proxyIdentity(ans *proxyAnswer) *identity {
	return &identity{user: ans.user, sub: ans.sub, pub: ans.pub, proxied: true}
}

// refreshDue runs the refresh hook for a connection the connect hook
// admitted, instead of expiring it. Called by the heartbeat sweep when
// c.expires passed.
func (c *conn) refreshDue(now int64) bool {
	if c.px == nil || !c.px.proxied.Load() || !c.srv.proxy.on(hookRefresh) {
		return false
	}
	// No second call while this one runs: the hook's timeout plus a margin.
	c.expires.Store(now + int64(c.srv.cfg.Proxy.Refresh.Timeout/time.Second) + 2)
	c.srv.goOwned(c.refresh)
	return true
}

func (c *conn) refresh() {
	ans, perr := c.srv.proxy.call(c.srv.ctx, hookRefresh, c.clientInfo(), "", nil)
	switch {
	case perr != nil && perr.code == codeUnavailable:
		c.closeWith("unavailable", perr.msg+"; reconnect", true, statusTryAgainLater, false)
		return
	case perr != nil:
		c.srv.reject(rejAuth)
		c.closeWith(perr.code, perr.msg, false, ws.StatusPolicyViolation, false)
		return
	case ans.user != "" && ans.user != c.user:
		c.srv.reject(rejAuth)
		c.closeWith(codeUnauthorized, "the refresh answer names another user", false, ws.StatusPolicyViolation, false)
		return
	}
	if ans.channels {
		id := *c.identity()
		id.sub, id.pub = ans.sub, ans.pub
		c.px.refreshed.Store(&id)
	}
	c.expires.Store(time.Now().Add(c.srv.cfg.Proxy.RefreshInterval).Unix())
}

// ---- SSE and POST /pub (their handlers run on their own goroutines) ----

// httpProxyIdentity asks the connect hook about an HTTP request that
// brings no JWT (a token wins when auth is on). done reports that the hook
// decided (ok: admitted as id; !ok: answered already).
func (s *Server) httpProxyIdentity(w http.ResponseWriter, r *http.Request) (id *identity, ok, done bool) {
	if s.auth != nil && (r.URL.Query().Get("token") != "" || r.Header.Get("Authorization") != "") {
		return nil, false, false
	}
	if !s.cookieOriginOK(r.Header) {
		http.Error(w, "origin required: this node authenticates by cookie", http.StatusForbidden)
		return nil, false, true
	}
	ans, perr := s.proxy.call(r.Context(), hookConnect, s.httpClientInfo(r, ""), "", nil)
	if perr == nil && ans.user == "" {
		s.proxy.errs.WithLabelValues(hookNames[hookConnect], pxErrBadJSON).Inc()
		perr = &proxyErr{codeUnavailable, "connect proxy unavailable, try again"}
	}
	if perr != nil {
		if perr.code != codeUnavailable {
			s.reject(rejAuth)
		}
		writeProxyError(w, perr)
		return nil, false, true
	}
	return proxyIdentity(ans), true, true
}

func orEmpty(id *identity) string {
	if id == nil {
		return ""
	}
	return id.user
}

// httpClientInfo describes an HTTP client to a hook: no client id (there
// is no connection yet, or none at all for POST /pub).
func (s *Server) httpClientInfo(r *http.Request, user string) clientInfo {
	t := "http"
	if r.Method == http.MethodGet {
		t = "sse"
	}
	return clientInfo{user: user, transport: t, remote: r.RemoteAddr, fwd: s.proxy.capture(httpHeaderGetter(r.Header))}
}

// httpPublishHook runs the publish hook for POST /pub: the data to publish,
// or false when it answered the request itself.
func (s *Server) httpPublishHook(w http.ResponseWriter, r *http.Request, user, ch string, data []byte) ([]byte, bool) {
	if !s.cookieOriginOK(r.Header) {
		http.Error(w, "origin required: this node authenticates by cookie", http.StatusForbidden)
		return nil, false
	}
	ans, perr := s.proxy.call(r.Context(), hookPublish, s.httpClientInfo(r, user), ch, data)
	if perr != nil {
		writeProxyError(w, perr)
		return nil, false
	}
	if ans.data != nil {
		return ans.data, true
	}
	return data, true
}

// writeProxyError answers an HTTP request with a hook's refusal.
func writeProxyError(w http.ResponseWriter, perr *proxyErr) {
	status := http.StatusForbidden
	switch perr.code {
	case codeUnavailable:
		status = http.StatusServiceUnavailable
	case codeUnauthorized:
		status = http.StatusUnauthorized
	case codeBadRequest:
		status = http.StatusBadRequest
	case codeTooLarge:
		status = http.StatusRequestEntityTooLarge
	case codeRateLimited:
		status = http.StatusTooManyRequests
	case codeInternal:
		status = http.StatusInternalServerError
	}
	writeJSONError(w, status, perr.code, perr.msg)
}
