package gateway_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/membus"
	"github.com/syncgate/syncgate/internal/wstest"
)

// dialStatus tries a WebSocket upgrade and returns the HTTP status.
func dialStatus(t *testing.T, url string, hdr http.Header) int {
	t.Helper()
	code, _ := dialRefusal(t, url, hdr)
	return code
}

// dialRefusal dials and returns the status (101 when upgraded) and the
// answer's Retry-After header.
func dialRefusal(t *testing.T, url string, hdr http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr})
	if err == nil {
		t.Cleanup(func() { ws.CloseNow() })
		return 101, ""
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// wantRetryAfter fails unless a 503's Retry-After is a whole number of
// seconds, at least 1 (docs/security.md's limits table).
func wantRetryAfter(t *testing.T, what, v string) {
	t.Helper()
	if n, err := strconv.Atoi(v); err != nil || n < 1 {
		t.Fatalf("%s: Retry-After %q, want a whole number of seconds >= 1", what, v)
	}
}

func TestLimits(t *testing.T) {
	t.Run("max connections", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) { c.Server.MaxConnections = 2 })
		dial(t, ts)
		dial(t, ts)
		waitFor(t, 5*time.Second, "2 connections", func() bool { return ts.srv.Connections() == 2 })
		code, retry := dialRefusal(t, ts.url(), nil)
		if code != 503 {
			t.Fatalf("third connection: status %d, want 503", code)
		}
		wantRetryAfter(t, "third connection", retry)
		assertMetric(t, ts, `syncgate_limit_rejections_total{kind="max_connections"}`, 1)
	})
	t.Run("accept rate", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) { c.Server.AcceptRate = 3 })
		codes := map[int]int{}
		for range 10 {
			code, retry := dialRefusal(t, ts.url(), nil)
			if code == 503 {
				wantRetryAfter(t, "dial past the accept budget", retry)
			}
			codes[code]++
		}
		if codes[101] < 3 || codes[101] > 5 || codes[503] < 5 {
			t.Fatalf("10 dials at accept_rate 3/s: %v", codes)
		}
	})
	t.Run("per user", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) { c.Client.MaxConnectionsPerUser = 1 })
		a := dial(t, ts)
		a.Connect("alice")
		b := dial(t, ts)
		r := b.Call("connect", map[string]any{"user": "alice"})
		if r.Str("code") != "forbidden" || !strings.Contains(r.Str("message"), "max_connections_per_user") {
			t.Fatalf("second alice = %v", r)
		}
		if d := b.NextOp("disconnect"); d.Str("code") != "too_many_connections" || d["reconnect"] != false {
			t.Fatalf("disconnect = %v", d)
		}
		// The slot is given back when alice leaves.
		a.Close()
		waitFor(t, 5*time.Second, "alice gone", func() bool { return ts.srv.Connections() == 0 })
		dial(t, ts).Connect("alice")
	})
	t.Run("publish rate", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) {
			c.Client.PublishRate = 5
			c.Client.PublishBurst = 5
		})
		c := dial(t, ts)
		var acks, limited int
		for range 20 {
			switch r := c.Call("pub", map[string]any{"ch": "doc:r", "data": 1}); r.Op() {
			case "ack":
				acks++
			case "error":
				if r.Str("code") != "rate_limited" {
					t.Fatalf("pub = %v", r)
				}
				limited++
			}
		}
		if acks < 5 || acks > 8 || limited < 12 {
			t.Fatalf("20 fast pubs at 5/s burst 5: %d acks, %d rate_limited", acks, limited)
		}
		time.Sleep(300 * time.Millisecond) // refill
		c.Pub("doc:r", "again")
	})
	t.Run("slowloris handshake", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) { c.Client.HandshakeTimeout = 500 * time.Millisecond })
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		start := time.Now()
		fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: x\r\n") // never finishes the head
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := bufio.NewReader(nc).ReadByte(); err == nil {
			t.Fatal("server answered a half-sent request")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("half-open upgrade held for %v", d)
		}
		assertMetric(t, ts, `syncgate_limit_rejections_total{kind="handshake_timeout"}`, 1)
	})
	t.Run("origin", func(t *testing.T) {
		ts := startServer(t, "epoll", func(c *config.Config) {
			c.Server.AllowedOrigins = []string{"https://app.example.com", "https://*.example.org"}
		})
		for origin, want := range map[string]int{
			"https://app.example.com": 101, "https://x.example.org": 101, "https://evil.com": 403,
			"https://example.org": 403, "http://app.example.com": 403,
		} {
			if code := dialStatus(t, ts.url(), http.Header{"Origin": {origin}}); code != want {
				t.Fatalf("origin %s: status %d, want %d", origin, code, want)
			}
		}
		// No Origin (not a browser) is not checked.
		if code := dialStatus(t, ts.url(), nil); code != 101 {
			t.Fatalf("no origin: status %d, want 101", code)
		}
		// SSE streams are checked too.
		req, err := http.NewRequest("GET", "http://"+ts.addr+"/sse?ch=doc:1", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", "https://evil.com")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Fatalf("SSE from another origin: status %d, want 403", resp.StatusCode)
		}
	})
}

// scrape returns the value of one metric line from /metrics, on the
// metrics listener.
func scrape(t *testing.T, ts *testServer, series string) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+ts.metricsAddr+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if name, val, ok := strings.Cut(line, " "); ok && name == series {
			f, err := strconv.ParseFloat(val, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found", series)
	return 0
}

func assertMetric(t *testing.T, ts *testServer, series string, least float64) {
	t.Helper()
	waitFor(t, 3*time.Second, series, func() bool { return scrape(t, ts, series) >= least })
}

func TestMetrics(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	a, b := dial(t, ts), dial(t, ts)
	a.Sub("doc:m")
	b.Sub("doc:m")
	for range 3 {
		a.Pub("doc:m", "x")
	}
	b.NextOp("msg")
	a.Call("dance", nil)
	if v := scrape(t, ts, "syncgate_connections"); v != 2 {
		t.Fatalf("connections = %v", v)
	}
	if v := scrape(t, ts, "syncgate_subscriptions"); v != 2 {
		t.Fatalf("subscriptions = %v", v)
	}
	if v := scrape(t, ts, "syncgate_channels"); v != 1 {
		t.Fatalf("channels = %v", v)
	}
	if v := scrape(t, ts, "syncgate_messages_in_total"); v != 3 {
		t.Fatalf("messages_in = %v", v)
	}
	if v := scrape(t, ts, "syncgate_messages_out_total"); v != 6 {
		t.Fatalf("messages_out = %v", v)
	}
	if v := scrape(t, ts, `syncgate_commands_total{op="unknown"}`); v != 1 {
		t.Fatalf("unknown ops = %v", v)
	}
	if v := scrape(t, ts, "syncgate_publish_duration_seconds_count"); v != 3 {
		t.Fatalf("publish durations = %v", v)
	}
	if v := scrape(t, ts, "syncgate_bytes_out_total"); v < 100 {
		t.Fatalf("bytes out = %v", v)
	}
	assertMetric(t, ts, "syncgate_broker_up", 1)
	c := dial(t, ts)
	c.MustCall("sub", map[string]any{"ch": "doc:m", "since": since(1, "nope")}, "subscribed")
	if v := scrape(t, ts, `syncgate_catchup_total{result="not_recovered"}`); v != 1 {
		t.Fatalf("catchup not_recovered = %v", v)
	}
}

// TestTLS serves wss:// directly; TLS connections use the goroutine path.
func TestTLS(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)

	ts := startServer(t, "epoll", func(c *config.Config) {
		c.Server.TLS.CertFile, c.Server.TLS.KeyFile = certFile, keyFile
	})
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "wss://"+ts.addr+"/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.Write(ctx, websocket.MessageText, []byte(`{"op":"ping","id":1}`))
	_, data, err := ws.Read(ctx)
	if err != nil || string(data) != `{"op":"pong","id":1}` {
		t.Fatalf("over TLS: %q %v", data, err)
	}
	resp, err := hc.Get("https://" + ts.addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz over TLS: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestDrainLosesNothing drains node A (window 1 s) while a publisher on node
// B publishes without pause. A's clients are told to reconnect, reconnect to
// B with `since`, and must end up with every acked message exactly once.
func TestDrainLosesNothing(t *testing.T) {
	nodes := membus.New(memory.Config{HistorySize: 10000}, 2)
	start := func(node int, drain time.Duration) (*gateway.Server, string) {
		cfg := config.Default()
		cfg.Listen = "127.0.0.1:0"
		cfg.Server.DrainWindow = drain
		cfg.Client.PublishRate = 0
		srv, err := gateway.New(cfg.Gateway(), nodes[node], nil)
		if err != nil {
			t.Fatal(err)
		}
		ln, _ := net.Listen("tcp", cfg.Listen)
		go srv.Serve(ln)
		return srv, "ws://" + ln.Addr().String() + "/ws"
	}
	srvA, urlA := start(0, time.Second)
	srvB, urlB := start(1, 50*time.Millisecond)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srvB.Shutdown(ctx)
	}()

	const clients = 20
	type result struct {
		seqs []uint64
		err  error
	}
	results := make([]result, clients)
	var ready, wg sync.WaitGroup
	for i := range clients {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[i]
			c := wstest.Dial(t, urlA)
			r := c.Sub("doc:drain")
			ready.Done()
			last, epoch := r.Num("seq"), r.Str("epoch")
			for {
				o := c.Next(func(o wstest.Msg) bool { return o.Op() == "msg" || o.Op() == "disconnect" })
				if o.Op() == "disconnect" {
					if o.Str("code") != "shutdown" || o["reconnect"] != true {
						res.err = fmt.Errorf("disconnect = %v", o)
						return
					}
					break
				}
				res.seqs = append(res.seqs, o.Num("seq"))
				last = o.Num("seq")
			}
			c2 := wstest.Dial(t, urlB)
			r2 := c2.MustCall("sub", map[string]any{"ch": "doc:drain", "since": since(last, epoch)}, "subscribed")
			if r2["recovered"] != true {
				res.err = fmt.Errorf("not recovered: %v", r2)
				return
			}
			for _, p := range r2["pubs"].([]any) {
				res.seqs = append(res.seqs, uint64(p.(map[string]any)["seq"].(float64)))
			}
			for {
				o := c2.Next(func(o wstest.Msg) bool { return o.Op() == "msg" })
				res.seqs = append(res.seqs, o.Num("seq"))
				if o.Str("data") == "end" {
					return
				}
			}
		}()
	}
	ready.Wait()

	pub := wstest.Dial(t, urlB)
	stop := make(chan struct{})
	var acked []uint64
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		for {
			select {
			case <-stop:
				acked = append(acked, pub.Pub("doc:drain", "end").Num("seq"))
				return
			default:
			}
			acked = append(acked, pub.Pub("doc:drain", "x").Num("seq"))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	drainStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := srvA.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	cancel()
	drained := time.Since(drainStart)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	pubWG.Wait()
	wg.Wait()
	if drained < 900*time.Millisecond {
		t.Fatalf("drain took %v: not spread over the 1 s window", drained)
	}
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("client %d: %v", i, r.err)
		}
		if len(r.seqs) != len(acked) {
			t.Fatalf("client %d got %d messages, %d were acked", i, len(r.seqs), len(acked))
		}
		for j, s := range r.seqs {
			if s != acked[j] {
				t.Fatalf("client %d: message %d has seq %d, want %d", i, j, s, acked[j])
			}
		}
	}
	t.Logf("drain of %d clients took %v; each got all %d acked messages once, in order", clients, drained, len(acked))
}
