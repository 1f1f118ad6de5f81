package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/testdeps"
	"github.com/syncgate/syncgate/internal/wstest"
)

// The addresses and port the shipped proxy configs name, replaced by the
// tests with loopback ones.
const (
	shippedNode1 = "10.0.0.1:8080"
	shippedNode2 = "10.0.0.2:8080"
)

const wait = 15 * time.Second

// TestNginx runs deploy/nginx/syncgate.conf in front of two nodes.
func TestNginx(t *testing.T) {
	bin := testdeps.Binary(t, "nginx")
	proxyDrain(t, func(t *testing.T, n1, n2 string) string {
		return startNginx(t, bin, n1, n2)
	})
}

// TestHAProxy runs deploy/haproxy/haproxy.cfg in front of two nodes.
func TestHAProxy(t *testing.T) {
	bin := testdeps.Binary(t, "haproxy")
	proxyDrain(t, func(t *testing.T, n1, n2 string) string {
		return startHAProxy(t, bin, n1, n2)
	})
}

// proxyDrain: WebSocket and SSE clients through the proxy spread over two
// nodes; one node is drained (what SIGTERM does) while messages flow; every
// client reconnects through the proxy, ends up on the other node and has
// every message exactly once, in order. start runs the proxy in front of
// the two node addresses and returns its address.
func proxyDrain(t *testing.T, start func(t *testing.T, n1, n2 string) string) {
	rds := redistest.Start(t, redistest.Options{})
	a := startNode(t, rds.Addr())
	b := startNode(t, rds.Addr())
	proxy := start(t, a.addr, b.addr)
	base := "http://" + proxy
	waitFor(t, "the proxy to reach a ready node", func() bool { return httpStatus(base+"/readyz") == 200 })

	const ch = "doc:deploy"
	pub := wstest.Dial(t, "ws://"+b.addr+"/ws", wstest.Named("publisher"))
	pub.Connect("publisher")
	published := 0
	publish := func(n int) {
		for range n {
			published++
			if ack := pub.Pub(ch, published); ack.Num("seq") != uint64(published) {
				t.Fatalf("ack %v, want seq %d", ack, published)
			}
		}
	}

	const nWS, nSSE = 4, 4
	var clients []follower
	for i := range nWS {
		clients = append(clients, dialWS(t, proxy, fmt.Sprintf("ws%d", i), ch))
	}
	for i := range nSSE {
		clients = append(clients, dialSSE(t, proxy, fmt.Sprintf("sse%d", i), ch))
	}
	total := nWS + nSSE + 1 // and the publisher
	waitFor(t, "every client on a node", func() bool { return a.srv.Connections()+b.srv.Connections() == total })
	if a.srv.Connections() == 0 || b.srv.Connections() <= 1 {
		t.Fatalf("the proxy did not spread clients: %d on node 1, %d on node 2 (with the publisher)", a.srv.Connections(), b.srv.Connections())
	}
	// A publish through the proxy over plain HTTP, then some over WebSocket.
	published++
	if code, body := postPub(base, ch, published); code != 200 || !strings.Contains(body, fmt.Sprintf(`"seq":%d`, published)) {
		t.Fatalf("POST /pub through the proxy: %d %s", code, body)
	}
	publish(9)
	for _, c := range clients {
		c.await(t, published)
		if c.wasClosed() {
			t.Fatal("a client was disconnected before the drain")
		}
	}

	// Drain node 1 while messages flow.
	held := a.srv.Connections()
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		drained <- a.srv.Shutdown(ctx)
	}()
	for range 10 {
		publish(1)
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	a.stopped = true

	// Every client on node 1 was told to reconnect; it does, through the
	// proxy, from where it was, and gets what it missed and what follows.
	publish(5)
	resumed := 0
	for _, c := range clients {
		resumed += follow(t, c, proxy, ch, published)
		c.check(t, published)
	}
	if resumed != held {
		t.Errorf("%d clients reconnected, want the %d node 1 held", resumed, held)
	}
	waitFor(t, "every client on node 2", func() bool { return b.srv.Connections() == total })
}

// follow takes c's messages up to seq n, reconnecting it whenever it is
// told to, and returns how often it reconnected.
func follow(t *testing.T, c follower, proxy, ch string, n int) int {
	t.Helper()
	for resumed := 0; ; resumed++ {
		c.await(t, n)
		if !c.wasClosed() {
			return resumed
		}
		if resumed == 3 {
			t.Fatal("a client was told to reconnect 4 times")
		}
		c.resume(t, proxy, ch)
	}
}

// follower is a WebSocket or SSE client that records the seqs it gets.
type follower interface {
	// await waits until the client has seen seq n, or until it is told
	// to reconnect.
	await(t *testing.T, n int)
	// wasClosed says whether the last await ended on a disconnect.
	wasClosed() bool
	// resume reconnects through the proxy, with since, if the client was
	// told to.
	resume(t *testing.T, proxy, ch string)
	// check asserts seqs 1..n exactly once, in order.
	check(t *testing.T, n int)
}

type seqs struct {
	name  string
	epoch string
	got   []uint64
}

func (s *seqs) last() uint64 {
	if len(s.got) == 0 {
		return 0
	}
	return s.got[len(s.got)-1]
}

func (s *seqs) check(t *testing.T, n int) {
	t.Helper()
	if len(s.got) != n {
		t.Errorf("%s: %d messages, want %d: %v", s.name, len(s.got), n, s.got)
		return
	}
	for i, q := range s.got {
		if q != uint64(i+1) {
			t.Errorf("%s: seqs %v, want 1..%d in order", s.name, s.got, n)
			return
		}
	}
}

type wsFollower struct {
	seqs
	c      *wstest.Client
	closed bool // told to reconnect
}

func dialWS(t *testing.T, proxy, name, ch string) *wsFollower {
	f := &wsFollower{seqs: seqs{name: name}}
	f.c = wstest.Dial(t, "ws://"+proxy+"/ws", wstest.Named(name))
	f.c.Connect(name)
	f.epoch = f.c.Sub(ch).Str("epoch")
	return f
}

func (f *wsFollower) await(t *testing.T, n int) {
	t.Helper()
	for f.last() < uint64(n) {
		m := f.c.TryNext(wait, func(m wstest.Msg) bool { return m.Op() == "msg" || m.Op() == "disconnect" })
		switch {
		case m == nil:
			t.Fatalf("%s: no msg %d within %v (have %v)", f.name, f.last()+1, wait, f.got)
		case m.Op() == "disconnect":
			if m.Str("code") != "shutdown" || m["reconnect"] != true {
				t.Fatalf("%s: %v, want a shutdown disconnect with reconnect", f.name, m)
			}
			f.closed = true
			return
		}
		f.got = append(f.got, m.Num("seq"))
		f.epoch = m.Str("epoch") // a node's epoch for an empty channel can give way to the first publication's
	}
}

func (f *wsFollower) wasClosed() bool { return f.closed }

func (f *wsFollower) resume(t *testing.T, proxy, ch string) {
	t.Helper()
	if !f.closed {
		return // on the node that stays
	}
	f.closed = false
	f.c = wstest.Dial(t, "ws://"+proxy+"/ws", wstest.Named(f.name+"-again"))
	f.c.Connect(f.name)
	r := f.c.SubSince(ch, f.last(), f.epoch)
	if r["recovered"] != true {
		t.Fatalf("%s: resubscribe after %d: %v, want recovered", f.name, f.last(), r)
	}
	pubs, _ := r["pubs"].([]any)
	for _, p := range pubs {
		m, _ := p.(map[string]any)
		q, _ := m["seq"].(float64)
		f.got = append(f.got, uint64(q))
	}
}

type sseFollower struct {
	seqs
	closed bool // the stream ended (after a disconnect event)
	lastID string
	events chan sseEvent
	body   io.Closer
}

type sseEvent struct {
	name, id, data string
	eof            bool
}

func dialSSE(t *testing.T, proxy, name, ch string) *sseFollower {
	f := &sseFollower{seqs: seqs{name: name}}
	f.open(t, proxy, ch)
	ev := f.next(t, "subscribed")
	var sub struct{ Epoch string }
	_ = json.Unmarshal([]byte(ev.data), &sub)
	f.epoch = sub.Epoch
	return f
}

// open starts a stream through the proxy, resuming from lastID if set.
func (f *sseFollower) open(t *testing.T, proxy, ch string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+proxy+"/sse?ch="+ch+"&user="+f.name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.lastID != "" {
		req.Header.Set("Last-Event-ID", f.lastID)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: GET /sse through the proxy: %v", f.name, err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		t.Fatalf("%s: GET /sse through the proxy: %s", f.name, resp.Status)
	}
	f.body = resp.Body
	events := make(chan sseEvent, 1000)
	f.events = events
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(events)
		r := bufio.NewReader(resp.Body)
		var ev sseEvent
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				events <- sseEvent{eof: true}
				return
			}
			line = strings.TrimRight(line, "\r\n")
			switch {
			case line == "":
				if ev.name != "" {
					events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "id: "):
				ev.id = line[len("id: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}()
	body := resp.Body
	t.Cleanup(func() { body.Close(); wg.Wait() })
}

// next returns the next event named name (msg events are recorded on the
// way), or an eof event.
func (f *sseFollower) next(t *testing.T, name string) sseEvent {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case ev, ok := <-f.events:
			if !ok || ev.eof {
				return sseEvent{eof: true}
			}
			if ev.name == "msg" {
				f.record(t, ev)
			}
			if ev.name == name {
				return ev
			}
		case <-timeout:
			t.Fatalf("%s: no %s event within %v (have %v)", f.name, name, wait, f.got)
		}
	}
}

func (f *sseFollower) await(t *testing.T, n int) {
	t.Helper()
	for f.last() < uint64(n) {
		if ev := f.next(t, "msg"); ev.eof {
			f.closed = true
			return
		}
	}
}

func (f *sseFollower) wasClosed() bool { return f.closed }

func (f *sseFollower) record(t *testing.T, ev sseEvent) {
	t.Helper()
	var m struct{ Seq uint64 }
	if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
		t.Fatalf("%s: msg event %q: %v", f.name, ev.data, err)
	}
	f.got = append(f.got, m.Seq)
	f.lastID = ev.id
}

func (f *sseFollower) resume(t *testing.T, proxy, ch string) {
	t.Helper()
	if !f.closed {
		return // on the node that stays
	}
	f.closed = false
	f.body.Close()
	f.open(t, proxy, ch)
	ev := f.next(t, "subscribed")
	var sub struct {
		Recovered bool
		Pubs      []struct{ Seq uint64 }
	}
	if err := json.Unmarshal([]byte(ev.data), &sub); err != nil || !sub.Recovered {
		t.Fatalf("%s: resumed from %s: %s, want recovered", f.name, f.lastID, ev.data)
	}
	// What it missed comes in the subscribed event; its id is the
	// position after them.
	for _, p := range sub.Pubs {
		f.got = append(f.got, p.Seq)
	}
	f.lastID = ev.id
}

// node is one gateway on loopback, on a shared Redis.
type node struct {
	srv     *gateway.Server
	addr    string
	stopped bool
}

func startNode(t *testing.T, redisAddr string) *node {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Broker.Type = "redis"
	cfg.Redis.Addrs = []string{redisAddr}
	cfg.Metrics.Listen = "off"
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = time.Second
	b := redis.New(redis.Config{
		Addrs: cfg.Redis.Addrs, HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL,
		DialTimeout: time.Second, ProbeInterval: 200 * time.Millisecond,
	})
	srv, err := gateway.New(cfg.Gateway(), b, nil)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	addr, done := wstest.Serve(t, srv, cfg.Listen)
	n := &node{srv: srv, addr: addr}
	t.Cleanup(func() {
		if !n.stopped {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			_ = srv.Shutdown(ctx)
		}
		if err := <-done; err != gateway.ErrServerClosed {
			t.Errorf("serve returned %v", err)
		}
	})
	return n
}

// shipped reads a file of this directory and replaces the shipped node
// addresses with n1 and n2, and old with new (a listen line).
func shipped(t *testing.T, path, n1, n2 string, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	repl = append([]string{shippedNode1, n1, shippedNode2, n2}, repl...)
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(s, repl[i]) {
			t.Fatalf("%s no longer contains %q, which the test replaces", path, repl[i])
		}
		s = strings.ReplaceAll(s, repl[i], repl[i+1])
	}
	return s
}

func startNginx(t *testing.T, bin, n1, n2 string) string {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	conf := shipped(t, "nginx/syncgate.conf", n1, n2, "listen 80;", "listen "+addr+";")
	writeFile(t, filepath.Join(dir, "syncgate.conf"), conf)
	// The main config an nginx package provides, with every path in dir.
	main := fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/syncgate.conf;
}
`, dir)
	writeFile(t, filepath.Join(dir, "nginx.conf"), main)
	args := []string{"-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log")}
	if out, err := exec.Command(bin, append(args, "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	startProc(t, "nginx", filepath.Join(dir, "error.log"), exec.Command(bin, args...), addr)
	return addr
}

func startHAProxy(t *testing.T, bin, n1, n2 string) string {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	conf := shipped(t, "haproxy/haproxy.cfg", n1, n2, "bind :80", "bind "+addr)
	path := filepath.Join(dir, "haproxy.cfg")
	writeFile(t, path, conf)
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	startProc(t, "haproxy", "", exec.Command(bin, "-db", "-f", path), addr)
	return addr
}

// startProc starts cmd (a proxy in the foreground), waits until it
// accepts on addr, and stops it (its own PID) when the test ends.
func startProc(t *testing.T, name, logFile string, cmd *exec.Cmd, addr string) {
	t.Helper()
	var out strings.Builder
	var mu sync.Mutex
	cmd.Stdout = writerFunc(func(p []byte) { mu.Lock(); out.Write(p); mu.Unlock() })
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(wait):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("%s output:\n%s", name, out.String())
			mu.Unlock()
			if logFile != "" {
				b, _ := os.ReadFile(logFile)
				t.Logf("%s log:\n%s", name, b)
			}
		}
	})
	waitFor(t, name+" to listen on "+addr, func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s exited: %v\n%s", name, err, out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

type writerFunc func(p []byte)

func (w writerFunc) Write(p []byte) (int, error) { w(p); return len(p), nil }

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func httpStatus(url string) int {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func postPub(base, ch string, data int) (int, string) {
	c := &http.Client{Timeout: wait, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(base+"/pub?user=poster", "application/json", strings.NewReader(fmt.Sprintf(`{"ch":%q,"data":%d}`, ch, data)))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", wait, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func contextWithTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), wait)
}
