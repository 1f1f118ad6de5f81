package gateway_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// heldHistory is a memory broker whose history read on one channel is
// held open, once armed, so a test can land publications in the window
// between the catch-up's broker subscription and its reply. With
// readFirst the held read returns what history held before those
// publications (they must come from the live buffer); without it the read
// happens after them (they are in history and in the buffer, and must be
// delivered once).
type heldHistory struct {
	*memory.Broker
	ch        string
	readFirst bool
	twice     bool          // deliver every publication twice (a redelivering broker)
	reading   chan struct{} // closed when the held read has started
	release   chan struct{} // closed by the test to let it return
	armed     chan struct{} // holds one token while a read may be held
}

func (h *heldHistory) Since(ctx context.Context, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position, error) {
	if ch != h.ch {
		return h.Broker.Since(ctx, ch, since, limit)
	}
	select {
	case <-h.armed:
	default:
		return h.Broker.Since(ctx, ch, since, limit)
	}
	var (
		pubs []brokers.Publication
		pos  brokers.Position
		err  error
	)
	if h.readFirst {
		pubs, pos, err = h.Broker.Since(ctx, ch, since, limit)
	}
	close(h.reading)
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, brokers.Position{}, ctx.Err()
	}
	if !h.readFirst {
		pubs, pos, err = h.Broker.Since(ctx, ch, since, limit)
	}
	return pubs, pos, err
}

func (h *heldHistory) Start(ctx context.Context, hd brokers.Handler) error {
	if h.twice {
		hd = twiceHandler{hd}
	}
	return h.Broker.Start(ctx, hd)
}

// twiceHandler hands every publication on twice, as a broker that
// redelivers after a reconnect can.
type twiceHandler struct{ brokers.Handler }

func (t twiceHandler) HandlePublication(ch string, p brokers.Publication) {
	t.Handler.HandlePublication(ch, p)
	t.Handler.HandlePublication(ch, p)
}

// startHeldServer is startServer with a heldHistory broker.
func startHeldServer(t *testing.T, mode string, h *heldHistory, tweak ...func(*config.Config)) string {
	t.Helper()
	return startWrappedServer(t, mode, func(m *memory.Broker) brokers.Broker { h.Broker = m; return h }, tweak...)
}

// startWrappedServer is startServer with the memory broker wrapped by wrap.
func startWrappedServer(t *testing.T, mode string, wrap func(*memory.Broker) brokers.Broker, tweak ...func(*config.Config)) string {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Server.IO = mode
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	for _, f := range tweak {
		f(&cfg)
	}
	b := wrap(memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL}))
	srv, err := gateway.New(cfg.Gateway(), b, nil)
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
	return "ws://" + addr + "/ws"
}

// TestCatchUpHeldHistory makes the catch-up race happen every time: the
// history read of a `sub` with `since` is held open while publications
// land, so a catch-up that registers its subscriber after reading history
// (or drops what arrives before it is live) loses them, and one whose
// merge watermark is off by one delivers one twice. The client must get
// every seq after its since exactly once (also when the broker hands each
// publication over twice), in order, across `subscribed`
// and the live messages that follow, with and without the streamed
// catch-up; and no msg of the channel may come before `subscribed`.
func TestCatchUpHeldHistory(t *testing.T) {
	for _, tc := range []struct {
		name      string
		readFirst bool
		twice     bool
		stream    bool // the streamed catch-up (docs/protocol.md)
	}{
		{"ReadBeforePublishes", true, false, false},
		{"ReadAfterPublishes", false, false, false},
		{"Redelivered", true, true, false},
		{"StreamedReadBeforePublishes", true, false, true},
		{"StreamedReadAfterPublishes", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forModes(t, func(t *testing.T, mode string) {
				const ch = "doc:held"
				h := &heldHistory{ch: ch, readFirst: tc.readFirst, twice: tc.twice, reading: make(chan struct{}), release: make(chan struct{}), armed: make(chan struct{}, 1)}
				url := startHeldServer(t, mode, h)
				ctx := t.Context()
				publish := func(from, to int) {
					for i := from; i <= to; i++ {
						if _, err := h.Broker.Publish(ctx, ch, fmt.Appendf(nil, `"from":"w","data":%d`, i)); err != nil {
							t.Fatal(err)
						}
					}
				}
				publish(1, 3)
				// A first subscriber learns the epoch (its read is not held).
				first := wstest.Dial(t, url)
				epoch := first.Sub(ch).Str("epoch")
				first.Close()

				h.armed <- struct{}{}
				c := wstest.Dial(t, url)
				c.SendRaw(fmt.Sprintf(`{"op":"sub","id":1,"ch":%q,"since":{"seq":2,"epoch":%q},"stream":%t}`, ch, epoch, tc.stream))
				select {
				case <-h.reading:
				case <-time.After(20 * time.Second):
					t.Fatal("the catch-up never read history")
				}
				// The node is subscribed on the broker (memory delivers in
				// Publish): these reach the hub while the read is held.
				publish(4, 8)
				close(h.release)
				publish(9, 10)

				// The first of the channel's messages is the reply: no msg
				// (from the publications that landed during the read, or
				// live ones) comes before `subscribed` (docs/protocol.md).
				r := c.Next(func(m wstest.Msg) bool {
					return m.Op() == "subscribed" || m.Op() == "error" || m.Op() == "msg" && m.Str("ch") == ch
				})
				if r.Op() == "msg" {
					t.Fatalf("msg %v came before the sub's reply", r)
				}
				if r.Op() != "subscribed" || r["recovered"] != true {
					t.Fatalf("reply = %v", r)
				}
				publish(11, 12) // live
				var got []uint64
				for _, p := range r["pubs"].([]any) {
					got = append(got, wstest.Msg(p.(map[string]any)).Num("seq"))
				}
				for len(got) == 0 || got[len(got)-1] < 12 {
					m := c.NextWithin(10*time.Second, "msg up to seq 12", func(m wstest.Msg) bool { return m.Op() == "msg" })
					got = append(got, m.Num("seq"))
				}
				// Nothing more may follow (a late duplicate).
				c.None(100*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })
				want := []uint64{3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("seqs after since 2 (recovered %d, then live) = %v, want %v: each once, in order, no gap", len(r["pubs"].([]any)), got, want)
				}
			})
		})
	}
}

// TestHistoryReadWait: with history.max_reads reads in flight, a `sub` with
// since waits its turn for history.read_wait, then is answered
// `unavailable` (docs/security.md, docs/protocol.md); not sooner.
func TestHistoryReadWait(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		const ch = "doc:readwait"
		h := &heldHistory{ch: ch, readFirst: true, reading: make(chan struct{}), release: make(chan struct{}), armed: make(chan struct{}, 1)}
		url := startHeldServer(t, mode, h, func(c *config.Config) {
			c.History.MaxReads = 1
			c.History.ReadWait = 300 * time.Millisecond
		})
		defer close(h.release)
		if _, err := h.Broker.Publish(t.Context(), ch, []byte(`"from":"w","data":1`)); err != nil {
			t.Fatal(err)
		}
		first := wstest.Dial(t, url)
		epoch := first.Sub(ch).Str("epoch")
		first.Close()

		h.armed <- struct{}{}
		held := wstest.Dial(t, url)
		held.SendRaw(fmt.Sprintf(`{"op":"sub","id":1,"ch":%q,"since":{"seq":0,"epoch":%q}}`, ch, epoch))
		select {
		case <-h.reading:
		case <-time.After(20 * time.Second):
			t.Fatal("the catch-up never read history")
		}
		// The one read slot is taken: the next catch-up waits, then fails.
		c := wstest.Dial(t, url)
		start := time.Now()
		c.SendRaw(fmt.Sprintf(`{"op":"sub","id":2,"ch":%q,"since":{"seq":0,"epoch":%q}}`, ch, epoch))
		r := c.NextWithin(10*time.Second, "reply to the waiting sub", func(m wstest.Msg) bool { return m.Op() == "subscribed" || m.Op() == "error" })
		waited := time.Since(start)
		if r.Op() != "error" || r.Str("code") != "unavailable" {
			t.Fatalf("reply = %v, want error unavailable", r)
		}
		if waited < 250*time.Millisecond || waited > 3*time.Second {
			t.Fatalf("unavailable after %v, want history.read_wait (300ms) to 3s", waited)
		}
	})
}
