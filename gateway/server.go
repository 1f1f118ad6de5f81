package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/fault"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("gateway: server closed")

// readBufferSize is each read worker's buffer; connections own none.
const readBufferSize = 32 << 10

// Server is a syncgate node: it accepts WebSocket clients on its listeners,
// runs their commands against the broker, and fans publications out.
type Server struct {
	cfg      Config // WithDefaults applied: 0 means no cap
	log      *slog.Logger
	broker   brokers.Broker
	history  brokers.History   // nil when the backend keeps none
	presence brokers.Presence  // nil when the backend keeps none
	snaps    brokers.Snapshots // nil when the backend keeps none
	hub      *hub
	reads    chan struct{} // history read slots (history.max_reads)

	epoll  bool
	poller *poller
	rpool  *pool
	wpool  *pool

	nodeID    string
	clientSeq atomic.Uint64
	clock     atomic.Int64 // unix seconds, refreshed every 250 ms

	brokerTimeout time.Duration
	writeTimeout  time.Duration
	// graceNs is closeGrace in nanoseconds; a test may lengthen it
	// (SetCloseGraceForTest) to read a slow consumer's last frames on a
	// loaded machine.
	graceNs atomic.Int64
	// jwksBusy: a background JWKS refetch is running (refreshJWKS).
	jwksBusy atomic.Bool

	conns   [16]connShard
	nconns  atomic.Int64 // registered Conns: WebSocket and SSE
	nhttp   atomic.Int64 // plain HTTP connections owned by s.http (keep-alive included)
	idle    idleConns    // those of them waiting for their next request
	metrics *metrics
	// partialBytes is what all connections hold in unfinished frames and
	// fragmented messages, bounded by server.max_partial_bytes (partial.go).
	partialBytes atomic.Int64
	started      time.Time // the clock of partial-frame start times (partial.go)

	auth      *authenticator // nil when auth is off
	proxy     *eventProxy    // nil without event proxy hooks
	acceptLim *rate.Limiter  // nil when server.accept_rate is 0
	tlsConfig *tls.Config    // nil without server.tls
	origins   []string       // server.allowed_origins, lower-cased

	usersMu sync.Mutex
	users   map[string]int // connections per user
	pubLim  pubLimits      // POST /pub token buckets by user

	payloadLog *rate.Limiter // bounds the log lines about malformed broker payloads

	ctl     *control // control messages through the broker (control.go)
	version string   // this binary's version, in node summaries

	pprof *http.Server
	ops   *http.Server // metrics.listen: /metrics, never on the public listener

	http   *http.Server
	httpLn *chanListener

	mu        sync.Mutex
	listeners []net.Listener
	closed    bool

	ctx    context.Context // cancelled at the end of Shutdown
	cancel context.CancelFunc
	owned  sync.WaitGroup // per-connection goroutines: handshakes, cleanups, goroutine-mode I/O
	bg     sync.WaitGroup // background loops, stopped by ctx
}

type connShard struct {
	mu    sync.Mutex
	conns []*conn // conn.regIdx is each one's index
}

// New builds a server on b and starts b. The server owns b from now on:
// Shutdown closes it.
func New(cfg Config, b brokers.Broker, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:           cfg,
		log:           log,
		broker:        b,
		nodeID:        randomID(6),
		brokerTimeout: cfg.Server.BrokerTimeout,
		writeTimeout:  cfg.Server.WriteTimeout,
		started:       time.Now(),
		ctx:           ctx,
		cancel:        cancel,
	}
	s.graceNs.Store(int64(closeGrace))
	s.history, _ = b.(brokers.History)
	s.reads = make(chan struct{}, cfg.History.MaxReads)
	s.presence, _ = b.(brokers.Presence)
	s.snaps, _ = b.(brokers.Snapshots)
	s.users = make(map[string]int)
	s.payloadLog = rate.NewLimiter(rate.Every(time.Second), 5)
	s.ctl = newControl(cfg.ClusterSecret)
	s.version = buildVersion()
	for _, o := range cfg.Server.AllowedOrigins {
		s.origins = append(s.origins, strings.ToLower(strings.TrimSuffix(o, "/")))
	}
	if cfg.Server.AcceptRate > 0 {
		s.acceptLim = rate.NewLimiter(rate.Limit(cfg.Server.AcceptRate), cfg.Server.AcceptRate)
	}
	var err error
	if s.auth, err = newAuthenticator(cfg.Auth, log); err != nil {
		cancel()
		return nil, err
	}
	s.watchJWKS()
	if s.auth == nil {
		log.Warn("authentication is OFF: any client may connect as any user and use any channel; set auth.hmac_secret, auth.public_key_file or auth.jwks_url before exposing this node")
	}
	if cfg.Server.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.Server.TLSCertFile, cfg.Server.TLSKeyFile)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("gateway: server.tls: %w", err)
		}
		s.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	}
	s.clock.Store(time.Now().Unix())
	s.hub = newHub(s, b)
	s.metrics = newMetrics(s)
	s.proxy = newEventProxy(cfg, s.metrics.reg)

	s.epoll = cfg.Server.IO == "epoll" && epollSupported
	if cfg.Server.IO == "epoll" && !epollSupported {
		log.Warn("server.io is epoll but this platform has no epoll; using one goroutine per connection")
	}
	if s.epoll {
		p, err := newPoller(
			func(c *conn) { c.scheduleRead() },
			func(c *conn) { c.scheduleFlush() },
		)
		if err != nil {
			cancel()
			return nil, err
		}
		s.poller = p
		workers := cfg.Server.Workers
		if workers == 0 {
			workers = max(8, 4*runtime.GOMAXPROCS(0))
		}
		s.rpool = newPool(workers, loopScratch(readBufferSize), func(sc *scratch, t task) { t.c.readTask(sc, t.kind == taskReadShort) })
		s.wpool = newPool(max(2, runtime.GOMAXPROCS(0)), newScratch(0), func(sc *scratch, t task) { t.c.writeTask(sc) })
	}

	if err := b.Start(ctx, s.hub); err != nil {
		s.stopIO()
		cancel()
		return nil, fmt.Errorf("gateway: start broker: %w", err)
	}

	s.httpLn = newChanListener()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	mux.HandleFunc("GET /ws", s.handleWSUpgradeHTTP)
	mux.HandleFunc("GET /sse", s.handleSSE)
	mux.HandleFunc("POST /pub", s.handlePub)
	mux.HandleFunc("GET /presence", s.handlePresence)
	s.routes(mux)
	s.http = s.newHTTPServer(mux)
	s.ops = s.newOpsServer()
	if cfg.Debug.PprofListen != "" {
		if err := s.startPprof(cfg.Debug.PprofListen); err != nil {
			s.stopIO()
			cancel()
			_ = b.Close()
			return nil, err
		}
	}
	s.bg.Add(6)
	go func() { defer s.bg.Done(); s.controlLoop() }()
	go func() { defer s.bg.Done(); s.brokerLoop() }()
	go func() { defer s.bg.Done(); _ = s.http.Serve(s.httpLn) }()
	go func() { defer s.bg.Done(); s.clockLoop() }()
	go func() { defer s.bg.Done(); s.heartbeatLoop() }()
	go func() { defer s.bg.Done(); s.presenceLoop() }()
	return s, nil
}

// NodeID is this node's id; client ids start with it.
func (s *Server) NodeID() string { return s.nodeID }

// Connections is the number of open WebSocket and SSE connections.
func (s *Server) Connections() int { return int(s.nconns.Load()) }

// openConns counts every connection against server.max_connections:
// WebSocket and SSE ones, and plain HTTP ones (idle keep-alive included).
func (s *Server) openConns() int64 { return s.nconns.Load() + s.nhttp.Load() }

func (s *Server) now() int64 { return s.clock.Load() }

func (s *Server) nextClientID() (uint64, string) {
	n := s.clientSeq.Add(1)
	return n, s.nodeID + "-" + strconv.FormatUint(n, 36)
}

// buildVersion is the module version and VCS revision of this binary.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	for _, st := range info.Settings {
		if st.Key == "vcs.revision" && len(st.Value) >= 12 {
			v += " " + st.Value[:12]
		}
	}
	return v
}

func randomID(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// goOwned runs f in a goroutine Shutdown waits for.
func (s *Server) goOwned(f func()) {
	s.owned.Add(1)
	go func() {
		defer s.owned.Done()
		f()
	}()
}

// Serve accepts connections on ln until Shutdown. WebSocket upgrades on /ws
// are handled on the raw connection; every other request goes to the HTTP
// mux (/healthz, /readyz).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.tlsConfig != nil {
		ln = tls.NewListener(ln, s.tlsConfig)
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	accept := ln.Accept
	if s.epoll {
		// Accept raw sockets: the connection then carries no net.TCPAddr
		// pair, which is a tenth of an idle connection's memory.
		if raw, closer, ok := rawAccepter(ln); ok {
			accept = raw
			s.mu.Lock()
			s.listeners[len(s.listeners)-1] = closer
			s.mu.Unlock()
		}
	}
	var delay time.Duration
	for {
		nc, err := accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of fds or similar: back off instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; backing off", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if s.acceptLim != nil && !s.acceptLim.Allow() {
			s.reject(rejAcceptRate)
			s.goOwned(func() {
				refuseHTTP(nc, http.StatusServiceUnavailable, "too many new connections; retry shortly", false)
			})
			continue
		}
		s.goOwned(func() { s.handshake(nc) })
	}
}

// maxRequestHead bounds the HTTP request head read before routing.
const maxRequestHead = 16 << 10

// handshake reads the request head, then upgrades /ws requests in place or
// hands the connection to the HTTP server.
func (s *Server) handshake(nc net.Conn) {
	_ = nc.SetDeadline(time.Now().Add(s.cfg.Client.HandshakeTimeout))
	head, rest, err := readHead(nc)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			s.reject(rejHandshake) // slowloris: a head that never completes
		}
		_ = nc.Close()
		return
	}
	if !bytes.Equal(requestPath(head), []byte("/ws")) {
		if kind, msg := s.takeHTTPSlot(); kind != "" {
			s.reject(kind)
			refuseHTTP(nc, http.StatusServiceUnavailable, msg, true)
			return
		}
		// net/http sets its own deadlines from here (server.http_timeout,
		// server.http_idle_timeout); httpConnState gives the slot back.
		_ = nc.SetDeadline(time.Time{})
		if !s.httpLn.push(&prefixConn{Conn: nc, prefix: append(head, rest...)}) {
			s.nhttp.Add(-1)
			_ = nc.Close()
		}
		return
	}
	if max := s.cfg.Server.MaxConnections; max > 0 && s.openConns() >= int64(max) && !s.evictIdleHTTP() {
		s.reject(rejMaxConnections)
		refuseHTTP(nc, http.StatusServiceUnavailable, "node is full (server.max_connections); try another node", true)
		return
	}
	var token string
	var hdr http.Header // the headers the event proxy may forward, and Origin
	if s.proxy != nil {
		hdr = make(http.Header)
	}
	up := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			if _, q, ok := bytes.Cut(uri, []byte("?")); ok {
				if v, err := url.ParseQuery(string(q)); err == nil {
					token = v.Get("token")
				}
			}
			return nil
		},
		OnHeader: func(key, value []byte) error {
			if len(s.origins) > 0 && strings.EqualFold(string(key), "Origin") && !s.originAllowed(string(value)) {
				s.reject(rejOrigin)
				return ws.RejectConnectionError(ws.RejectionStatus(http.StatusForbidden), ws.RejectionReason("origin not allowed"))
			}
			if hdr != nil {
				if k := strings.ToLower(string(key)); k == "origin" || k == "cookie" || contains(s.proxy.headers, k) {
					hdr.Add(k, string(value))
				}
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if !s.cookieOriginOK(hdr) {
				return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusForbidden), ws.RejectionReason("origin required: this node authenticates by cookie"))
			}
			return nil, nil
		},
	}
	if _, err := up.Upgrade(&replayRW{r: bytes.NewReader(head), w: nc}); err != nil {
		s.log.Debug("websocket upgrade failed", "remote", nc.RemoteAddr().String(), "err", err)
		_ = nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	s.attach(nc, rest, token, s.newConnProxy(nc.RemoteAddr().String(), "websocket", httpHeaderGetter(hdr)))
}

// cookieOriginOK refuses a request that would forward a cookie to the
// event proxy unless it comes from an allowed origin: a browser sends the
// victim's cookies with a WebSocket (or SSE, or form POST) request any
// page starts, so a cookie session without this check lets every web page
// act as its visitor (cross-site WebSocket hijacking). A request without
// Origin is refused too: every browser sends one on these requests.
func (s *Server) cookieOriginOK(h http.Header) bool {
	if h == nil || !s.proxy.forwardsCookie(h.Values("cookie")) {
		return true
	}
	o := h.Get("origin")
	if o == "" || len(s.origins) == 0 || !s.originAllowed(o) {
		s.reject(rejOrigin)
		return false
	}
	return true
}

// refuseHTTP answers a connection we will not serve with a short HTTP error
// (Retry-After for 503) and closes it.
func refuseHTTP(nc net.Conn, code int, msg string, headRead bool) {
	if !headRead {
		// Read the request first: closing with unread bytes makes the
		// kernel reset the connection, and the client never sees the 503.
		_ = nc.SetReadDeadline(time.Now().Add(time.Second))
		_, _, _ = readHead(nc)
	}
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	resp := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n", code, http.StatusText(code), len(msg)+1)
	if code == http.StatusServiceUnavailable {
		resp += "Retry-After: 1\r\n"
	}
	_, _ = io.WriteString(nc, resp+"\r\n"+msg+"\n")
	_ = nc.Close()
}

// originAllowed matches an Origin header against server.allowed_origins;
// "https://*.example.com" matches any subdomain.
func (s *Server) originAllowed(origin string) bool {
	origin = strings.ToLower(origin)
	for _, o := range s.origins {
		if o == origin {
			return true
		}
		if pre, post, ok := strings.Cut(o, "*"); ok && len(origin) > len(pre)+len(post) &&
			strings.HasPrefix(origin, pre) && strings.HasSuffix(origin, post) && !strings.Contains(origin[len(pre):len(origin)-len(post)], "/") {
			return true
		}
	}
	return false
}

// takeUserSlot counts a connection of user against
// client.max_connections_per_user.
func (s *Server) takeUserSlot(user string) bool {
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	if max := s.cfg.Client.MaxConnectionsPerUser; max > 0 && s.users[user] >= max {
		return false
	}
	s.users[user]++
	return true
}

func (s *Server) giveUserSlot(user string) {
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	if s.users[user] <= 1 {
		delete(s.users, user)
	} else {
		s.users[user]--
	}
}

// handleWSUpgradeHTTP upgrades a /ws request that arrived on a connection
// the HTTP server already owns (a keep-alive connection reused for /ws).
func (s *Server) handleWSUpgradeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.admitHTTP(w, r) {
		return
	}
	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	var rest []byte
	if n := rw.Reader.Buffered(); n > 0 {
		p, _ := rw.Reader.Peek(n)
		rest = bytes.Clone(p)
	}
	s.attach(unwrapPrefix(nc), rest, r.URL.Query().Get("token"), s.newConnProxy(r.RemoteAddr, "websocket", httpHeaderGetter(r.Header)))
}

// admitHTTP applies the handshake checks to a /ws or /sse request on the
// HTTP path. The request's own connection is already counted (in nhttp), and
// upgrading it moves it to nconns: only a node over its cap refuses it.
func (s *Server) admitHTTP(w http.ResponseWriter, r *http.Request) bool {
	if max := s.cfg.Server.MaxConnections; max > 0 && s.openConns() > int64(max) {
		s.reject(rejMaxConnections)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "node is full (server.max_connections); try another node", http.StatusServiceUnavailable)
		return false
	}
	if o := r.Header.Get("Origin"); len(s.origins) > 0 && o != "" && !s.originAllowed(o) {
		s.reject(rejOrigin)
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return false
	}
	if s.proxy != nil && !s.cookieOriginOK(r.Header) {
		http.Error(w, "origin required: this node authenticates by cookie", http.StatusForbidden)
		return false
	}
	return true
}

// attach turns an upgraded socket into a conn and starts serving it. rest
// holds bytes the client sent right after its handshake (already read).
func (s *Server) attach(nc net.Conn, rest []byte, token string, px *connProxy) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		_, _ = nc.Write(closeFrame(ws.StatusGoingAway, "server shutting down"))
		_ = nc.Close()
		return
	}
	c := s.newConn(nc, s.epoll)
	c.urlToken = token
	c.px = px
	s.register(c)
	if len(rest) > 0 {
		c.onData(newScratch(0)(), rest)
	}
	if c.fd >= 0 {
		if err := s.poller.add(c); err != nil {
			s.log.Warn("poller add failed", "err", err)
			c.fail()
		}
		return
	}
	s.goOwned(func() { c.readLoop(4096) })
	s.goOwned(c.writeLoop)
}

func (s *Server) register(c *conn) {
	sh := &s.conns[uintptr(c.num)%uintptr(len(s.conns))]
	sh.mu.Lock()
	c.regIdx = len(sh.conns)
	sh.conns = append(sh.conns, c)
	sh.mu.Unlock()
	s.nconns.Add(1)
}

func (s *Server) unregister(c *conn) {
	sh := &s.conns[uintptr(c.num)%uintptr(len(s.conns))]
	sh.mu.Lock()
	if i := c.regIdx; i < len(sh.conns) && sh.conns[i] == c {
		last := len(sh.conns) - 1
		sh.conns[i] = sh.conns[last]
		sh.conns[i].regIdx = i
		sh.conns[last] = nil
		sh.conns = sh.conns[:last]
		s.nconns.Add(-1)
	}
	sh.mu.Unlock()
}

// eachConn calls f for a snapshot of all connections.
func (s *Server) eachConn(f func(*conn)) {
	var batch []*conn
	for i := range s.conns {
		sh := &s.conns[i]
		batch = batch[:0]
		sh.mu.Lock()
		batch = append(batch, sh.conns...)
		sh.mu.Unlock()
		for _, c := range batch {
			f(c)
		}
	}
}

func (s *Server) clockLoop() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.clock.Store(now.Unix())
		}
	}
}

// heartbeatLoop disconnects clients silent for 2x the ping interval.
func (s *Server) heartbeatLoop() {
	// At least 10 ms: a tiny (valid) timeout must not make a busy sweep or
	// a zero ticker.
	interval := max(min(time.Second, s.cfg.Client.PingInterval/2, s.cfg.Client.FrameTimeout/2), 10*time.Millisecond)
	t := time.NewTicker(interval)
	defer t.Stop()
	limit := int64((2 * s.cfg.Client.PingInterval).Seconds())
	if limit < 1 {
		limit = 1
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			now, nowMs := time.Now().Unix(), s.sinceStart()
			connectBy := int64(s.cfg.Client.HandshakeTimeout.Seconds()) + 1
			var queued int64
			s.eachConn(func(c *conn) {
				if c.sse != nil {
					c.sendSSEPing(now) // a stream's client never talks; keep it alive instead
				}
				switch {
				case c.sse == nil && now-c.lastSeen.Load() > limit:
					c.closeWith("timeout", "no message from the client for 2x the ping interval", true, ws.StatusGoingAway, false)
				case c.frameTimedOut(nowMs) && !c.isClosing(): // counted once
					s.reject(rejFrameTimeout)
					c.closeWith("frame_timeout", "a frame or fragmented message was not finished within client.frame_timeout", true, ws.StatusPolicyViolation, false)
				case (s.auth != nil || s.proxy.on(hookConnect)) && !c.authed.Load() && now-c.opened > connectBy:
					s.reject(rejAuth)
					c.closeWith("unauthorized", "no successful connect within client.handshake_timeout", false, ws.StatusPolicyViolation, false)
				case c.expires.Load() != 0 && now >= c.expires.Load() && !c.refreshDue(now):
					c.closeWith("token_expired", "the token expired; reconnect with a fresh token (or send refresh before exp)", true, ws.StatusPolicyViolation, false)
				default:
					queued += c.shrinkIdle()
				}
			})
			s.metrics.queueBytes.Store(queued)
			s.refreshJWKS()
		}
	}
}

// presenceLoop refreshes this node's presence entries every TTL/3 so they
// outlive a TTL only while this node is alive.
func (s *Server) presenceLoop() {
	if s.presence == nil {
		return
	}
	t := time.NewTicker(max(s.cfg.Presence.TTL/3, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			if fault.On(fault.PresenceRefreshSkipped) {
				continue
			}
			s.hub.members(func(ch string, ms []brokers.Member) {
				ctx, cancel := context.WithTimeout(s.ctx, s.brokerTimeout)
				if err := s.presence.Refresh(ctx, ch, ms, s.cfg.Presence.TTL); err != nil {
					s.log.Warn("presence refresh failed", "channel", ch, "err", err)
				}
				cancel()
			})
		}
	}
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"status":           "ok",
		"node":             s.nodeID,
		"connections":      s.nconns.Load(),
		"http_connections": s.nhttp.Load(),
		"goroutines":       runtime.NumGoroutine(),
		"io":               map[bool]string{true: "epoll", false: "goroutine"}[s.epoll],
	})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if p, ok := s.broker.(brokers.Pinger); ok {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := p.Ping(ctx); err != nil {
			http.Error(w, "broker unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	_, _ = io.WriteString(w, "ready\n")
}

// Shutdown stops accepting, tells every client to reconnect elsewhere
// (`disconnect` with reconnect: true, then a close frame), waits for them to
// be closed and cleaned up (presence left), then stops the broker. When ctx
// expires first, the remaining connections are closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.closed = true
	lns := s.listeners
	s.mu.Unlock()
	for _, ln := range lns {
		_ = ln.Close()
	}
	s.drain(ctx)
	// Connections close once their last frames are written (at most
	// closeGrace); cleanup then unregisters them.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for s.nconns.Load() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			s.eachConn(func(c *conn) { c.fail() })
			break wait
		case <-tick.C:
		}
	}
	s.httpLn.Close()
	_ = s.http.Close()
	_ = s.ops.Close()
	if s.pprof != nil {
		_ = s.pprof.Close()
	}
	s.owned.Wait() // hook calls included (each bounded by its timeout)
	if s.proxy != nil {
		s.proxy.client.CloseIdleConnections()
	}
	s.hub.stopTimers()
	s.cancel()
	s.bg.Wait()
	s.stopIO()
	if cerr := s.broker.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// drain tells every client to reconnect elsewhere, spread evenly over
// server.drain_window (cut short to leave a second before ctx's deadline),
// like NATS lame-duck mode: the other nodes see a ramp, not a storm.
func (s *Server) drain(ctx context.Context) {
	var all []*conn
	s.eachConn(func(c *conn) { all = append(all, c) })
	window := s.cfg.Server.DrainWindow
	if dl, ok := ctx.Deadline(); ok {
		window = min(window, time.Until(dl)-closeGrace-time.Second)
	}
	const step = 50 * time.Millisecond
	steps := int(window / step)
	if steps < 1 || len(all) == 0 {
		steps = 1
	}
	s.log.Info("draining", "connections", len(all), "window", window)
	t := time.NewTicker(step)
	defer t.Stop()
	for i := range steps {
		lo, hi := i*len(all)/steps, (i+1)*len(all)/steps
		for _, c := range all[lo:hi] {
			c.closeWith("shutdown", "server shutting down; reconnect to another node", true, ws.StatusGoingAway, false)
		}
		if hi == len(all) {
			break
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			for _, c := range all[hi:] {
				c.closeWith("shutdown", "server shutting down; reconnect to another node", true, ws.StatusGoingAway, false)
			}
			return
		}
	}
	// Connections that arrived through a handshake already in flight.
	s.eachConn(func(c *conn) {
		c.closeWith("shutdown", "server shutting down; reconnect to another node", true, ws.StatusGoingAway, false)
	})
}

func (s *Server) startPprof(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("gateway: debug.pprof_listen %s: %w", addr, err)
	}
	if !isLoopback(ln.Addr()) && s.cfg.Metrics.Token == "" {
		s.log.Warn("pprof is served beyond this host without a token; set metrics.token or bind debug.pprof_listen to 127.0.0.1", "addr", ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No WriteTimeout: profile and trace stream for ?seconds= (30 s default).
	s.pprof = &http.Server{Handler: s.requireToken(mux), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		IdleTimeout: time.Minute, MaxHeaderBytes: maxRequestHead, ErrorLog: s.http.ErrorLog}
	s.owned.Add(1)
	go func() { defer s.owned.Done(); _ = s.pprof.Serve(ln) }()
	return nil
}

func (s *Server) stopIO() {
	if s.poller != nil {
		s.poller.close()
	}
	if s.rpool != nil {
		s.rpool.close()
	}
	if s.wpool != nil {
		s.wpool.close()
	}
}
