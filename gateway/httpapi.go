package gateway

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The HTTP side of the client API, for clients without a WebSocket (an SSE
// stream, sse.go, cannot send commands):
//
//	POST /pub       {"ch": "doc:1", "data": <JSON>}  -> the `ack` of a pub
//	GET  /presence?ch=doc:1                          -> the `presence` reply
//
// with the same identity (Bearer token, ?token=, or ?user= with auth off),
// permissions and limits as the WebSocket commands.

func orAnon(user string, c *conn) string {
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
	if !s.canSubscribe(ident, ch) {
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
		// Bin: binary data as base64 (docs/protocol.md "Binary data").
		Bin *string `json:"bin"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeJSONError(w, http.StatusBadRequest, codeBadRequest, "want a JSON object {\"ch\": ..., \"data\": ...} or {\"ch\": ..., \"bin\": \"<base64>\"}")
		return
	}
	var raw []byte
	switch {
	case !validChannel([]byte(req.Ch)):
		writeJSONError(w, http.StatusBadRequest, codeBadRequest, errChannelName.Error())
		return
	case req.Bin != nil && req.Data != nil:
		writeJSONError(w, http.StatusBadRequest, codeBadRequest, errDataAndBin.Error())
		return
	case req.Bin != nil:
		var err error
		if !validB64([]byte(*req.Bin)) {
			err = errBinType
		} else if raw, err = b64.DecodeString(*req.Bin); err != nil {
			err = errBinType
		}
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, codeBadRequest, err.Error())
			return
		}
	case req.Data == nil:
		writeJSONError(w, http.StatusBadRequest, codeBadRequest, `missing "data" (or "bin")`)
		return
	case !validData(req.Data):
		// encoding/json let it through, but it is invalid UTF-8 or nested
		// deeper than a WebSocket pub may be.
		writeJSONError(w, http.StatusBadRequest, codeBadRequest, `"data" must be valid JSON in UTF-8, nested at most 64 deep`)
		return
	}
	if !s.canPublish(ident, req.Ch) {
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
		if req.Bin != nil {
			writeJSONError(w, http.StatusBadRequest, codeBadRequest, "binary data cannot be published through the event proxy's publish hook; send JSON data")
			return
		}
		if req.Data, ok = s.httpPublishHook(w, r, user, req.Ch, req.Data); !ok {
			return
		}
	}
	var payload []byte
	if req.Bin != nil {
		payload = appendPubBin(nil, user, raw)
	} else {
		payload = appendPubData(nil, user, req.Data)
	}
	start := time.Now()
	pos, err := s.broker.Publish(r.Context(), req.Ch, payload)
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, codeUnavailable, "publish: broker unavailable, try again")
		return
	}
	s.metrics.publishDur.Observe(time.Since(start).Seconds())
	s.metrics.published.Inc()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(appendAck(nil, 0, req.Ch, pos.Seq, pos.Epoch))
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
