package jetstream_test

import (
	"context"
	"fmt"
	"github.com/syncgate/syncgate/internal/testlog"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natsserver"
)

// The test binary doubles as a standalone nats-server (the embedded one,
// natsserver.StartServer), so a test can kill it with SIGKILL: with
// childListenEnv set, TestMain runs the server instead of the tests.
const (
	childListenEnv = "SYNCGATE_TEST_NATS_CHILD_LISTEN"
	childStoreEnv  = "SYNCGATE_TEST_NATS_CHILD_STORE"
	childTokenEnv  = "SYNCGATE_TEST_NATS_CHILD_TOKEN"
	// A cluster member also has a name, a route address and the other
	// members' route addresses (comma-separated).
	childNameEnv    = "SYNCGATE_TEST_NATS_CHILD_NAME"
	childClusterEnv = "SYNCGATE_TEST_NATS_CHILD_CLUSTER"
	childRoutesEnv  = "SYNCGATE_TEST_NATS_CHILD_ROUTES"
	childReady      = "nats child ready"
)

func TestMain(m *testing.M) {
	if listen := os.Getenv(childListenEnv); listen != "" {
		os.Exit(natsChildMain(natsserver.ServerConfig{
			Listen: listen, StoreDir: os.Getenv(childStoreEnv), Token: os.Getenv(childTokenEnv),
			ServerName: os.Getenv(childNameEnv), ClusterListen: os.Getenv(childClusterEnv), Routes: splitNonEmpty(os.Getenv(childRoutesEnv)),
		}))
	}
	os.Exit(m.Run())
}

// natsChildMain runs the embedded server until its stdin is closed (the
// test ends, or its process dies) or it is killed.
func natsChildMain(cfg natsserver.ServerConfig) int {
	s, err := natsserver.StartServer(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats child:", err)
		return 1
	}
	fmt.Println(childReady)
	_, _ = io.Copy(io.Discard, os.Stdin)
	s.Shutdown()
	s.WaitForShutdown()
	return 0
}

// natsChild is a nats-server in a child process, restartable on the same
// port and store directory.
type natsChild struct {
	t            testing.TB
	listen, dir  string
	token        string
	env          []string // a cluster member's name, route address and routes
	cmd          *exec.Cmd
	stdin        io.WriteCloser
	out          *testlog.Buffer
	startTimeout time.Duration
}

// startNATSChild starts the server on a free loopback port; it is killed
// (if still running) when the test ends.
func startNATSChild(t *testing.T) *natsChild {
	t.Helper()
	c := &natsChild{t: t, listen: freeAddr(t), dir: t.TempDir(), token: natsserver.RandomToken(), startTimeout: 30 * time.Second}
	c.start()
	t.Cleanup(c.stop)
	return c
}

// startNATSChildCluster starts n servers in child processes, routed to
// each other, with one token; each is killed (if still running) when the
// test ends.
func startNATSChildCluster(t *testing.T, n int) []*natsChild {
	t.Helper()
	token := natsserver.RandomToken()
	routes := make([]string, n)
	for i := range routes {
		routes[i] = freeAddr(t)
	}
	cs := make([]*natsChild, n)
	for i := range cs {
		cs[i] = &natsChild{t: t, listen: freeAddr(t), dir: t.TempDir(), token: token, startTimeout: 30 * time.Second,
			env: []string{childNameEnv + "=" + fmt.Sprintf("C%d", i+1), childClusterEnv + "=" + routes[i], childRoutesEnv + "=" + strings.Join(routes, ",")}}
		t.Cleanup(cs[i].stop)
	}
	// Started together: each waits for its peers before JetStream is
	// ready.
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(c.launch)
	}
	wg.Wait()
	for _, c := range cs {
		c.waitReady()
	}
	return cs
}

// freeAddr is a free loopback address.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func splitNonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func (c *natsChild) url() string { return "nats://" + c.listen }

func (c *natsChild) start() {
	c.t.Helper()
	c.launch()
	c.waitReady()
}

// launch starts the process; waitReady waits for it to serve. launch may
// run on another goroutine (it reports failures with Error).
func (c *natsChild) launch() {
	exe, err := os.Executable()
	if err != nil {
		c.t.Error(err)
		return
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childListenEnv+"="+c.listen, childStoreEnv+"="+c.dir, childTokenEnv+"="+c.token)
	cmd.Env = append(cmd.Env, c.env...)
	out := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		c.t.Error(err)
		return
	}
	if err := cmd.Start(); err != nil {
		c.t.Error(err)
		return
	}
	c.cmd, c.stdin, c.out = cmd, stdin, out
}

func (c *natsChild) waitReady() {
	c.t.Helper()
	if c.cmd == nil {
		c.t.FailNow()
	}
	out := c.out
	deadline := time.Now().Add(c.startTimeout)
	for !strings.Contains(out.String(), childReady) {
		if time.Now().After(deadline) {
			c.kill()
			c.t.Fatalf("nats child on %s not ready within %v: %s", c.listen, c.startTimeout, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill sends SIGKILL to the server process (by its PID) and reaps it.
func (c *natsChild) kill() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
	c.stdin.Close()
	c.cmd = nil
}

// stop closes the server's stdin (it shuts down cleanly), or kills it
// after 10 s.
func (c *natsChild) stop() {
	if c.cmd == nil {
		return
	}
	c.stdin.Close()
	done := make(chan struct{})
	go func() {
		_ = c.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	c.cmd = nil
}

// TestServerKilled: the nats-server (file storage, the embedded server as
// syncgate runs it) is killed with SIGKILL while two nodes publish, and
// restarted on the same port and store directory. Nothing acked may be
// lost: every acked publication (those acked during the outage from the
// outbox included) is stored once, the history keeps its epoch from seq 1,
// and each node delivers that epoch exactly once, in seq order.
func TestServerKilled(t *testing.T) {
	leakCheckLast(t)
	srv := startNATSChild(t)
	cfg := jetstream.Config{URL: srv.url(), Auth: jetstream.ClientAuth{Token: srv.token}, Storage: jetstream.FileStorage, HistorySize: 5000}
	a, b := startNode(t, cfg), startNode(t, cfg)
	const ch = "doc.killed"
	for _, n := range []node{a, b} {
		if err := n.b.Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
	}
	const each = 300
	var results [2][]published
	var acked atomic.Int64
	var wg sync.WaitGroup
	for i, n := range []node{a, b} {
		wg.Go(func() {
			for k := range each {
				data := fmt.Sprintf("n%d:%d", i, k)
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				pos, err := n.b.Publish(ctx, ch, []byte(data))
				cancel()
				if err == nil {
					acked.Add(1)
				}
				results[i] = append(results[i], published{data, pos, err})
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	// Kill under load, once a sixth of the publishes has been acked.
	brokertest.Eventually(t, 20*time.Second, "100 publishes acked", func() bool { return acked.Load() >= 100 })
	atKill := acked.Load()
	srv.kill()
	time.Sleep(400 * time.Millisecond)
	srv.start()
	wg.Wait()

	brokertest.Eventually(t, 20*time.Second, "both outboxes flushed", func() bool {
		return a.b.OutboxLen() == 0 && b.b.OutboxLen() == 0
	})
	hist, pos, err := a.b.Since(t.Context(), ch, 0, 5000)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) == 0 {
		t.Fatal("empty history after the restart")
	}
	// Every node must have caught up with the history's end before the
	// check (delivery is asynchronous).
	for name, n := range map[string]node{"a": a, "b": b} {
		brokertest.Eventually(t, 20*time.Second, "node "+name+" delivering up to seq "+fmt.Sprint(pos.Seq), func() bool {
			ps := n.rec.Publications(ch)
			return len(ps) > 0 && ps[len(ps)-1].Epoch == pos.Epoch && ps[len(ps)-1].Seq >= pos.Seq
		})
	}
	c := checkRestart(t, true, results[:], hist, pos, map[string]node{"a": a, "b": b}, ch)
	if c.refused > 0 {
		t.Errorf("%d publishes refused: the outbox (%d) must hold every publish of a 400 ms outage", c.refused, jetstream.DefaultOutboxSize)
	}
	t.Logf("SIGKILL after %d acks: %d acked (%d of them during the outage, from the outbox), %d refused; stored %d; acked but not stored: %d lost with the server, %d acked in the outage, %d others; stored twice %d; delivered in the final epoch: a %d, b %d; delivered in other epochs: a %d, b %d",
		atKill, c.acked, c.ackedInOutage, c.refused, c.stored, c.lostBeforeRestart, c.lostOutage, c.lostOther, c.duplicated,
		c.delivered["a"], c.delivered["b"], c.outageDeliveries["a"], c.outageDeliveries["b"])
}
