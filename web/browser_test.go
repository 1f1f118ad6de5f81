package web_test

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

	"github.com/coder/websocket"
	"github.com/syncgate/syncgate/internal/testdeps"
)

// TestBrowser runs web/e2e/demo.test.mjs: headless Chromium (Debian's
// chromium package) driven by playwright-core, against two syncgate
// processes sharing a JetStream broker (embedded in node A; node B
// connects to it). Two users edit one document, see each other's text and
// presence, node B is restarted while its user is away, and the user
// catches up. scripts/deps.sh installs chromium and the npm packages; without
// them the test is skipped (it fails under CI=true).
//
// DEMO_SCREENSHOT=path writes the two-user screenshot there (the README's
// docs/demo.png is made with DEMO_SCREENSHOT=$PWD/docs/demo.png).
func TestBrowser(t *testing.T) {
	nodeJS, chromium := browserDeps(t)
	start := time.Now()
	bin, dir := buildSyncgate(t)

	a, b := jetstreamPair(t, bin, dir)
	addrA, addrB := a.addr, b.addr
	// Node C: auth on (HS256), memory broker; token refresh and the SSE
	// fallback with a token.
	const secret = "browser-test-secret-0123456789abcdef"
	addrC := freeAddr(t)
	c := &gatewayProc{t: t, name: "c", bin: bin, dir: dir, addr: addrC, env: []string{
		"SYNCGATE_LISTEN=" + addrC,
		"SYNCGATE_AUTH_HMAC_SECRET=" + secret,
		"SYNCGATE_BROKER_TYPE=memory",
		"SYNCGATE_LOG_LEVEL=warn",
		"SYNCGATE_METRICS_LISTEN=off",
	}}
	// Node D: no JWT; its connect proxy (cookieBackend, below) maps the
	// "session" cookie to a user: the cookie-session page.
	addrD := freeAddr(t)
	backend := newCookieBackend(t)
	d := &gatewayProc{t: t, name: "d", bin: bin, dir: dir, addr: addrD, env: []string{
		"SYNCGATE_LISTEN=" + addrD,
		"SYNCGATE_BROKER_TYPE=memory",
		"SYNCGATE_PROXY_CONNECT_URL=" + backend.url,
		"SYNCGATE_PROXY_CONNECT_COOKIES=session",
		"SYNCGATE_SERVER_ALLOWED_ORIGINS=http://" + addrD,
		"SYNCGATE_LOG_LEVEL=warn",
		"SYNCGATE_METRICS_LISTEN=off",
	}}
	a.start()
	t.Cleanup(a.stop)
	d.start()
	t.Cleanup(d.stop)
	b.start()
	t.Cleanup(b.stop)
	c.start()
	t.Cleanup(c.stop)

	// The script asks for node B to be stopped and started again; /fake/ws
	// is a scripted server for the JS client's frame handling.
	fake := &fakeServer{}
	mux := http.NewServeMux()
	mux.Handle("/fake/ws", fake)
	mux.HandleFunc("/fake/stats", fake.stats)
	mux.HandleFunc("/evil", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintln(w, "<!doctype html><title>another origin</title>")
	})
	mux.Handle("/", nodeControl(b))
	control := serveLoopback(t, mux)

	shot := os.Getenv("DEMO_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(dir, "demo.png")
	}
	runE2E(t, nodeJS, "demo.test.mjs", 90*time.Second,
		"NODE_A=http://"+addrA, "NODE_B=http://"+addrB, "NODE_C=http://"+addrC, "AUTH_SECRET="+secret,
		"NODE_D=http://"+addrD,
		"CONTROL="+control,
		"CHROMIUM="+chromium, "SCREENSHOT="+shot)
	t.Logf("browser test took %v", time.Since(start).Round(time.Millisecond))
	// The page's connect went through the backend with its cookie; the
	// other origin's attempt never reached it.
	if got := backend.sessions(); len(got) == 0 || got[len(got)-1] != "sid-carol" {
		t.Fatalf("connect proxy saw sessions %q, want sid-carol", got)
	}
}

// jetstreamPair is two nodes sharing a JetStream broker: embedded in node
// A (memory storage, a token), node B connects to it. extra is more env
// for both. Neither is started.
func jetstreamPair(t *testing.T, bin, dir string, extra ...string) (a, b *gatewayProc) {
	natsAddr, addrA, addrB := freeAddr(t), freeAddr(t), freeAddr(t)
	common := append([]string{
		"SYNCGATE_BROKER_TYPE=jetstream",
		"SYNCGATE_NATS_STORAGE=memory",
		// Node A's embedded NATS server requires it; node B presents it.
		"SYNCGATE_NATS_TOKEN=browser-test-nats-token-0123",
		"SYNCGATE_SERVER_DRAIN_WINDOW=100ms",
		"SYNCGATE_LOG_LEVEL=warn",
		"SYNCGATE_METRICS_LISTEN=off", // several nodes on one host: none takes the default metrics port
	}, extra...)
	a = &gatewayProc{t: t, name: "a", bin: bin, dir: dir, addr: addrA, env: append([]string{
		"SYNCGATE_LISTEN=" + addrA,
		"SYNCGATE_NATS_LISTEN=" + natsAddr,
		"SYNCGATE_NATS_STORE_DIR=" + filepath.Join(dir, "nats"),
	}, common...)}
	b = &gatewayProc{t: t, name: "b", bin: bin, dir: dir, addr: addrB, env: append([]string{
		"SYNCGATE_LISTEN=" + addrB,
		"SYNCGATE_NATS_URL=nats://" + natsAddr,
	}, common...)}
	return a, b
}

// browserDeps is the node binary and Chromium for a browser test, and
// checks that web/e2e's npm packages are installed (scripts/deps.sh).
func browserDeps(t *testing.T) (nodeJS, chromium string) {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test: not in -short mode")
	}
	chromium = os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	nodeJS = testdeps.Binary(t, "node")
	if _, err := os.Stat(chromium); err != nil {
		testdeps.Missing(t, chromium)
	}
	for _, pkg := range []string{"playwright-core", "yjs", "y-protocols", "esbuild"} {
		if _, err := os.Stat("e2e/node_modules/" + pkg + "/package.json"); err != nil {
			testdeps.Missing(t, "web/e2e/node_modules/"+pkg+" (npm ci in web/e2e)")
		}
	}
	return nodeJS, chromium
}

// buildSyncgate builds the binary into a temporary directory, which is
// also where the nodes run (no config.yaml there: defaults + env).
func buildSyncgate(t *testing.T) (bin, dir string) {
	t.Helper()
	start := time.Now()
	dir = t.TempDir()
	bin = filepath.Join(dir, "syncgate")
	build := exec.Command("go", "build", "-o", bin, "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built syncgate in %v", time.Since(start).Round(time.Millisecond))
	return bin, dir
}

// runE2E runs web/e2e/<script> with node, logging its output line by
// line; the test fails when the script exits non-zero or outlives limit.
func runE2E(t *testing.T, nodeJS, script string, limit time.Duration, env ...string) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeJS, script)
	cmd.Dir = "e2e"
	cmd.Env = append(cleanEnv(), env...)
	cmd.WaitDelay = 5 * time.Second
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		t.Log(sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("browser script %s: %v (after %v)", script, err, time.Since(start).Round(time.Millisecond))
	}
}

// nodeControl lets a script stop and start nodes: POST /stop?node=NAME,
// POST /start?node=NAME.
func nodeControl(procs ...*gatewayProc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var g *gatewayProc
		for _, p := range procs {
			if p.name == r.URL.Query().Get("node") {
				g = p
			}
		}
		if r.Method != http.MethodPost || g == nil {
			http.Error(w, "POST /stop?node=NAME or /start?node=NAME", http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/stop":
			g.stop()
		case "/start":
			g.start()
		default:
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// serveLoopback serves h on a loopback port until the test ends and
// returns its http://host:port.
func serveLoopback(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := &http.Server{Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// cookieBackend is node D's connect proxy: session cookie "sid-carol" is
// user carol with doc:* to read and write; anything else is unauthorized.
type cookieBackend struct {
	url  string
	mu   sync.Mutex
	seen []string
}

func newCookieBackend(t *testing.T) *cookieBackend {
	b := &cookieBackend{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Cookies map[string]string `json:"cookies"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.seen = append(b.seen, req.Cookies["session"])
		b.mu.Unlock()
		if req.Cookies["session"] != "sid-carol" {
			io.WriteString(w, `{"error":{"code":"unauthorized","message":"no session"}}`)
			return
		}
		io.WriteString(w, `{"user":"carol","channels":{"sub":["doc:*"],"pub":["doc:*"]}}`)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	b.url = "http://" + ln.Addr().String() + "/connect"
	return b
}

func (b *cookieBackend) sessions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.seen...)
}

// gatewayProc is one syncgate process.
type gatewayProc struct {
	t    *testing.T
	name string
	bin  string
	dir  string
	addr string
	env  []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (g *gatewayProc) start() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd != nil {
		return
	}
	cmd := exec.Command(g.bin)
	cmd.Dir = g.dir // no config.yaml there: defaults + env
	cmd.Env = append(cleanEnv(), g.env...)
	logf, err := os.OpenFile(filepath.Join(g.dir, "node-"+g.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		g.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		g.t.Fatalf("start node %s: %v", g.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(done) }()
	g.cmd, g.done = cmd, done
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + g.addr + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(g.dir, "node-"+g.name+".log"))
			g.t.Fatalf("node %s exited at start:\n%s", g.name, log)
		default:
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("node %s not ready: %v", g.name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM (the node tells its clients to reconnect, over
// server.drain_window) and waits; SIGKILL after 15 s.
func (g *gatewayProc) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(15 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
	g.cmd = nil
}

// cleanEnv is this process's environment without SYNCGATE_* variables
// (a node refuses unknown ones, and the test sets its own).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SYNCGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// fakeServer speaks the protocol from a script, to check what a real node
// does not send: several objects in one frame, a duplicate seq, a gap, and
// a disconnect that forbids reconnecting.
type fakeServer struct {
	mu    sync.Mutex
	conns int
	pings int
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	f.mu.Lock()
	f.conns++
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	send := func(lines ...string) bool {
		return c.Write(ctx, websocket.MessageText, []byte(strings.Join(lines, "\n"))) == nil
	}
	msg := func(seq int) string {
		return fmt.Sprintf(`{"op":"msg","ch":"doc:f","seq":%d,"epoch":"e1","from":"fake","data":%d}`, seq, seq)
	}
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(data), "\n") {
			var cmd struct {
				Op string `json:"op"`
				ID uint64 `json:"id"`
				Ch string `json:"ch"`
			}
			if json.Unmarshal([]byte(line), &cmd) != nil {
				continue
			}
			switch cmd.Op {
			case "connect":
				send(fmt.Sprintf(`{"op":"connected","id":%d,"client":"fake-1","user":"x","ping":1}`, cmd.ID))
			case "sub":
				// The reply and five messages in one frame: seq 2 twice, 4 missing.
				send(fmt.Sprintf(`{"op":"subscribed","id":%d,"ch":%q,"seq":0,"epoch":"e1"}`, cmd.ID, cmd.Ch),
					msg(1), msg(2), msg(2), msg(3), msg(5))
			case "ping":
				f.mu.Lock()
				f.pings++
				f.mu.Unlock()
				send(fmt.Sprintf(`{"op":"pong","id":%d}`, cmd.ID),
					`{"op":"disconnect","code":"bad_request","reason":"scripted","reconnect":false}`)
				_ = c.Close(websocket.StatusPolicyViolation, "scripted")
				return
			}
		}
	}
}

func (f *fakeServer) stats(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Access-Control-Allow-Origin", "*")
	fmt.Fprintf(w, `{"conns":%d,"pings":%d}`, f.conns, f.pings)
}
