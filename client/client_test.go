package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/client"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/membus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// node is one in-process gateway on a loopback port.
type node struct {
	srv  *gateway.Server
	addr string
	done chan error
	once sync.Once
}

func (n *node) url() string { return "ws://" + n.addr + "/ws" }

func (n *node) stop(t testing.TB) {
	t.Helper()
	n.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-n.done
	})
}

func testConfig(edit func(*config.Config)) config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	return cfg
}

// startNode runs a gateway on b; it is stopped when the test ends (unless
// stopped before).
func startNode(t testing.TB, cfg config.Config, b brokers.Broker) *node {
	t.Helper()
	srv, err := gateway.New(cfg.Gateway(), b, nil)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{srv: srv, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { n.done <- srv.Serve(ln) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

func startMemoryNode(t testing.TB, edit func(*config.Config)) *node {
	cfg := testConfig(edit)
	return startNode(t, cfg, memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL}))
}

// proxy forwards TCP connections to a target the test can change, and can
// cut every connection or refuse new ones: a network failure on demand.
type proxy struct {
	ln     net.Listener
	target atomic.Value // string
	refuse atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.target.Store(target)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "ws://" + p.ln.Addr().String() + "/ws" }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.refuse.Load() {
			_ = in.Close()
			continue
		}
		out, err := net.DialTimeout("tcp", p.target.Load().(string), time.Second)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(in, out)
		go pipe(out, in)
	}
}

// cut closes every proxied connection abruptly (no close frame).
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

func dial(t testing.TB, url string, opts client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if opts.MinBackoff == 0 {
		opts.MinBackoff = 20 * time.Millisecond
		opts.MaxBackoff = 200 * time.Millisecond
	}
	c, err := client.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func subscribe(t testing.TB, c *client.Client, ch string) *client.Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Subscribe(ctx, ch)
	if err != nil {
		t.Fatalf("subscribe %s: %v", ch, err)
	}
	return s
}

func next(t testing.TB, s *client.Subscription) client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("next on %s: %v", s.Channel(), err)
	}
	return e
}

// nextOf skips events of other types.
func nextOf(t testing.TB, s *client.Subscription, typ client.EventType) client.Event {
	t.Helper()
	for {
		if e := next(t, s); e.Type == typ {
			return e
		}
	}
}

func bg() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = cancel // bounded by its timeout; tests are short
	return ctx
}

func TestPublishSubscribePresence(t *testing.T) {
	n := startMemoryNode(t, nil)
	ann := dial(t, n.url(), client.Options{User: "ann"})
	bob := dial(t, n.url(), client.Options{User: "bob"})
	if ann.User() != "ann" || ann.State() != client.StateConnected {
		t.Fatalf("user %q state %v", ann.User(), ann.State())
	}
	sa := subscribe(t, ann, "doc:1")
	sb := subscribe(t, bob, "doc:1")
	if j := nextOf(t, sa, client.Join); j.User != "bob" || j.Client != bob.ClientID() {
		t.Fatalf("join = %+v", j)
	}
	seq, err := ann.Publish(bg(), "doc:1", map[string]string{"text": "hi"})
	if err != nil || seq != 1 {
		t.Fatalf("publish: seq %d err %v", seq, err)
	}
	for _, s := range []*client.Subscription{sa, sb} {
		m := nextOf(t, s, client.Message)
		if m.Seq != 1 || m.From != "ann" || string(m.Data) != `{"text":"hi"}` || m.Epoch == "" {
			t.Fatalf("msg = %+v", m)
		}
	}
	members, err := bob.Presence(bg(), "doc:1")
	if err != nil || len(members) != 2 {
		t.Fatalf("presence = %v, %v", members, err)
	}
	if rtt, err := bob.Ping(bg()); err != nil || rtt <= 0 {
		t.Fatalf("ping = %v, %v", rtt, err)
	}
	var se *client.ServerError
	if _, err := ann.Publish(bg(), "bad channel", 1); !errors.As(err, &se) || se.Code != "bad_request" {
		t.Fatalf("bad channel: %v", err)
	}
	if _, err := ann.Subscribe(bg(), "doc:1"); !errors.Is(err, client.ErrAlreadySubscribed) {
		t.Fatalf("second subscribe: %v", err)
	}
	if err := sb.Unsubscribe(bg()); err != nil {
		t.Fatal(err)
	}
	if l := nextOf(t, sa, client.Leave); l.User != "bob" {
		t.Fatalf("leave = %+v", l)
	}
	if _, err := sb.Next(bg()); !errors.Is(err, client.ErrUnsubscribed) {
		t.Fatalf("next after unsubscribe: %v", err)
	}
	_ = bob.Close()
	if _, err := bob.Publish(bg(), "doc:1", 1); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
}

// collect reads Message events into a seq list until want messages arrived,
// counting other event types.
func collect(t testing.TB, s *client.Subscription, want int, counts map[client.EventType]int) []uint64 {
	t.Helper()
	var seqs []uint64
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for len(seqs) < want {
		e, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v (events %v)", len(seqs), err, counts)
		}
		counts[e.Type]++
		if e.Type == client.Message {
			seqs = append(seqs, e.Seq)
		}
	}
	return seqs
}

func checkContiguous(t testing.TB, seqs []uint64, from uint64) {
	t.Helper()
	for i, s := range seqs {
		if s != from+uint64(i) {
			t.Fatalf("message %d has seq %d, want %d (no gap, no duplicate); seqs %v", i, s, from+uint64(i), seqs)
		}
	}
}

// publishN publishes n messages from c, spaced by every.
func publishN(t testing.TB, c *client.Client, ch string, n int, every time.Duration) {
	t.Helper()
	for i := range n {
		if _, err := c.Publish(bg(), ch, i); err != nil {
			t.Errorf("publish %d: %v", i, err)
			return
		}
		time.Sleep(every)
	}
}

// TestReconnectCatchUp cuts the TCP connection (no close frame, no
// disconnect) while messages flow, keeps it down while more are published,
// and checks the subscriber gets every seq exactly once, in order.
func TestReconnectCatchUp(t *testing.T) {
	for _, mode := range []string{"epoll", "goroutine"} {
		t.Run(mode, func(t *testing.T) {
			n := startMemoryNode(t, func(c *config.Config) { c.Server.IO = mode })
			px := newProxy(t, n.addr)
			var states []client.State
			var smu sync.Mutex
			sub := dial(t, px.url(), client.Options{User: "sub", OnState: func(s client.State, err error) {
				smu.Lock()
				states = append(states, s)
				smu.Unlock()
			}})
			pub := dial(t, n.url(), client.Options{User: "pub"})
			s := subscribe(t, sub, "doc:cut")

			const total = 300
			done := make(chan struct{})
			go func() {
				defer close(done)
				publishN(t, pub, "doc:cut", total, time.Millisecond)
			}()
			counts := map[client.EventType]int{}
			seqs := collect(t, s, 50, counts)
			px.refuse.Store(true)
			px.cut()
			time.Sleep(100 * time.Millisecond) // messages go on while it is down
			px.refuse.Store(false)
			seqs = append(seqs, collect(t, s, total-len(seqs), counts)...)
			<-done
			checkContiguous(t, seqs, 1)
			if counts[client.Recovered] < 1 || counts[client.Reset] != 0 {
				t.Fatalf("events %v: want a Recovered and no Reset", counts)
			}
			smu.Lock()
			defer smu.Unlock()
			if len(states) < 2 || states[0] != client.StateConnected || states[1] != client.StateReconnecting {
				t.Fatalf("states %v", states)
			}
			if p := s.Position(); p.Seq != total {
				t.Fatalf("position %+v", p)
			}
		})
	}
}

// TestDrainToOtherNode stops the node a client is on (it sends disconnect
// "shutdown" with reconnect true); the client reconnects to the other node
// of the cluster and catches up on what was published meanwhile.
func TestDrainToOtherNode(t *testing.T) {
	cfg := testConfig(nil)
	bs := membus.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL}, 2)
	n1 := startNode(t, cfg, bs[0])
	n2 := startNode(t, cfg, bs[1])
	px := newProxy(t, n1.addr)
	var (
		emu     sync.Mutex
		lastErr error
	)
	sub := dial(t, px.url(), client.Options{User: "sub", OnState: func(s client.State, err error) {
		emu.Lock()
		defer emu.Unlock()
		if s == client.StateReconnecting && lastErr == nil {
			lastErr = err
		}
	}})
	pub := dial(t, n2.url(), client.Options{User: "pub"})
	s := subscribe(t, sub, "doc:drain")
	for i := range 10 {
		if _, err := pub.Publish(bg(), "doc:drain", i); err != nil {
			t.Fatal(err)
		}
	}
	counts := map[client.EventType]int{}
	seqs := collect(t, s, 10, counts)
	node1 := sub.ClientID()

	px.target.Store(n2.addr) // the load balancer sends new connections to node 2
	px.refuse.Store(true)
	n1.stop(t)
	for i := 10; i < 20; i++ { // published while sub is away
		if _, err := pub.Publish(bg(), "doc:drain", i); err != nil {
			t.Fatal(err)
		}
	}
	px.refuse.Store(false)
	seqs = append(seqs, collect(t, s, 10, counts)...)
	checkContiguous(t, seqs, 1)
	// Recovered follows the replayed messages.
	if r := next(t, s); r.Type != client.Recovered || r.Missed != 10 || r.Seq != 20 {
		t.Fatalf("after the replay: %+v (events %v)", r, counts)
	}
	var de *client.DisconnectError
	emu.Lock()
	err := lastErr
	emu.Unlock()
	if !errors.As(err, &de) || de.Code != "shutdown" || !de.Reconnect {
		t.Fatalf("reason for reconnecting: %v", err)
	}
	if sub.ClientID() == node1 {
		t.Fatalf("still client %s", node1)
	}
	// Live messages continue on the new node.
	if _, err := pub.Publish(bg(), "doc:drain", "live"); err != nil {
		t.Fatal(err)
	}
	if m := nextOf(t, s, client.Message); m.Seq != 21 {
		t.Fatalf("live after catch-up: %+v", m)
	}
}

// TestResetWhenHistoryGone: more was missed than the history holds; the
// subscription gets Reset and then live messages.
func TestResetWhenHistoryGone(t *testing.T) {
	n := startMemoryNode(t, func(c *config.Config) { c.History.Size = 5 })
	px := newProxy(t, n.addr)
	sub := dial(t, px.url(), client.Options{User: "sub"})
	pub := dial(t, n.url(), client.Options{User: "pub"})
	s := subscribe(t, sub, "doc:gone")
	publishN(t, pub, "doc:gone", 1, 0)
	nextOf(t, s, client.Message)
	px.refuse.Store(true)
	px.cut()
	publishN(t, pub, "doc:gone", 20, 0)
	px.refuse.Store(false)
	r := nextOf(t, s, client.Reset)
	if r.Seq != 21 {
		t.Fatalf("reset = %+v", r)
	}
	publishN(t, pub, "doc:gone", 1, 0)
	if m := nextOf(t, s, client.Message); m.Seq != 22 {
		t.Fatalf("after reset: %+v", m)
	}
}

// TestCommandsWaitForReconnect: a publish made while the client is
// reconnecting goes out once it is back.
func TestCommandsWaitForReconnect(t *testing.T) {
	n := startMemoryNode(t, nil)
	px := newProxy(t, n.addr)
	c := dial(t, px.url(), client.Options{User: "w"})
	s := subscribe(t, c, "doc:wait")
	px.refuse.Store(true)
	px.cut()
	waitFor(t, "reconnecting", func() bool { return c.State() == client.StateReconnecting })
	errc := make(chan error, 1)
	go func() {
		_, err := c.Publish(bg(), "doc:wait", "queued")
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	px.refuse.Store(false)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if m := nextOf(t, s, client.Message); string(m.Data) != `"queued"` {
		t.Fatalf("msg %+v", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	px.refuse.Store(true)
	px.cut()
	waitFor(t, "reconnecting", func() bool { return c.State() == client.StateReconnecting })
	if _, err := c.Presence(ctx, "doc:wait"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("presence while down: %v", err)
	}
}

// TestPingKeepsAlive: with a 1 s ping interval the server drops clients
// silent for 2 s; an idle client stays connected through its pings.
func TestPingKeepsAlive(t *testing.T) {
	n := startMemoryNode(t, func(c *config.Config) { c.Client.PingInterval = time.Second })
	var drops atomic.Int32
	c := dial(t, n.url(), client.Options{User: "idle", OnState: func(s client.State, err error) {
		if s != client.StateConnected {
			drops.Add(1)
		}
	}})
	id := c.ClientID()
	time.Sleep(3500 * time.Millisecond)
	if drops.Load() != 0 || c.ClientID() != id || c.RTT() <= 0 {
		t.Fatalf("drops %d, client %s -> %s, rtt %v", drops.Load(), id, c.ClientID(), c.RTT())
	}
}

// TestTokenRefresh: tokens live 3 s; the client renews them with `refresh`
// before they expire and stays on the same connection.
func TestTokenRefresh(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef-test"
	n := startMemoryNode(t, func(c *config.Config) { c.Auth.HMACSecret = secret })
	var issued atomic.Int32
	tokenFunc := func(ctx context.Context) (string, error) {
		issued.Add(1)
		return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub":      "tess",
			"exp":      time.Now().Add(3 * time.Second).Unix(),
			"channels": map[string]any{"sub": []string{"doc:*"}, "pub": []string{"doc:*"}},
		}).SignedString([]byte(secret))
	}
	c := dial(t, n.url(), client.Options{TokenFunc: tokenFunc, RefreshMargin: 1500 * time.Millisecond})
	if c.User() != "tess" {
		t.Fatalf("user %q", c.User())
	}
	id := c.ClientID()
	s := subscribe(t, c, "doc:auth")
	time.Sleep(4500 * time.Millisecond) // past the first token's exp
	if _, err := c.Publish(bg(), "doc:auth", 1); err != nil {
		t.Fatal(err)
	}
	nextOf(t, s, client.Message)
	if c.ClientID() != id || issued.Load() < 2 {
		t.Fatalf("client %s -> %s, tokens issued %d", id, c.ClientID(), issued.Load())
	}

	// A refused token is final (no reconnect loop).
	_, err := client.Dial(bg(), n.url(), client.Options{Token: "not-a-jwt"})
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != "unauthorized" {
		t.Fatalf("bad token: %v", err)
	}
}

// TestConcurrentUse hammers one client from several goroutines (run with
// -race): publishes, presence, pings, subscribe/unsubscribe, across a cut.
func TestConcurrentUse(t *testing.T) {
	n := startMemoryNode(t, nil)
	px := newProxy(t, n.addr)
	c := dial(t, px.url(), client.Options{User: "many"})
	s := subscribe(t, c, "doc:conc")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				switch i % 4 {
				case 0:
					_, _ = c.Publish(ctx, "doc:conc", g)
				case 1:
					_, _ = c.Presence(ctx, "doc:conc")
				case 2:
					_, _ = c.Ping(ctx)
				case 3:
					ch := "doc:tmp" + strconv.Itoa(g)
					if ts, err := c.Subscribe(ctx, ch); err == nil {
						_ = ts.Unsubscribe(ctx)
					}
				}
				cancel()
			}
		}()
	}
	time.Sleep(10 * time.Millisecond)
	px.cut()
	wg.Wait()
	// Every message that was delivered came once and in order.
	var last uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		e, err := s.Next(ctx)
		cancel()
		if err != nil {
			break
		}
		if e.Type == client.Message {
			if e.Seq <= last {
				t.Fatalf("seq %d after %d", e.Seq, last)
			}
			last = e.Seq
		}
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
