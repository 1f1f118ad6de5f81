package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"
)

// Server-Sent Events fallback, for clients behind proxies that strip
// WebSocket upgrades:
//
//	GET /sse?ch=doc:1[&ch=doc:2][&since=<seq>:<epoch>][&token=JWT | &user=NAME]
//	POST /pub  {"ch": "doc:1", "data": <JSON>}   (token: Authorization: Bearer, or ?token=)
//
// An SSE stream is a Conn like a WebSocket one — same hub, catch-up,
// presence, limits and slow-consumer policy — whose frames are rewritten as
// events: `event: <op>` and `data: <the same JSON>`. msg and subscribed
// events carry `id:`: for a one-channel stream "<seq>:<epoch>", for several
// channels a query string "doc%3A1=5:ep&doc%3A2=7:ep" of every channel's
// position. The browser sends it back as Last-Event-ID when EventSource
// reconnects, which resumes exactly like `sub` with `since`.

// ssePing is how often an idle stream gets a comment, so proxies and the
// client see it alive.
const ssePing = 15 * time.Second

// sseState is an SSE connection's rewriting state, guarded by Conn.mu.
type sseState struct {
	single   bool
	pos      map[string]ssePos
	lastPing int64
}

type ssePos struct {
	seq   uint64
	epoch string
}

func (s *Server) handleSSE(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	chs := q["ch"]
	switch {
	case len(chs) == 0:
		http.Error(w, `want at least one ch parameter`, http.StatusBadRequest)
		return
	case len(chs) > s.cfg.Client.MaxSubscriptions:
		s.reject(rejSubscriptions)
		http.Error(w, "too many channels: client.max_subscriptions is "+itoa(s.cfg.Client.MaxSubscriptions), http.StatusBadRequest)
		return
	}
	for _, ch := range chs {
		if !validChannel([]byte(ch)) {
			http.Error(w, errChannelName.Error(), http.StatusBadRequest)
			return
		}
	}
	since := parseSSEPositions(chs, q.Get("since"))
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		since = parseSSEPositions(chs, id)
	}
	user, ident, ok := s.httpIdentity(w, r)
	if !ok {
		return
	}
	if !s.admitHTTP(w, r) {
		return
	}
	probe := s.probeConn(ident)
	for _, ch := range chs {
		if !probe.canSubscribe(ch) {
			s.reject(rejForbidden)
			http.Error(w, "not allowed to subscribe to "+ch, http.StatusForbidden)
			return
		}
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"+
		"X-Accel-Buffering: no\r\nConnection: close\r\n\r\nretry: 1000\n\n")
	_ = brw // nothing meaningful can follow a GET on this connection

	c := s.newConn(nc, false)
	c.px = s.newConnProxy(r.RemoteAddr, "sse", httpHeaderGetter(r.Header))
	c.sse = &sseState{single: len(chs) == 1, pos: make(map[string]ssePos, len(chs)), lastPing: s.now()}
	if !c.admit(0, orAnon(user, c), ident) {
		c.fail()
		return
	}
	s.register(c)
	s.goOwned(c.writeLoop)
	s.goOwned(func() {
		_, _ = io.Copy(io.Discard, nc) // a stream's client sends nothing; EOF ends it
		c.fail()
	})
	sc := newScratch(0)()
	for _, ch := range chs {
		cmd := command{op: opSub, ch: []byte(ch)}
		if p, ok := since[ch]; ok {
			cmd.hasSince, cmd.sinceSeq, cmd.sinceEpoch = true, p.seq, []byte(p.epoch)
		}
		c.cmdSub(sc, &cmd)
	}
}

func orAnon(user string, c *Conn) string {
	if user == "" {
		return "anon-" + c.id
	}
	return user
}

// httpIdentity authenticates an HTTP request (Bearer token or ?token=), or
// takes ?user= when auth is off. It answers the request itself on failure.
func (s *Server) httpIdentity(w http.ResponseWriter, r *http.Request) (string, *identity, bool) {
	if s.proxy.on(hookConnect) {
		if id, ok, done := s.httpProxyIdentity(w, r); done {
			return orEmpty(id), id, ok
		}
	}
	if s.auth == nil {
		u := r.URL.Query().Get("user")
		if len(u) > maxUserLen {
			http.Error(w, "user must be at most 255 bytes", http.StatusBadRequest)
			return "", nil, false
		}
		return u, nil, true
	}
	token := r.URL.Query().Get("token")
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		token = strings.TrimPrefix(h, "Bearer ")
	}
	id, err := s.auth.verify(r.Context(), token)
	if err == nil && s.revoked(id) {
		err = errTokenRevoked
	}
	if err != nil {
		s.reject(rejAuth)
		writeJSONError(w, http.StatusUnauthorized, codeUnauthorized, err.Error())
		return "", nil, false
	}
	return id.user, id, true
}

// parseSSEPositions reads "<seq>:<epoch>" (one channel) or the query form
// "ch=<seq>:<epoch>&..." into positions by channel.
func parseSSEPositions(chs []string, s string) map[string]ssePos {
	out := map[string]ssePos{}
	one := func(v string) (ssePos, bool) {
		seqS, epoch, _ := strings.Cut(v, ":")
		seq, err := strconv.ParseUint(seqS, 10, 64)
		return ssePos{seq, epoch}, err == nil
	}
	if s == "" {
		return out
	}
	if !strings.Contains(s, "=") {
		if p, ok := one(s); ok && len(chs) > 0 {
			out[chs[0]] = p
		}
		return out
	}
	vals, err := url.ParseQuery(s)
	if err != nil {
		return out
	}
	for ch, v := range vals {
		if p, ok := one(v[0]); ok {
			out[ch] = p
		}
	}
	return out
}

// event rewrites one WebSocket frame for the stream; nil drops it.
// Called with c.mu held.
func (st *sseState) event(frame []byte) []byte {
	h, ok, _ := parseServerFrame(frame)
	if !ok || h.OpCode != ws.OpText {
		return nil // close, pong: the stream just ends or ignores them
	}
	payload := frame[h.size:]
	if bytes.ContainsAny(payload, "\r\n") {
		return nil // never: our encoders escape them (payload.go); a guard for the data: line
	}
	op, ch, seq, epoch := peekEvent(payload)
	if op == "" {
		return nil
	}
	b := make([]byte, 0, len(payload)+64)
	if (op == "msg" || op == "subscribed") && ch != "" {
		st.pos[ch] = ssePos{seq, epoch}
		b = append(b, "id: "...)
		b = st.appendID(b, ch)
		b = append(b, '\n')
	}
	b = append(b, "event: "...)
	b = append(b, op...)
	b = append(b, "\ndata: "...)
	b = append(b, payload...)
	return append(b, "\n\n"...)
}

func (st *sseState) appendID(b []byte, ch string) []byte {
	if st.single {
		p := st.pos[ch]
		b = strconv.AppendUint(b, p.seq, 10)
		return append(append(b, ':'), p.epoch...)
	}
	first := true
	for name, p := range st.pos {
		if !first {
			b = append(b, '&')
		}
		first = false
		b = append(b, url.QueryEscape(name)...)
		b = append(b, '=')
		b = strconv.AppendUint(b, p.seq, 10)
		b = append(append(b, ':'), p.epoch...)
	}
	return b
}

// parseServerFrame reads the header of a frame we built (unmasked).
func parseServerFrame(f []byte) (clientHeader, bool, error) {
	if len(f) < 2 {
		return clientHeader{}, false, nil
	}
	h := clientHeader{Header: ws.Header{OpCode: ws.OpCode(f[0] & 0x0f)}, size: 2}
	switch f[1] & 0x7f {
	case 126:
		h.size = 4
	case 127:
		h.size = 10
	}
	return h, len(f) >= h.size, nil
}

// peekEvent reads op, ch, seq and epoch from a server message. The field
// order is the one our encoders write.
func peekEvent(p []byte) (op, ch string, seq uint64, epoch string) {
	var v struct {
		Op    string `json:"op"`
		Ch    string `json:"ch"`
		Seq   uint64 `json:"seq"`
		Epoch string `json:"epoch"`
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	if err := dec.Decode(&v); err != nil {
		return "", "", 0, ""
	}
	return v.Op, v.Ch, v.Seq, v.Epoch
}

// sendSSEPing keeps an idle stream alive; the heartbeat sweep calls it.
func (c *Conn) sendSSEPing(now int64) {
	c.mu.Lock()
	if c.sse == nil || c.closing || now-c.sse.lastPing < int64(ssePing/time.Second) {
		c.mu.Unlock()
		return
	}
	c.sse.lastPing = now
	c.out = append(c.out, []byte(": ping\n\n"))
	c.outBytes += 8
	c.mu.Unlock()
	c.scheduleFlush()
}

// handlePresence answers GET /presence?ch=... for HTTP clients (an SSE
// stream has no way to send a command): the same JSON as the `presence`
// reply, with the same auth and permission as subscribing.
func (s *Server) handlePresence(w http.ResponseWriter, r *http.Request) {
	_, ident, ok := s.httpIdentity(w, r)
	if !ok {
		return
	}
	ch := r.URL.Query().Get("ch")
	if !validChannel([]byte(ch)) {
		writeJSONError(w, http.StatusBadRequest, codeBadRequest, errChannelName.Error())
		return
	}
	if !(s.probeConn(ident)).canSubscribe(ch) {
		s.reject(rejForbidden)
		writeJSONError(w, http.StatusForbidden, codeForbidden, "not allowed to see the presence of "+ch)
		return
	}
	if s.presence == nil {
		writeJSONError(w, http.StatusServiceUnavailable, codeUnavailable, "this broker keeps no presence")
		return
	}
	members, err := s.presence.Members(r.Context(), ch)
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, codeUnavailable, "presence: broker unavailable, try again")
		return
	}
	members = s.brokerMembers(ch, members)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(appendPresence(nil, 0, ch, members))
}

// ---- POST /pub ----

// pubLimits holds POST /pub's token buckets by user (HTTP publishes have no
// connection to hang one on). It forgets everything past maxPubUsers.
type pubLimits struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

const maxPubUsers = 100000

func (s *Server) handlePub(w http.ResponseWriter, r *http.Request) {
	user, ident, ok := s.httpIdentity(w, r)
	if !ok {
		return
	}
	// The body must fit client.max_message_size and arrive within
	// server.http_timeout (the server's read deadline); past the size the
	// connection is closed after the answer, unread bytes and all.
	limit := int64(s.cfg.Client.MaxMessageSize)
	if r.ContentLength > limit {
		s.reject(rejMessageSize)
		w.Header().Set("Connection", "close")
		writeJSONError(w, http.StatusRequestEntityTooLarge, codeTooLarge, "body exceeds client.max_message_size")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
		s.reject(rejMessageSize)
		writeJSONError(w, http.StatusRequestEntityTooLarge, codeTooLarge, "body exceeds client.max_message_size")
		return
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		// The write deadline (server.http_timeout too) is about to pass:
		// leave a second to say why.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Second))
		w.Header().Set("Connection", "close")
		writeJSONError(w, http.StatusRequestTimeout, codeBadRequest, "request body not received within server.http_timeout")
		return
	}
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, codeBadRequest, "reading body: "+err.Error())
		return
	}
	var req struct {
		Ch   string          `json:"ch"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeJSONError(w, http.StatusBadRequest, codeBadRequest, "want a JSON object {\"ch\": ..., \"data\": ...}")
		return
	}
	switch {
	case !validChannel([]byte(req.Ch)):
		writeJSONError(w, http.StatusBadRequest, codeBadRequest, errChannelName.Error())
		return
	case req.Data == nil:
		writeJSONError(w, http.StatusBadRequest, codeBadRequest, `missing "data"`)
		return
	case !validData(req.Data):
		// encoding/json let it through, but it is invalid UTF-8 or nested
		// deeper than a WebSocket pub may be.
		writeJSONError(w, http.StatusBadRequest, codeBadRequest, `"data" must be valid JSON in UTF-8, nested at most 64 deep`)
		return
	}
	probe := s.probeConn(ident)
	if !probe.canPublish(req.Ch) {
		s.reject(rejForbidden)
		writeJSONError(w, http.StatusForbidden, codeForbidden, "not allowed to publish to "+req.Ch)
		return
	}
	if user == "" {
		user = "anon-http"
	}
	if !s.allowHTTPPublish(user) {
		s.reject(rejPublishRate)
		writeJSONError(w, http.StatusTooManyRequests, codeRateLimited, "publish rate over client.publish_rate")
		return
	}
	if s.proxy.on(hookPublish) {
		if req.Data, ok = s.httpPublishHook(w, r, user, req.Ch, req.Data); !ok {
			return
		}
	}
	start := time.Now()
	pos, err := s.broker.Publish(r.Context(), req.Ch, appendPubData(nil, user, req.Data))
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, codeUnavailable, "publish: broker unavailable, try again")
		return
	}
	s.metrics.publishDur.Observe(time.Since(start).Seconds())
	s.metrics.published.Inc()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(appendAck(nil, 0, req.Ch, pos.Seq, pos.Epoch))
}

// probeConn is a connection-less Conn holding ident, to ask its
// permission checks (canSubscribe, canPublish) for an HTTP request.
func (s *Server) probeConn(ident *identity) *Conn {
	c := &Conn{srv: s}
	c.ident.Store(ident)
	return c
}

func (s *Server) allowHTTPPublish(user string) bool {
	r := s.cfg.Client.PublishRate
	if r == 0 {
		return true
	}
	s.pubLim.mu.Lock()
	defer s.pubLim.mu.Unlock()
	if s.pubLim.m == nil || len(s.pubLim.m) > maxPubUsers {
		s.pubLim.m = make(map[string]*rate.Limiter)
	}
	l := s.pubLim.m[user]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(r), s.cfg.Client.PublishBurst)
		s.pubLim.m[user] = l
	}
	return l.Allow()
}

func writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(appendError(nil, 0, code, msg))
}
