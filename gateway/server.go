package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/config"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("gateway: server closed")

// readBufferSize is each read worker's buffer; connections own none.
const readBufferSize = 32 << 10

// Server is a syncgate node: it accepts WebSocket clients on its listeners,
// runs their commands against the broker, and fans publications out.
type Server struct {
	cfg      config.Config
	log      *slog.Logger
	broker   brokers.Broker
	history  brokers.History  // nil when the backend keeps none
	presence brokers.Presence // nil when the backend keeps none
	hub      *hub

	epoll  bool
	poller *poller
	rpool  *pool
	wpool  *pool

	nodeID    string
	clientSeq atomic.Uint64
	clock     atomic.Int64 // unix seconds, refreshed every 250 ms

	brokerTimeout time.Duration
	writeTimeout  time.Duration

	conns   [16]connShard
	nconns  atomic.Int64
	metrics metrics

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
	conns map[*Conn]struct{}
}

// metrics are plain counters until the Prometheus exporter lands.
type metrics struct {
	published     atomic.Int64
	slowConsumers atomic.Int64
}

// New builds a server on b and starts b. The server owns b from now on:
// Shutdown closes it.
func New(cfg config.Config, b brokers.Broker, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:           cfg,
		log:           log,
		broker:        b,
		nodeID:        randomID(6),
		brokerTimeout: 5 * time.Second,
		writeTimeout:  10 * time.Second,
		ctx:           ctx,
		cancel:        cancel,
	}
	s.history, _ = b.(brokers.History)
	s.presence, _ = b.(brokers.Presence)
	s.clock.Store(time.Now().Unix())
	for i := range s.conns {
		s.conns[i].conns = make(map[*Conn]struct{})
	}
	s.hub = newHub(s, b)

	s.epoll = cfg.Server.IO == "epoll" && epollSupported
	if cfg.Server.IO == "epoll" && !epollSupported {
		log.Warn("server.io is epoll but this platform has no epoll; using one goroutine per connection")
	}
	if s.epoll {
		p, err := newPoller(
			func(c *Conn) { c.scheduleRead() },
			func(c *Conn) { c.scheduleFlush() },
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
		s.rpool = newPool(workers, newScratch(readBufferSize), func(sc *scratch, t task) { t.c.readTask(sc) })
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
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: cfg.Client.HandshakeTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	s.bg.Add(4)
	go func() { defer s.bg.Done(); _ = s.http.Serve(s.httpLn) }()
	go func() { defer s.bg.Done(); s.clockLoop() }()
	go func() { defer s.bg.Done(); s.heartbeatLoop() }()
	go func() { defer s.bg.Done(); s.presenceLoop() }()
	return s, nil
}

// NodeID is this node's id; client ids start with it.
func (s *Server) NodeID() string { return s.nodeID }

// Connections is the number of open WebSocket connections.
func (s *Server) Connections() int { return int(s.nconns.Load()) }

func (s *Server) now() int64 { return s.clock.Load() }

func (s *Server) nextClientID() (uint64, string) {
	n := s.clientSeq.Add(1)
	return n, s.nodeID + "-" + strconv.FormatUint(n, 36)
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
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
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
		_ = nc.Close()
		return
	}
	if !bytes.Equal(requestPath(head), []byte("/ws")) {
		_ = nc.SetDeadline(time.Time{})
		if !s.httpLn.push(&prefixConn{Conn: nc, prefix: append(head, rest...)}) {
			_ = nc.Close()
		}
		return
	}
	up := ws.Upgrader{}
	if _, err := up.Upgrade(&replayRW{r: bytes.NewReader(head), w: nc}); err != nil {
		s.log.Debug("websocket upgrade failed", "remote", nc.RemoteAddr().String(), "err", err)
		_ = nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	s.attach(nc, rest)
}

// handleWSUpgradeHTTP upgrades a /ws request that arrived on a connection
// the HTTP server already owns (a keep-alive connection reused for /ws).
func (s *Server) handleWSUpgradeHTTP(w http.ResponseWriter, r *http.Request) {
	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	var rest []byte
	if n := rw.Reader.Buffered(); n > 0 {
		p, _ := rw.Reader.Peek(n)
		rest = bytes.Clone(p)
	}
	s.attach(unwrapPrefix(nc), rest)
}

// attach turns an upgraded socket into a Conn and starts serving it. rest
// holds bytes the client sent right after its handshake (already read).
func (s *Server) attach(nc net.Conn, rest []byte) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		_, _ = nc.Write(closeFrame(ws.StatusGoingAway, "server shutting down"))
		_ = nc.Close()
		return
	}
	c := s.newConn(nc, s.epoll)
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

func (s *Server) register(c *Conn) {
	sh := &s.conns[uintptr(c.num)%uintptr(len(s.conns))]
	sh.mu.Lock()
	sh.conns[c] = struct{}{}
	sh.mu.Unlock()
	s.nconns.Add(1)
}

func (s *Server) unregister(c *Conn) {
	sh := &s.conns[uintptr(c.num)%uintptr(len(s.conns))]
	sh.mu.Lock()
	if _, ok := sh.conns[c]; ok {
		delete(sh.conns, c)
		s.nconns.Add(-1)
	}
	sh.mu.Unlock()
}

// eachConn calls f for a snapshot of all connections.
func (s *Server) eachConn(f func(*Conn)) {
	var batch []*Conn
	for i := range s.conns {
		sh := &s.conns[i]
		batch = batch[:0]
		sh.mu.Lock()
		for c := range sh.conns {
			batch = append(batch, c)
		}
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
	interval := min(time.Second, s.cfg.Client.PingInterval/2)
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
			now := time.Now().Unix()
			s.eachConn(func(c *Conn) {
				if now-c.lastSeen.Load() > limit {
					c.closeWith("timeout", "no message from the client for 2x the ping interval", true, ws.StatusGoingAway, false)
					return
				}
				c.shrinkIdle()
			})
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
		"status":      "ok",
		"node":        s.nodeID,
		"connections": s.nconns.Load(),
		"goroutines":  runtime.NumGoroutine(),
		"io":          map[bool]string{true: "epoll", false: "goroutine"}[s.epoll],
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
	s.eachConn(func(c *Conn) {
		c.closeWith("shutdown", "server shutting down", true, ws.StatusGoingAway, false)
	})
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
			s.eachConn(func(c *Conn) { c.fail() })
			break wait
		case <-tick.C:
		}
	}
	s.httpLn.Close()
	_ = s.http.Close()
	s.owned.Wait()
	s.hub.stopTimers()
	s.cancel()
	s.bg.Wait()
	s.stopIO()
	if cerr := s.broker.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
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
