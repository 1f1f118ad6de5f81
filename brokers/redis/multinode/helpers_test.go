package multinode_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/wstest"
)

// childEnv, when set to a Redis address, makes the test binary run one
// gateway node on it instead of the tests (see startChild).
const childEnv = "SYNCGATE_MULTINODE_CHILD"

func TestMain(m *testing.M) {
	redistest.QuietGoRedis()
	if addr := os.Getenv(childEnv); addr != "" {
		runChild(addr)
		return
	}
	goleak.VerifyTestMain(m)
}

// nodeConfig is the gateway configuration of a test node on Redis addr.
func nodeConfig(addr string) config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Broker.Type = "redis"
	cfg.Redis.Addrs = []string{addr}
	cfg.Presence.TTL = time.Second // the smallest allowed
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	return cfg
}

// newBroker is the node's broker, with short timeouts for tests.
func newBroker(cfg config.Config) *redis.Broker {
	return redis.New(redis.Config{
		Addrs:         cfg.Redis.Addrs,
		HistorySize:   cfg.History.Size,
		HistoryTTL:    cfg.History.TTL,
		DialTimeout:   500 * time.Millisecond,
		ReadTimeout:   time.Second,
		ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout:  500 * time.Millisecond,
		ReconnectMin:  20 * time.Millisecond,
		ReconnectMax:  200 * time.Millisecond,
	})
}

type node struct {
	srv *gateway.Server
	url string
}

// startNode runs a gateway node on Redis addr, shut down at cleanup.
func startNode(t *testing.T, addr string) *node {
	t.Helper()
	cfg := nodeConfig(addr)
	srv, err := gateway.New(cfg.Gateway(), newBroker(cfg), nil)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	listen, done := wstest.Serve(t, srv, cfg.Listen)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-done
	})
	return &node{srv: srv, url: "ws://" + listen + "/ws"}
}

// runChild runs one node until killed, printing its address.
func runChild(addr string) {
	cfg := nodeConfig(addr)
	srv, err := gateway.New(cfg.Gateway(), newBroker(cfg), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	_ = srv.Serve(ln)
}

// startChild runs a node in a child process (this test binary) and
// returns its WebSocket URL and the process, killed at cleanup.
func startChild(t *testing.T, addr string) (string, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+addr)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child node: %v", err)
	}
	listen, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
	if !ok {
		t.Fatalf("child node said %q", line)
	}
	return "ws://" + listen + "/ws", cmd
}
