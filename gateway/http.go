package gateway

import (
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The node's plain HTTP side. Connections whose first request is not /ws
// are handed to s.http (a net/http server on a channel listener). Each is
// counted from the handshake until net/http reports it closed or hijacked
// (an SSE stream or a WebSocket upgrade, which then count as Conns), so
// idle keep-alive connections are bounded like any other: by
// server.max_connections together with WebSockets, and by
// server.max_http_connections on their own. At a cap, a new connection
// first takes the place of an idle keep-alive one (closed, like nginx
// reclaiming keep-alive connections), so connections parked between
// requests cannot lock others out; only a node full of requests in
// progress, each bounded by server.http_timeout, refuses with 503.

// newHTTPServer builds the public HTTP server: every request must arrive
// within server.http_timeout (head within client.handshake_timeout), and a
// keep-alive connection idle for server.http_idle_timeout is closed.
// Hijacked connections (SSE, /ws) leave with their deadlines cleared.
func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	c := s.cfg.Server
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(s.cfg.Client.HandshakeTimeout, c.HTTPTimeout),
		ReadTimeout:       c.HTTPTimeout,
		WriteTimeout:      c.HTTPTimeout,
		IdleTimeout:       c.HTTPIdleTimeout,
		MaxHeaderBytes:    maxRequestHead, // as for the first request's head (readHead)
		ConnState:         s.httpConnState,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// takeHTTPSlot counts a new plain HTTP connection, or returns the rejection
// kind and the message for the client when the node is full and no idle
// keep-alive connection could make room.
func (s *Server) takeHTTPSlot() (kind, msg string) {
	n := s.nhttp.Add(1)
	if max := s.cfg.Server.MaxHTTPConnections; max > 0 && n > int64(max) && !s.evictIdleHTTP() {
		s.nhttp.Add(-1)
		return rejHTTPConnections, "too many HTTP connections (server.max_http_connections); retry shortly"
	}
	if max := s.cfg.Server.MaxConnections; max > 0 && s.nconns.Load()+n > int64(max) && !s.evictIdleHTTP() {
		s.nhttp.Add(-1)
		return rejMaxConnections, "node is full (server.max_connections); try another node"
	}
	return "", ""
}

// httpConnState tracks which connections are idle between requests, and
// gives a connection's slot back when net/http is done with it.
// StateHijacked and StateClosed are terminal and exclusive: each connection
// reaches exactly one of them. A connection reading its next request head
// is still StateIdle (net/http marks it active once the head is read), so a
// trickled head can be evicted too.
func (s *Server) httpConnState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateIdle:
		s.idle.add(c)
	case http.StateActive:
		s.idle.remove(c)
	case http.StateHijacked, http.StateClosed:
		s.idle.remove(c)
		s.nhttp.Add(-1)
	}
}

// evictIdleHTTP closes one idle keep-alive connection to make room for a
// new one. Its slot is given back when net/http sees it closed, so the count
// may exceed a cap by the evictions in flight, for a moment.
func (s *Server) evictIdleHTTP() bool {
	if !s.idle.closeOne() {
		return false
	}
	s.metrics.httpEvictions.Inc()
	return true
}

// idleConns are the plain HTTP connections waiting for their next request.
type idleConns struct {
	mu sync.Mutex
	m  map[net.Conn]struct{}
}

func (ic *idleConns) add(c net.Conn) {
	ic.mu.Lock()
	if ic.m == nil {
		ic.m = make(map[net.Conn]struct{})
	}
	ic.m[c] = struct{}{}
	ic.mu.Unlock()
}

func (ic *idleConns) remove(c net.Conn) {
	ic.mu.Lock()
	delete(ic.m, c)
	ic.mu.Unlock()
}

// closeOne closes some idle connection (any: under attack most are the
// attacker's) and reports whether there was one.
func (ic *idleConns) closeOne() bool {
	var victim net.Conn
	ic.mu.Lock()
	for c := range ic.m {
		victim = c
		delete(ic.m, c)
		break
	}
	ic.mu.Unlock()
	if victim == nil {
		return false
	}
	_ = victim.Close() // not under the lock: no I/O while holding it
	return true
}

// newOpsServer builds the server of the operational listener
// (metrics.listen). It is not started until ServeMetrics.
func (s *Server) newOpsServer() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	return &http.Server{
		Handler:           s.requireToken(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    maxRequestHead,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// ServeMetrics serves GET /metrics (Prometheus) on ln, the operational
// listener (metrics.listen), until Shutdown, which closes it last so the
// drain can be watched. /metrics is never served on the public listeners.
func (s *Server) ServeMetrics(ln net.Listener) error {
	if !isLoopback(ln.Addr()) && s.cfg.Metrics.Token == "" {
		s.log.Warn("metrics are served beyond this host without a token; set metrics.token or bind metrics.listen to a private address", "addr", ln.Addr().String())
	}
	err := s.ops.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrServerClosed
	}
	return err
}

// requireToken guards the operational endpoints with metrics.token, when
// set: "Authorization: Bearer <token>", compared in constant time.
func (s *Server) requireToken(h http.Handler) http.Handler {
	want := s.cfg.Metrics.Token
	if want == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="syncgate metrics"`)
			http.Error(w, "want Authorization: Bearer <metrics.token>", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// isLoopback reports whether addr is a loopback TCP address.
func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
