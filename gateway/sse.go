package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Server-Sent Events fallback, for clients behind proxies that strip
// WebSocket upgrades:
//
//	GET /sse?ch=doc:1[&ch=doc:2][&since=<seq>:<epoch>][&token=JWT | &user=NAME]
//
// (POST /pub and GET /presence, its companions, are in httpapi.go.)
//
// An SSE stream is a conn like a WebSocket one — same hub, catch-up,
// presence, limits and slow-consumer policy — whose messages are written as
// events: `event: <op>` and `data: <the same JSON>`. msg and subscribed
// events carry `id:`: for a one-channel stream "<seq>:<epoch>", for several
// channels a query string "doc%3A1=5:ep&doc%3A2=7:ep" of every channel's
// position. The browser sends it back as Last-Event-ID when EventSource
// reconnects, which resumes exactly like `sub` with `since`.

// ssePing is how often an idle stream gets a comment, so proxies and the
// client see it alive.
const ssePing = 15 * time.Second

// sseState is an SSE connection's rewriting state, guarded by conn.mu.
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
	for _, ch := range chs {
		if !s.canSubscribe(ident, ch) {
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

// event writes the JSON object a frame carries as an event of the stream,
// from what the sender knew of it; nil drops it (control frames). msg and
// subscribed carry the stream's position as the event's id. Called with
// c.mu held, for every subscriber of a fan-out: it copies, never parses.
func (st *sseState) event(ev event, frame []byte) []byte {
	if ev.op == "" {
		return nil // close, pong: the stream just ends or ignores them
	}
	payload := framePayload(frame)
	if bytes.ContainsAny(payload, "\r\n") {
		// Never in one object: our encoders escape them (payload.go). A
		// streamed catch-up page of several objects, one a line, has
		// them; a stream never asks for one.
		return nil
	}
	b := make([]byte, 0, len(payload)+64)
	if (ev.op == "msg" || ev.op == "subscribed") && ev.ch != "" {
		st.pos[ev.ch] = ssePos{ev.seq, ev.epoch}
		b = append(b, "id: "...)
		b = st.appendID(b, ev.ch)
		b = append(b, '\n')
	}
	b = append(b, "event: "...)
	b = append(b, ev.op...)
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

// sendSSEPing keeps an idle stream alive; the heartbeat sweep calls it.
func (c *conn) sendSSEPing(now int64) {
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
