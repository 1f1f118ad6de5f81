package gateway_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// failingHistory is a memory broker whose history reads on one channel
// fail with brokers.ErrUnavailable from the failAt-th read on (counted
// since the test last stored 0 in reads), as a broker going down can.
type failingHistory struct {
	*memory.Broker
	ch     string
	failAt atomic.Int32 // 0: never fail
	reads  atomic.Int32
}

func (h *failingHistory) Since(ctx context.Context, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position, error) {
	if ch == h.ch {
		n := h.reads.Add(1)
		if f := h.failAt.Load(); f > 0 && n >= f {
			return nil, brokers.Position{}, brokers.ErrUnavailable
		}
	}
	return h.Broker.Since(ctx, ch, since, limit)
}

// startFailingServer is startServer with a failingHistory broker.
func startFailingServer(t *testing.T, mode string, h *failingHistory, edit func(*config.Config)) *testServer {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Server.IO = mode
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	h.Broker = memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL})
	srv, err := gateway.New(cfg.Gateway(), h, nil)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	addr, done := wstest.Serve(t, srv, cfg.Listen)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != gateway.ErrServerClosed {
			t.Errorf("serve returned %v", err)
		}
	})
	return &testServer{srv: srv, addr: addr, cfg: cfg, broker: h.Broker}
}

// A streamed `sub` whose first history read fails is answered `error`
// `unavailable`, like a v1 subscribe, and the connection stays usable.
func TestCatchUpStreamFirstReadFails(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := &failingHistory{ch: "doc:down"}
		ts := startFailingServer(t, mode, h, bigHistory)
		epoch := fill(t, ts, "doc:down", 20, 4<<10)

		a := dial(t, ts)
		a.Connect("alice")
		h.reads.Store(0)
		h.failAt.Store(1)
		r := a.Call("sub", map[string]any{"ch": "doc:down", "since": since(0, epoch), "stream": true})
		if r.Op() != "error" || r.Str("code") != "unavailable" {
			t.Fatalf("sub with history down = %v, want error unavailable", r)
		}
		a.MustCall("ping", nil, "pong")
		// Not subscribed: a publication on the channel reaches nobody here.
		h.failAt.Store(0)
		p := dial(t, ts)
		p.Connect("bob")
		p.Pub("doc:down", map[string]any{"i": 21})
		a.None(200*time.Millisecond, func(m wstest.Msg) bool { return m.Str("ch") == "doc:down" })
	})
}

// A history read failing in the middle of a streamed catch-up ends the
// connection with `disconnect` `unavailable`, reconnect true, after the
// pages already sent (in order, from seq 1).
func TestCatchUpStreamReadFailsMidway(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		h := &failingHistory{ch: "doc:mid"}
		ts := startFailingServer(t, mode, h, bigHistory)
		epoch := fill(t, ts, "doc:mid", 200, 4<<10)

		a := dial(t, ts)
		a.Connect("alice")
		h.reads.Store(0)
		h.failAt.Store(2)
		r := a.MustCall("sub", map[string]any{"ch": "doc:mid", "since": since(0, epoch), "stream": true}, "subscribed")
		if r["more"] != true {
			t.Fatalf("subscribed = %v, want more", r)
		}
		var last uint64
		for _, p := range r["pubs"].([]any) {
			if s := wstest.Msg(p.(map[string]any)).Num("seq"); s != last+1 {
				t.Fatalf("pub seq %d after %d", s, last)
			} else {
				last = s
			}
		}
		for {
			m := a.NextWithin(3*time.Second, "disconnect", func(m wstest.Msg) bool {
				return m.Str("ch") == "doc:mid" || m.Op() == "disconnect"
			})
			if m.Op() == "msg" {
				if m.Num("seq") != last+1 {
					t.Fatalf("msg seq %d after %d", m.Num("seq"), last)
				}
				last = m.Num("seq")
				continue
			}
			if m.Op() != "disconnect" || m.Str("code") != "unavailable" || m["reconnect"] != true {
				t.Fatalf("after the failed read: %v, want disconnect unavailable reconnect true", m)
			}
			break
		}
		if last >= 200 {
			t.Fatalf("the whole history arrived (seq %d) though a read failed", last)
		}
	})
}
