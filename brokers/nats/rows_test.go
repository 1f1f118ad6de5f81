package nats_test

// Tests of the rows of docs/brokers.md's core NATS table that the
// conformance suite cannot see: a slow node, a partition, presence without
// JetStream, the outbox's bound, the embedded server.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/nats"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/natsname"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/testlog"
)

// startConfigured starts a broker with cfg (its Log writing to the returned
// buffer when cfg.Log is nil) delivering to h, closed at cleanup.
func startConfigured(t *testing.T, cfg nats.Config, h brokers.Handler) (*nats.Broker, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	b := nats.New(cfg)
	if err := b.Start(t.Context(), h); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, logs
}

// gate is a Recorder whose deliveries wait while the gate is shut.
type gate struct {
	*brokertest.Recorder
	mu   sync.Mutex
	open chan struct{}
}

func newGate() *gate { return &gate{Recorder: brokertest.NewRecorder(), open: make(chan struct{})} }

func (g *gate) HandlePublication(ch string, p brokers.Publication) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	<-open
	g.Recorder.HandlePublication(ch, p)
}

func (g *gate) release() { close(g.open) }

// TestSlowNodeDrops: a node whose delivery goroutine is stalled gets a
// burst of publications. What does not fit in its queues (Shards x
// QueueSize, here 1 x 4, plus the one the stalled goroutine holds) is
// dropped for that node and logged as a slow consumer; the node then goes
// on delivering, and delivers nothing twice or out of order
// (docs/brokers.md, core NATS "A node's delivery queue full").
func TestSlowNodeDrops(t *testing.T) {
	srv := natstest.RunServer(t)
	warmUp(t, srv.URL())
	const shards, queue, burst = 1, 4, 200
	g := newGate()
	slow, logs := startConfigured(t, nats.Config{URL: srv.URL(), Shards: shards, QueueSize: queue}, g)
	pub, _ := startConfigured(t, nats.Config{URL: srv.URL()}, brokertest.NewRecorder())
	if got := slow.Pending().MsgLimit; got != shards*queue {
		t.Fatalf("Pending().MsgLimit = %d, want Shards x QueueSize = %d", got, shards*queue)
	}
	const ch = "doc.slow"
	if err := slow.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	for i := range burst {
		if _, err := pub.Publish(t.Context(), ch, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Core NATS publishes are not acked: wait until the server has written
	// the whole burst to the slow node's connection, and give its client
	// library a moment to read it, before the node is let go.
	tok := "sg.c." + natsname.Token(ch)
	brokertest.Eventually(t, 10*time.Second, "the burst written to the slow node", func() bool {
		cz, err := srv.Server().Connz(&server.ConnzOptions{Subscriptions: true})
		if err != nil {
			return false
		}
		for _, c := range cz.Conns {
			if slices.Contains(c.Subs, tok) {
				return c.OutMsgs >= burst && c.Pending == 0
			}
		}
		return false
	})
	time.Sleep(200 * time.Millisecond)
	if !strings.Contains(logs.String(), "slow consumer") {
		t.Errorf("no slow consumer logged; log:\n%s", logs.String())
	}
	g.release()
	// The node keeps working: publications after the burst arrive.
	brokertest.Eventually(t, 10*time.Second, "a publication after the burst delivered", func() bool {
		if _, err := pub.Publish(t.Context(), ch, []byte("after")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		got := g.Publications(ch)
		return len(got) > 0 && string(got[len(got)-1].Data) == "after"
	})
	var burstGot []brokers.Publication
	for _, p := range g.Publications(ch) {
		if string(p.Data) != "after" {
			burstGot = append(burstGot, p)
		}
	}
	// At most what the queues hold, plus the one message each stalled
	// delivery goroutine holds.
	if len(burstGot) > shards*queue+shards {
		t.Errorf("the stalled node delivered %d of %d; past Shards x QueueSize (%d) + %d in hand they must be dropped", len(burstGot), burst, shards*queue, shards)
	}
	if len(burstGot) == 0 {
		t.Errorf("the stalled node delivered none of the burst; the queued ones must arrive")
	}
	next := 0
	for _, p := range burstGot {
		var k int
		if _, err := fmt.Sscanf(string(p.Data), "m%d", &k); err != nil || k < next {
			t.Fatalf("delivered %q after m%d: twice or out of order (all: %d deliveries)", p.Data, next-1, len(burstGot))
		}
		next = k + 1
	}
	if err := g.Err(); err != nil {
		t.Error(err)
	}
	t.Logf("burst of %d to a node stalled with queues of %d: %d delivered, the rest dropped and logged as a slow consumer", burst, shards*queue, len(burstGot))
}

// TestPartition: a node reaches the server through a proxy that stops
// forwarding (packets dropped, the connection kept open) for longer than
// the ping timeout. During the partition neither side gets the other's
// messages; the cut-off node notices within the ping timeout (then its
// publishes are acked, delivered to its own subscribers at once and kept
// in its outbox); on heal, what the others published meanwhile is never
// delivered to it (nothing is reconciled), while its outbox reaches the
// others, once each, in order (docs/brokers.md, core NATS "Partition").
func TestPartition(t *testing.T) {
	leakCheckLast(t)
	srv := natstest.RunServer(t)
	warmUp(t, srv.URL())
	proxy := redistest.StartProxy(t, srv.Server().Addr().String())
	cut := startNodesLeak(t, "nats://"+proxy.Addr(), 1, false)[0]
	other := startNodesLeak(t, srv.URL(), 1, false)[0]
	const ch = "doc.partition"
	for _, n := range []node{cut, other} {
		mustSubscribe(t, n.b, ch)
	}
	mustPublish(t, other.b, ch, "before")
	cut.rec.WaitPublications(t, ch, 1, wait)

	// Both publish every 20 ms through the partition; the cut node's
	// publishes after it noticed (its outbox no longer empty) are marked.
	type sent struct {
		data    string
		noticed bool // the cut node had noticed the outage before this publish
	}
	var (
		mu       sync.Mutex
		fromCut  []sent
		fromOth  []string
		refused  int
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		noticed  time.Time
		parted   time.Time
		healedAt time.Time
	)
	publishing := func(n node, who string, record func(string, error)) {
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			d := fmt.Sprintf("%s:%d", who, k)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			_, err := n.b.Publish(ctx, ch, []byte(d))
			cancel()
			record(d, err)
			time.Sleep(20 * time.Millisecond)
		}
	}
	proxy.Partition()
	parted = time.Now()
	wg.Go(func() {
		publishing(cut, "cut", func(d string, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused++
				return
			}
			out := cut.b.OutboxLen() > 0
			if out && noticed.IsZero() {
				noticed = time.Now()
			}
			fromCut = append(fromCut, sent{d, out})
		})
	})
	wg.Go(func() {
		publishing(other, "oth", func(d string, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused++
				return
			}
			fromOth = append(fromOth, d)
		})
	})
	// The ping timeout (2 s pings, 2 outstanding) ends the connection
	// 4-6 s after the partition began.
	brokertest.Eventually(t, 12*time.Second, "the cut node noticed the partition", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !noticed.IsZero()
	})
	time.Sleep(300 * time.Millisecond) // a few outbox publishes
	// Each side sees only its side's messages.
	for _, p := range cut.rec.Publications(ch) {
		if strings.HasPrefix(string(p.Data), "oth:") {
			t.Errorf("the cut node delivered %q during the partition", p.Data)
		}
	}
	for _, p := range other.rec.Publications(ch) {
		if strings.HasPrefix(string(p.Data), "cut:") {
			t.Errorf("the other node delivered %q during the partition", p.Data)
		}
	}
	mu.Lock()
	ownDuring := 0
	for _, s := range fromCut {
		if s.noticed {
			ownDuring++
		}
	}
	othDuring := len(fromOth)
	mu.Unlock()
	cutOwn := 0
	for _, p := range cut.rec.Publications(ch) {
		if strings.HasPrefix(string(p.Data), "cut:") {
			cutOwn++
		}
	}
	if cutOwn < ownDuring {
		t.Errorf("the cut node delivered %d of its own publications, but %d were acked after it noticed the outage (they are delivered locally at once)", cutOwn, ownDuring)
	}
	proxy.Heal()
	healedAt = time.Now()
	brokertest.Eventually(t, 20*time.Second, "the cut node's outbox sent", func() bool { return cut.b.OutboxLen() == 0 })
	// One more publication from each side after the heal, and a fence each
	// way, so that whatever is still coming has come.
	close(stop)
	wg.Wait()
	for _, from := range []node{cut, other} {
		for _, to := range []node{cut, other} {
			fence(t, from, to)
		}
	}
	time.Sleep(100 * time.Millisecond)

	if refused > 0 {
		t.Errorf("%d publishes refused; the outbox must hold the cut node's, the other node is not affected", refused)
	}
	count := func(n node) map[string]int {
		got := map[string]int{}
		next := map[string]int{}
		for _, p := range n.rec.Publications(ch) {
			d := string(p.Data)
			got[d]++
			var who string
			var k int
			if i := strings.IndexByte(d, ':'); i > 0 {
				who = d[:i]
				fmt.Sscanf(d[i+1:], "%d", &k)
				if k < next[who] {
					t.Errorf("%q delivered after %s:%d: out of order", d, who, next[who]-1)
				}
				next[who] = k + 1
			}
		}
		twice := 0
		for d, c := range got {
			if c > 1 {
				if twice++; twice <= 3 {
					t.Errorf("%q delivered %d times", d, c)
				}
			}
		}
		if twice > 3 {
			t.Errorf("... %d messages delivered more than once in all", twice)
		}
		return got
	}
	atCut, atOther := count(cut), count(other)
	// Not reconciled: what the other node published during the partition
	// (before the heal) never reaches the cut node.
	mu.Lock()
	defer mu.Unlock()
	for _, d := range fromOth[:othDuring] {
		if atCut[d] > 0 {
			t.Errorf("the cut node delivered %q, published by the other node during the partition: reconciled, the row says it is lost", d)
			break
		}
	}
	// The cut node's outbox reaches the other node.
	lost := 0
	for _, s := range fromCut {
		if s.noticed && atOther[s.data] == 0 {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of the cut node's outbox publications never reached the other node", lost)
	}
	unnoticed, unnoticedGot := 0, 0
	for _, s := range fromCut {
		if !s.noticed {
			unnoticed++
			if atOther[s.data] > 0 {
				unnoticedGot++
			}
		}
	}
	detect := noticed.Sub(parted)
	if detect > 8*time.Second {
		t.Errorf("the cut node noticed the partition after %v; the ping timeout is 4-6 s", detect)
	}
	t.Logf("partition noticed after %v, healed after %v; the cut node: %d publications before it noticed (%d reached the other node, late), %d from its outbox (all reached it); the other node: %d published during the partition, none delivered to the cut node",
		detect.Round(10*time.Millisecond), healedAt.Sub(parted).Round(10*time.Millisecond), unnoticed, unnoticedGot, ownDuring, othDuring)
}

// TestPresenceWithoutJetStream: on a server without JetStream the node
// starts (publications work), logs a warning, and every presence call
// fails with ErrUnavailable (docs/brokers.md, core NATS "Presence").
func TestPresenceWithoutJetStream(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithoutJetStream())
	rec := brokertest.NewRecorder()
	b, logs := startConfigured(t, nats.Config{URL: srv.URL()}, rec)
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "no JetStream") {
		t.Errorf("no warning at start about presence without JetStream; log:\n%s", logs.String())
	}
	ctx := t.Context()
	const ch = "doc.nojs"
	m := brokers.Member{User: "u", Client: "c"}
	_, membersErr := b.Members(ctx, ch)
	for name, err := range map[string]error{
		"Join":    b.Join(ctx, ch, m, time.Minute),
		"Refresh": b.Refresh(ctx, ch, []brokers.Member{m}, time.Minute),
		"Leave":   b.Leave(ctx, ch, m),
		"Members": membersErr,
	} {
		if !errors.Is(err, brokers.ErrUnavailable) {
			t.Errorf("%s without JetStream: %v, want ErrUnavailable", name, err)
		}
	}
	mustSubscribe(t, b, ch)
	mustPublish(t, b, ch, "still works")
	rec.WaitPublications(t, ch, 1, wait)
}

// TestOutboxBound: while the server is down, a publish is acked, delivered
// to the node's own subscribers at once and kept in the outbox; past
// nats.outbox_size the publish fails with ErrUnavailable and is delivered
// to nobody; a node closed with a non-empty outbox logs how many it drops
// (docs/brokers.md, core NATS "Publishing during an outage").
func TestOutboxBound(t *testing.T) {
	leakCheckLast(t)
	srv := natstest.RunServer(t)
	rec := brokertest.NewRecorder()
	const size = 3
	b, logs := startConfigured(t, nats.Config{URL: srv.URL(), OutboxSize: size}, rec)
	const ch = "doc.outbox"
	mustSubscribe(t, b, ch)
	srv.Shutdown()
	brokertest.Eventually(t, 10*time.Second, "the node noticed the outage", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		return b.Ping(ctx) != nil
	})
	for i := range size {
		if _, err := b.Publish(t.Context(), ch, fmt.Appendf(nil, "o%d", i)); err != nil {
			t.Fatalf("publish %d of %d during the outage: %v; the outbox must hold it", i+1, size, err)
		}
		// Delivered locally at once, before the server is back.
		rec.WaitPublications(t, ch, i+1, wait)
	}
	if n := b.OutboxLen(); n != size {
		t.Fatalf("OutboxLen = %d, want %d", n, size)
	}
	if _, err := b.Publish(t.Context(), ch, []byte("past the bound")); !errors.Is(err, brokers.ErrUnavailable) {
		t.Fatalf("publish past the outbox bound: %v, want ErrUnavailable", err)
	}
	time.Sleep(50 * time.Millisecond)
	if got := rec.Publications(ch); len(got) != size {
		t.Fatalf("%d deliveries, want %d: the refused publish must reach nobody", len(got), size)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if l := logs.String(); !strings.Contains(l, "still in the outbox") || !strings.Contains(l, fmt.Sprintf("count=%d", size)) {
		t.Errorf("Close with %d publishes in the outbox did not log how many it drops; log:\n%s", size, l)
	}
}

// TestEmbeddedServer: with nats.url empty (the default configuration) the
// node runs its own NATS server: a second node connects to its client
// address (with the token), publications cross both ways, presence works
// (the embedded server has JetStream), and Close shuts the server down
// (docs/brokers.md, core NATS "Embedded server").
func TestEmbeddedServer(t *testing.T) {
	leakCheckLast(t)
	cfg := config.Default()
	if cfg.NATS.URL != "" {
		t.Fatalf("default nats.url %q, want empty (embedded server)", cfg.NATS.URL)
	}
	const token = "embedded-core-token-0123456789"
	cfg.Broker.Type = "nats"
	cfg.NATS.Listen, cfg.NATS.StoreDir, cfg.NATS.Token = "127.0.0.1:0", t.TempDir(), token
	recA := brokertest.NewRecorder()
	a, _ := startConfigured(t, cfg.NATSBroker(nil), recA)
	url := a.ClientURL()
	if url == "" {
		t.Fatal("no embedded server: ClientURL is empty")
	}
	recB := brokertest.NewRecorder()
	b, _ := startConfigured(t, nats.Config{URL: url, Auth: nats.ClientAuth{Token: token}}, recB)
	const ch = "doc.embedded"
	mustSubscribe(t, a, ch)
	mustSubscribe(t, b, ch)
	mustPublish(t, a, ch, "from a")
	mustPublish(t, b, ch, "from b")
	recA.WaitPublications(t, ch, 2, wait)
	recB.WaitPublications(t, ch, 2, wait)
	m := brokers.Member{User: "u", Client: "c"}
	if err := b.Join(t.Context(), ch, m, time.Minute); err != nil {
		t.Fatalf("presence on the embedded server: %v", err)
	}
	recA.WaitPresence(t, ch, brokers.Join, m, wait)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(url, "nats://")
	if c, err := net.DialTimeout("tcp", host, time.Second); err == nil {
		c.Close()
		t.Fatalf("the embedded server still listens on %s after Close", host)
	}
}

// TestNoSeqNoEpoch: core NATS gives no order number. Publish returns the
// zero Position (connected, and from the outbox during an outage), every
// node delivers publications with seq 0 and no epoch, and the broker has
// no history (the gateway then acks seq 0, sends `msg` without seq and
// epoch, and answers `sub` with seq 0, no epoch, `recovered: false`;
// docs/brokers.md, core NATS "Seq and epoch", "History and recovery").
func TestNoSeqNoEpoch(t *testing.T) {
	leakCheckLast(t)
	srv := natstest.RunServer(t)
	warmUp(t, srv.URL())
	ns := startNodesLeak(t, srv.URL(), 2, false)
	a, b := ns[0], ns[1]
	if _, ok := any(a.b).(brokers.History); ok {
		t.Fatal("the core NATS broker implements brokers.History")
	}
	const ch = "doc.noseq"
	mustSubscribe(t, a.b, ch)
	mustSubscribe(t, b.b, ch)
	for i := range 3 {
		pos, err := a.b.Publish(t.Context(), ch, fmt.Appendf(nil, "m%d", i))
		if err != nil || pos != (brokers.Position{}) {
			t.Fatalf("Publish: %+v, %v; want the zero position", pos, err)
		}
	}
	// Core NATS is at most once: let them arrive before the server goes.
	a.rec.WaitPublications(t, ch, 3, wait)
	b.rec.WaitPublications(t, ch, 3, wait)
	srv.Shutdown()
	brokertest.Eventually(t, 10*time.Second, "the node noticed the outage", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		return a.b.Ping(ctx) != nil
	})
	pos, err := a.b.Publish(t.Context(), ch, []byte("m3"))
	if err != nil || pos != (brokers.Position{}) {
		t.Fatalf("Publish during the outage: %+v, %v; want the zero position", pos, err)
	}
	srv.Restart(t)
	for name, n := range map[string]node{"a": a, "b": b} {
		for _, p := range n.rec.WaitPublications(t, ch, 4, 20*time.Second) {
			if p.Seq != 0 || p.Epoch != "" || p.Was != (brokers.Position{}) {
				t.Errorf("node %s delivered %q at seq %d epoch %q was %+v; want no seq, no epoch", name, p.Data, p.Seq, p.Epoch, p.Was)
			}
		}
	}
}

// TestReconnects: a node reconnects by itself after the server was down
// for a while (several attempts failed), three times over: each time,
// within the reconnect wait plus its jitter (250 + 500 ms) of the server's
// return, plus slack for a loaded machine, it answers Ping again, and it
// receives what is published on its channels (it subscribed again)
// (docs/brokers.md, core NATS "NATS server crash or restart"). One
// reconnect can be quick by luck with a longer wait; three rarely are.
func TestReconnects(t *testing.T) {
	leakCheckLast(t)
	srv := natstest.RunServer(t)
	warmUp(t, srv.URL())
	ns := startNodesLeak(t, srv.URL(), 2, false)
	a, b := ns[0], ns[1]
	const ch = "doc.reconnect"
	mustSubscribe(t, a.b, ch)
	const bound = 750*time.Millisecond + 750*time.Millisecond // reconnect wait + jitter, slack
	var took []time.Duration
	for round := range 3 {
		srv.Shutdown()
		time.Sleep(time.Second)
		srv.Restart(t)
		back := time.Now()
		brokertest.Eventually(t, 10*time.Second, "the nodes reconnected", func() bool {
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			return a.b.Ping(ctx) == nil && b.b.Ping(ctx) == nil
		})
		took = append(took, time.Since(back).Round(10*time.Millisecond))
		if took[round] > bound {
			t.Errorf("round %d: the nodes reconnected %v after the server came back; the reconnect wait and jitter are 750 ms at most", round, took[round])
		}
		mustPublish(t, b.b, ch, fmt.Sprint(round))
		a.rec.WaitPublications(t, ch, round+1, wait)
	}
	t.Logf("both nodes reconnected %v after the server came back", took)
}
