package gateway_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
)

// Attacks on the node's plain HTTP side (issue 11, part 5): connections
// that never end must be cut by a deadline and counted against the node's
// limits. And /metrics (part 7) lives on its own listener.

// rawHTTP is a hand-driven HTTP/1.1 client connection, so a test can stop
// halfway through a request like an attacker does.
type rawHTTP struct {
	nc net.Conn
	br *bufio.Reader
}

func dialHTTP(t *testing.T, addr string) *rawHTTP {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawHTTP{nc: nc, br: bufio.NewReader(nc)}
}

func (h *rawHTTP) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(h.nc, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// response reads one response (within 10 s) and returns it with its body.
func (h *rawHTTP) response(t *testing.T) (*http.Response, string) {
	t.Helper()
	_ = h.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer h.nc.SetReadDeadline(time.Time{})
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// get sends a keep-alive GET and returns the status.
func (h *rawHTTP) get(t *testing.T, path string) int {
	t.Helper()
	h.send(t, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, _ := h.response(t)
	return resp.StatusCode
}

// expectClosed fails unless the server closes the connection within
// limit. An HTTP error answer (4xx) before the close is allowed: net/http
// sends 400 for a head cut by a deadline on some sockets.
func (h *rawHTTP) expectClosed(t *testing.T, limit time.Duration) {
	t.Helper()
	start := time.Now()
	_ = h.nc.SetReadDeadline(time.Now().Add(limit))
	got, err := io.ReadAll(io.LimitReader(h.br, 4096))
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("connection still open after %v (got %q)", limit, got)
	case err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset"):
		t.Fatalf("read: %v", err)
	case len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 4"):
		t.Fatalf("server sent %q before closing, want nothing or a 4xx", got)
	}
	t.Logf("closed after %v (%q)", time.Since(start).Round(time.Millisecond), firstLine(got))
}

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(string(b), "\r\n")
	return line
}

func TestHTTPIdleKeepAliveClosed(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) { c.Server.HTTPIdleTimeout = 300 * time.Millisecond })
		h := dialHTTP(t, ts.addr)
		if code := h.get(t, "/healthz"); code != 200 {
			t.Fatalf("GET /healthz: %d", code)
		}
		if v := scrape(t, ts, "syncgate_http_connections"); v != 1 {
			t.Fatalf("syncgate_http_connections = %v with one keep-alive connection, want 1", v)
		}
		// Then the client says nothing: the node must not hold the
		// connection (a goroutine and buffers) forever.
		h.expectClosed(t, 10*time.Second)
		waitFor(t, 5*time.Second, "the HTTP connection uncounted", func() bool {
			return scrape(t, ts, "syncgate_http_connections") == 0
		})
	})
}

func TestHTTPPubBodyDeadline(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) { c.Server.HTTPTimeout = 500 * time.Millisecond })
		t.Run("body never completes", func(t *testing.T) {
			h := dialHTTP(t, ts.addr)
			start := time.Now()
			h.send(t, "POST /pub HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ch\":")
			resp, body := h.response(t)
			if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(body, "server.http_timeout") {
				t.Fatalf("POST /pub with a stalled body: %d %s, want 408 naming server.http_timeout", resp.StatusCode, body)
			}
			t.Logf("answered after %v", time.Since(start).Round(time.Millisecond))
			h.expectClosed(t, 5*time.Second)
		})
		t.Run("announced body over the limit", func(t *testing.T) {
			h := dialHTTP(t, ts.addr)
			h.send(t, fmt.Sprintf("POST /pub HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 100<<20))
			resp, body := h.response(t)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "too_large") {
				t.Fatalf("POST /pub announcing 100 MiB: %d %s, want 413 too_large", resp.StatusCode, body)
			}
			h.expectClosed(t, 5*time.Second)
		})
		t.Run("chunked body over the limit", func(t *testing.T) {
			h := dialHTTP(t, ts.addr)
			n := ts.cfg.Client.MaxMessageSize + 1
			h.send(t, fmt.Sprintf("POST /pub HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n",
				n, strings.Repeat("a", n)))
			resp, body := h.response(t)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "too_large") {
				t.Fatalf("POST /pub with a chunked body over the limit: %d %s, want 413 too_large", resp.StatusCode, body)
			}
			h.expectClosed(t, 5*time.Second)
		})
		t.Run("a complete publish still works", func(t *testing.T) {
			h := dialHTTP(t, ts.addr)
			payload := `{"ch":"doc:p","data":{"n":1}}`
			h.send(t, fmt.Sprintf("POST /pub HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(payload), payload))
			if resp, body := h.response(t); resp.StatusCode != 200 || !strings.Contains(body, `"op":"ack"`) {
				t.Fatalf("POST /pub: %d %s", resp.StatusCode, body)
			}
		})
	})
}

func TestHTTPSlowloris(t *testing.T) {
	ts := startServer(t, "epoll", func(c *config.Config) {
		c.Client.HandshakeTimeout = 500 * time.Millisecond
		c.Server.HTTPIdleTimeout = 500 * time.Millisecond
		c.Server.HTTPTimeout = time.Second
	})
	// trickle sends s one byte every 100 ms until the server hangs up or
	// the test has waited 10 s.
	trickle := func(h *rawHTTP, s string) {
		for i := 0; i < len(s) && i < 100; i++ {
			if _, err := h.nc.Write([]byte{s[i]}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Run("first request head", func(t *testing.T) {
		h := dialHTTP(t, ts.addr)
		go trickle(h, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "+strings.Repeat("a", 200))
		h.expectClosed(t, 10*time.Second)
	})
	t.Run("next request head", func(t *testing.T) {
		h := dialHTTP(t, ts.addr)
		if code := h.get(t, "/healthz"); code != 200 {
			t.Fatalf("GET /healthz: %d", code)
		}
		go trickle(h, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "+strings.Repeat("a", 200))
		h.expectClosed(t, 10*time.Second)
	})
	t.Run("next request stalls after two bytes", func(t *testing.T) {
		h := dialHTTP(t, ts.addr)
		if code := h.get(t, "/healthz"); code != 200 {
			t.Fatalf("GET /healthz: %d", code)
		}
		h.send(t, "GE")
		h.expectClosed(t, 10*time.Second)
	})
	t.Run("next request head too large", func(t *testing.T) {
		h := dialHTTP(t, ts.addr)
		if code := h.get(t, "/healthz"); code != 200 {
			t.Fatalf("GET /healthz: %d", code)
		}
		// The first head is bounded by the handshake (16 KiB); a later
		// one on the same connection must be too.
		h.send(t, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 64<<10)+"\r\n\r\n")
		if resp, _ := h.response(t); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("64 KiB request head: %d, want 431", resp.StatusCode)
		}
	})
}

// stallPub starts a POST /pub whose body never completes: a request in
// progress until server.http_timeout.
func stallPub(t *testing.T, addr string) *rawHTTP {
	t.Helper()
	h := dialHTTP(t, addr)
	h.send(t, "POST /pub HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
	return h
}

func httpConns(t *testing.T, ts *testServer) float64 {
	t.Helper()
	return scrape(t, ts, "syncgate_http_connections")
}

func TestHTTPConnectionLimits(t *testing.T) {
	t.Run("max_http_connections refuses when all are busy", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) {
			c.Server.MaxHTTPConnections = 3
			c.Server.HTTPTimeout = 5 * time.Second
		})
		var held []*rawHTTP
		for range 3 {
			held = append(held, stallPub(t, ts.addr))
		}
		waitFor(t, 5*time.Second, "3 HTTP connections", func() bool { return httpConns(t, ts) == 3 })
		h := dialHTTP(t, ts.addr)
		h.send(t, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := h.response(t)
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "server.max_http_connections") {
			t.Fatalf("4th HTTP connection: %d %q (Retry-After %q), want 503 naming server.max_http_connections",
				resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
		assertMetric(t, ts, `syncgate_limit_rejections_total{kind="http_connections"}`, 1)
		// A slot comes back when a connection goes.
		held[0].nc.Close()
		waitFor(t, 5*time.Second, "2 HTTP connections", func() bool { return httpConns(t, ts) == 2 })
		if code := dialHTTP(t, ts.addr).get(t, "/healthz"); code != 200 {
			t.Fatalf("GET /healthz after a slot freed: %d", code)
		}
	})
	t.Run("idle keep-alive connections make room", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) { c.Server.MaxHTTPConnections = 3 })
		var held []*rawHTTP
		for range 3 {
			h := dialHTTP(t, ts.addr)
			if code := h.get(t, "/healthz"); code != 200 {
				t.Fatalf("GET /healthz: %d", code)
			}
			held = append(held, h) // idle keep-alive from now on
		}
		if v := httpConns(t, ts); v != 3 {
			t.Fatalf("syncgate_http_connections = %v, want 3", v)
		}
		// Parked connections do not lock a new client out: one of them is
		// closed instead. (net/http marks a connection idle just after
		// writing its response: retry until it has.)
		waitFor(t, 5*time.Second, "a 4th HTTP connection admitted", func() bool {
			return dialHTTP(t, ts.addr).get(t, "/healthz") == 200
		})
		assertMetric(t, ts, "syncgate_http_idle_evictions_total", 1)
		waitFor(t, 5*time.Second, "3 HTTP connections", func() bool { return httpConns(t, ts) == 3 })
		closed := 0
		for _, h := range held {
			_ = h.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := h.br.ReadByte(); errors.Is(err, io.EOF) {
				closed++
			}
		}
		if closed != 1 {
			t.Fatalf("%d of the 3 idle connections closed, want 1", closed)
		}
	})
	t.Run("max_connections counts HTTP", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) {
			c.Server.MaxConnections = 2
			c.Server.HTTPTimeout = 5 * time.Second
		})
		dial(t, ts)
		waitFor(t, 5*time.Second, "1 connection", func() bool { return ts.srv.Connections() == 1 })
		busy := stallPub(t, ts.addr)
		waitFor(t, 5*time.Second, "1 HTTP connection", func() bool { return httpConns(t, ts) == 1 })
		// One WebSocket and one HTTP request in progress fill a node of 2.
		if code := dialStatus(t, ts.url(), nil); code != 503 {
			t.Fatalf("WebSocket on a full node: status %d, want 503", code)
		}
		h2 := dialHTTP(t, ts.addr)
		h2.send(t, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body := h2.response(t); resp.StatusCode != 503 || !strings.Contains(body, "server.max_connections") {
			t.Fatalf("HTTP on a full node: %d %q, want 503 naming server.max_connections", resp.StatusCode, body)
		}
		// An idle keep-alive connection instead makes room for a WebSocket.
		busy.nc.Close()
		waitFor(t, 5*time.Second, "0 HTTP connections", func() bool { return httpConns(t, ts) == 0 })
		idle := dialHTTP(t, ts.addr)
		if code := idle.get(t, "/healthz"); code != 200 {
			t.Fatalf("GET /healthz: %d", code)
		}
		waitFor(t, 5*time.Second, "a WebSocket admitted in place of the idle HTTP connection", func() bool {
			return dialStatus(t, ts.url(), nil) == 101
		})
		idle.expectClosed(t, 5*time.Second)
	})
	t.Run("keep-alive connection upgraded at the cap", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) {
			c.Server.MaxConnections = 2
			c.Server.HTTPTimeout = 300 * time.Millisecond
		})
		dial(t, ts)
		h := dialHTTP(t, ts.addr)
		if code := h.get(t, "/healthz"); code != 200 {
			t.Fatalf("GET /healthz: %d", code)
		}
		// The node is full, but this connection is already counted: it
		// moves from the HTTP count to the connection count.
		h.send(t, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		_ = h.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(h.br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade on the keep-alive connection: %v %v", resp, err)
		}
		waitFor(t, 5*time.Second, "2 connections, 0 HTTP", func() bool {
			return ts.srv.Connections() == 2 && httpConns(t, ts) == 0
		})
		// Past server.http_timeout the upgraded connection is still served
		// (hijacking cleared net/http's deadlines).
		time.Sleep(time.Second)
		if n := ts.srv.Connections(); n != 2 {
			t.Fatalf("%d connections after the HTTP timeout, want 2", n)
		}
	})
}

func TestSSENotCutByHTTPTimeout(t *testing.T) {
	ts := startServer(t, "epoll", func(c *config.Config) { c.Server.HTTPTimeout = 300 * time.Millisecond })
	s, code := openSSE(t, ts, "ch=doc:sse-long", nil)
	if code != 200 {
		t.Fatalf("GET /sse: %d", code)
	}
	if ev := s.next(); ev.event != "subscribed" {
		t.Fatalf("first event %q", ev.event)
	}
	if ts.srv.Connections() != 1 || scrape(t, ts, "syncgate_http_connections") != 0 {
		t.Fatalf("an SSE stream is a connection: %d connections, %v HTTP",
			ts.srv.Connections(), scrape(t, ts, "syncgate_http_connections"))
	}
	time.Sleep(time.Second) // over three times server.http_timeout
	dial(t, ts).Pub("doc:sse-long", "late")
	if ev := s.next(); ev.event != "msg" || ev.data.Str("data") != "late" {
		t.Fatalf("event after the HTTP timeout: %+v", ev)
	}
}

func TestMetricsListener(t *testing.T) {
	t.Run("not on the public listener", func(t *testing.T) {
		ts := startServer(t, "epoll", nil)
		for _, path := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/cmdline"} {
			if code, _ := httpGet(t, "http://"+ts.addr+path); code != 404 {
				t.Errorf("public GET %s: %d, want 404", path, code)
			}
		}
		code, body := httpGet(t, "http://"+ts.metricsAddr+"/metrics")
		if code != 200 || !strings.Contains(body, "syncgate_connections ") {
			t.Fatalf("metrics listener GET /metrics: %d", code)
		}
	})
	t.Run("token", func(t *testing.T) {
		const token = "metrics-token-0123456789"
		// pprof on a port picked here: the node binds debug.pprof_listen
		// itself.
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pprofAddr := pl.Addr().String()
		pl.Close()
		ts := startServer(t, "epoll", func(c *config.Config) {
			c.Metrics.Token = token
			c.Debug.PprofListen = pprofAddr
		})
		for _, url := range []string{"http://" + ts.metricsAddr + "/metrics", "http://" + pprofAddr + "/debug/pprof/cmdline"} {
			for auth, want := range map[string]int{
				"": 401, "Bearer wrong-token-0123456789": 401, "Basic " + token: 401, "Bearer " + token: 200,
			} {
				req, _ := http.NewRequest("GET", url, nil)
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("GET %s with Authorization %q: %d, want %d", url, auth, resp.StatusCode, want)
				}
			}
		}
	})
}
