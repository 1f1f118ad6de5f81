package gateway_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

func since(seq uint64, epoch string) map[string]any {
	return map[string]any{"seq": seq, "epoch": epoch}
}

func TestCatchUpExactlyTheMissed(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		pub := dial(t, ts)
		pub.Connect("writer")
		for i := 1; i <= 3; i++ {
			pub.Pub("doc:r", i)
		}
		a := dial(t, ts)
		s := a.Sub("doc:r")
		if s.Num("seq") != 3 {
			t.Fatalf("subscribed = %v", s)
		}
		epoch := s.Str("epoch")
		a.Close() // drop

		for i := 4; i <= 8; i++ {
			pub.Pub("doc:r", i)
		}
		a2 := dial(t, ts)
		r := a2.MustCall("sub", map[string]any{"ch": "doc:r", "since": since(3, epoch)}, "subscribed")
		if r["recovered"] != true || r.Num("seq") != 8 || r.Str("epoch") != epoch {
			t.Fatalf("subscribed = %v", r)
		}
		pubs := r["pubs"].([]any)
		if len(pubs) != 5 {
			t.Fatalf("pubs = %v", pubs)
		}
		for i, p := range pubs {
			m := wstest.Msg(p.(map[string]any))
			if m.Op() != "msg" || m.Num("seq") != uint64(4+i) || m.Num("data") != uint64(4+i) || m.Str("from") != "writer" || m.Str("epoch") != epoch {
				t.Fatalf("pubs[%d] = %v", i, m)
			}
		}
		// Live continues right after, no gap, no duplicate.
		pub.Pub("doc:r", 9)
		m := a2.NextOp("msg")
		if m.Num("seq") != 9 {
			t.Fatalf("live after recovery = %v", m)
		}

		// Nothing missed: recovered with empty pubs.
		a3 := dial(t, ts)
		r = a3.MustCall("sub", map[string]any{"ch": "doc:r", "since": since(9, epoch)}, "subscribed")
		if r["recovered"] != true || len(r["pubs"].([]any)) != 0 {
			t.Fatalf("subscribed = %v", r)
		}
	})
}

func TestCatchUpNotRecoverable(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, func(c *config.Config) { c.History.Size = 10 })
		pub := dial(t, ts)
		s := pub.Sub("doc:n")
		epoch := s.Str("epoch")
		for i := 1; i <= 30; i++ {
			pub.Pub("doc:n", i)
		}
		cases := []struct {
			name   string
			since  map[string]any
			stream bool
		}{
			{"wrong epoch", since(25, "not-"+epoch), false},
			{"too old", since(5, epoch), false},   // 6..20 were trimmed
			{"future", since(99, epoch), false},   // beyond the channel's seq
			{"empty epoch", since(25, ""), false}, // client never had one
			// With stream: true the answer is the same v1 reply: no
			// more, no caught_up (docs/protocol.md, streamed catch-up).
			{"wrong epoch, stream", since(25, "not-"+epoch), true},
			{"too old, stream", since(5, epoch), true},
		}
		seq := uint64(30)
		for _, tc := range cases {
			c := dial(t, ts)
			cmd := map[string]any{"ch": "doc:n", "since": tc.since}
			if tc.stream {
				cmd["stream"] = true
			}
			r := c.MustCall("sub", cmd, "subscribed")
			if r["recovered"] != false || r.Num("seq") != seq || r.Str("epoch") != epoch || r["more"] != nil {
				t.Fatalf("%s: subscribed = %v", tc.name, r)
			}
			if _, ok := r["pubs"]; ok {
				t.Fatalf("%s: pubs present when not recovered: %v", tc.name, r)
			}
			// Live messages still flow after a failed recovery.
			pub.Pub("doc:n", "live")
			seq++
			if m := c.Next(nil); m.Op() != "msg" || m.Str("data") != "live" || m.Num("seq") != seq {
				t.Fatalf("%s: live = %v", tc.name, m)
			}
		}
		// Within the history: recovered.
		c := dial(t, ts)
		r := c.MustCall("sub", map[string]any{"ch": "doc:n", "since": since(30, epoch)}, "subscribed") // one "live" per case since
		if r["recovered"] != true || uint64(len(r["pubs"].([]any))) != seq-30 {
			t.Fatalf("subscribed = %v", r)
		}
	})
}

// TestCatchUpRace publishes without pause while a client drops and
// resubscribes with `since` over and over: across all its sessions it must
// see every seq exactly once, in order.
func TestCatchUpRace(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		const total = 600
		var published atomic.Int64
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := dial(t, ts)
			for i := 1; i <= total; i++ {
				p.SendRaw(fmt.Sprintf(`{"op":"pub","id":%d,"ch":"doc:race","data":%d}`, i, i))
				if i%20 == 0 {
					// Keep the publisher within the history window.
					p.Next(func(o wstest.Msg) bool { return o.Num("id") == uint64(i) })
				}
				published.Store(int64(i))
			}
		}()

		var last uint64
		epoch := ""
		seen := make([]int, total+1)
		for session := 0; last < total; session++ {
			c := dial(t, ts)
			fields := map[string]any{"ch": "doc:race"}
			if epoch != "" {
				fields["since"] = since(last, epoch)
			}
			r := c.MustCall("sub", fields, "subscribed")
			if epoch == "" {
				epoch = r.Str("epoch")
				last = r.Num("seq")
				for s := uint64(1); s <= last; s++ {
					seen[s]++ // before our first subscribe: not ours to see
				}
			} else {
				if r["recovered"] != true {
					t.Fatalf("session %d: not recovered: %v", session, r)
				}
				for _, p := range r["pubs"].([]any) {
					seq := uint64(p.(map[string]any)["seq"].(float64))
					if seq != last+1 {
						t.Fatalf("session %d: history seq %d after %d", session, seq, last)
					}
					last = seq
					seen[seq]++
				}
			}
			// Take a few live messages, then drop the connection abruptly.
			for range 1 + session%7 {
				if last >= total {
					break
				}
				m := c.NextOp("msg")
				if m.Num("seq") != last+1 {
					t.Fatalf("session %d: live seq %d after %d", session, m.Num("seq"), last)
				}
				last = m.Num("seq")
				seen[last]++
			}
			c.Close()
		}
		wg.Wait()
		for s := 1; s <= total; s++ {
			if seen[s] != 1 {
				t.Fatalf("seq %d seen %d times", s, seen[s])
			}
		}
	})
}

// TestSubscribeDuringPublishing checks that a plain subscribe never shows a
// msg at or below the seq its `subscribed` reply reported, nor a gap after.
func TestSubscribeDuringPublishing(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		ts := startServer(t, mode, nil)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := dial(t, ts)
			for i := 1; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p.SendRaw(`{"op":"pub","ch":"doc:sp","data":1}`)
				if i%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
		for range 20 {
			c := dial(t, ts)
			r := c.Sub("doc:sp")
			want := r.Num("seq") + 1
			for range 5 {
				m := c.NextOp("msg")
				if m.Num("seq") != want {
					t.Fatalf("after subscribed seq %d: got msg seq %d, want %d", r.Num("seq"), m.Num("seq"), want)
				}
				want++
			}
			c.Close()
		}
		close(stop)
		wg.Wait()
	})
}
