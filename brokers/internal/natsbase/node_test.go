package natsbase

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/natsserver"
)

type testChan struct{ deactivated bool }

func (c *testChan) Deactivate() { c.deactivated = true }

type nopHandler struct{}

func (nopHandler) HandlePublication(string, brokers.Publication)                    {}
func (nopHandler) HandlePresence(string, brokers.PresenceEventType, brokers.Member) {}

// TestNodeSteps: the lifecycle steps a backend calls (Open, its setup,
// Abort or Run, Go, Close) keep their states when interleaved with Close.
func TestNodeSteps(t *testing.T) {
	cfg := func() OpenConfig {
		return OpenConfig{Prefix: "sg", Embedded: natsserver.ServerConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}}
	}
	newShards := func() *Shards { return NewShards(1, 1, func(m *nats.Msg) {}) }

	t.Run("NilHandler", func(t *testing.T) {
		n := NewNode[*testChan]("t", nil)
		if _, err := n.Open(t.Context(), nil, cfg()); err == nil {
			t.Fatal("Open with a nil handler succeeded")
		}
	})

	t.Run("AbortThenOpenAgain", func(t *testing.T) {
		n := NewNode[*testChan]("t", nil)
		nc, err := n.Open(t.Context(), nopHandler{}, cfg())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Open(t.Context(), nopHandler{}, cfg()); err == nil {
			t.Fatal("a second Open while opening succeeded")
		}
		if n.Check(t.Context()) == nil {
			t.Fatal("an opening node reports running")
		}
		n.Abort()
		if !nc.IsClosed() {
			t.Fatal("Abort left the connection open")
		}
		if _, err := n.Open(t.Context(), nopHandler{}, cfg()); err != nil {
			t.Fatalf("Open after Abort: %v", err)
		}
		if err := n.Run(newShards(), nil); err != nil {
			t.Fatal(err)
		}
		if err := n.Check(t.Context()); err != nil {
			t.Fatalf("running node: %v", err)
		}
		stopped := make(chan struct{})
		if !n.Go(func() { <-n.Done(); close(stopped) }) {
			t.Fatal("Go on a running node refused")
		}
		c, _ := n.Register("a", func() *testChan { return &testChan{} })
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-stopped:
		default:
			t.Fatal("Close returned before the goroutine started with Go")
		}
		if !c.deactivated {
			t.Fatal("Close left a channel active")
		}
		if n.Go(func() {}) {
			t.Fatal("Go on a closed node started a goroutine")
		}
	})

	t.Run("CloseWhileOpening", func(t *testing.T) {
		n := NewNode[*testChan]("t", nil)
		nc, err := n.Open(t.Context(), nopHandler{}, cfg())
		if err != nil {
			t.Fatal(err)
		}
		// The backend's setup is running when Close comes.
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		if !nc.IsClosed() {
			t.Fatal("Close left an opening node's connection open")
		}
		handled := make(chan struct{}, 1)
		sh := NewShards(1, 1, func(*nats.Msg) { handled <- struct{}{} })
		if err := n.Run(sh, nil); !errors.Is(err, brokers.ErrClosed) {
			t.Fatalf("Run after Close: %v, want ErrClosed", err)
		}
		// Run stopped the shards it was given: nothing is handled.
		select {
		case sh.Queue("a") <- nil:
		case <-time.After(time.Second):
		}
		select {
		case <-handled:
			t.Fatal("a shard given to a failed Run still handles messages")
		case <-time.After(50 * time.Millisecond):
		}
		n.Abort() // nothing to undo: closed stays closed
		if _, err := n.Open(t.Context(), nopHandler{}, cfg()); !errors.Is(err, brokers.ErrClosed) {
			t.Fatalf("Open after Close: %v, want ErrClosed", err)
		}
	})
}
