package gateway_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

func snapAt(ch string, seq uint64, epoch string, data any) map[string]any {
	return map[string]any{"ch": ch, "at": since(seq, epoch), "data": data}
}

// TestSnapStoreRules: snap is checked against the channel's position and
// kept under the compaction rule (higher seq wins, equal keeps the first).
func TestSnapStoreRules(t *testing.T) {
	ts := startServer(t, "epoll", func(c *config.Config) { c.History.SnapshotMaxBytes = 1024 })
	c := dial(t, ts)
	epoch := c.Sub("doc:s").Str("epoch")
	for i := 1; i <= 5; i++ {
		c.Pub("doc:s", i)
	}
	expectErr := func(fields map[string]any, code, contains string) {
		t.Helper()
		r := c.MustCall("snap", fields, "error")
		if r.Str("code") != code || !strings.Contains(r.Str("message"), contains) {
			t.Fatalf("snap %v = %v, want %s containing %q", fields, r, code, contains)
		}
	}
	expectErr(snapAt("doc:s", 6, epoch, "x"), "bad_request", "only cover messages the channel has")
	expectErr(snapAt("doc:s", 3, "other-epoch", "x"), "bad_request", "only cover messages the channel has")
	expectErr(snapAt("doc:s", 0, epoch, "x"), "bad_request", "at least 1")
	expectErr(map[string]any{"ch": "doc:s", "data": "x"}, "bad_request", `missing "at"`)
	expectErr(map[string]any{"ch": "doc:s", "at": since(3, epoch)}, "bad_request", `missing "data"`)
	expectErr(snapAt("doc:s", 3, epoch, strings.Repeat("a", 1100)), "too_large", "history.snapshot_max_bytes")

	stored := func(seq uint64, data any, want bool, wantSeq uint64) {
		t.Helper()
		r := c.MustCall("snap", snapAt("doc:s", seq, epoch, data), "snapped")
		if r["stored"] != want || r.Num("seq") != wantSeq || r.Str("epoch") != epoch || r.Str("ch") != "doc:s" {
			t.Fatalf("snap at %d = %v, want stored %v, seq %d", seq, r, want, wantSeq)
		}
	}
	stored(4, "four", true, 4)
	stored(4, "four again", false, 4) // equal seq: the first stays
	stored(2, "two", false, 4)        // older never replaces newer
	stored(5, "five", true, 5)
	s, ok, err := ts.broker.LoadSnapshot(t.Context(), "doc:s")
	if err != nil || !ok || s.Seq != 5 || string(s.Data) != `"five"` {
		t.Fatalf("broker holds %+v ok %v err %v, want seq 5 \"five\"", s, ok, err)
	}
}

// collectTail reads a sub answered from a snapshot: the snapshot frame
// first, then `subscribed`, then (streamed) msg frames up to caught_up.
// It returns the snapshot frame and the seqs of the tail, in order.
func collectTail(t *testing.T, c *wstest.Client, stream bool) (wstest.Msg, wstest.Msg, []uint64) {
	t.Helper()
	snap := c.Next(anyMsg)
	sub := c.Next(anyMsg)
	var seqs []uint64
	if pubs, ok := sub["pubs"].([]any); ok {
		for _, p := range pubs {
			seqs = append(seqs, wstest.Msg(p.(map[string]any)).Num("seq"))
		}
	}
	if stream && sub["recovered"] == true {
		for {
			m := c.Next(anyMsg)
			if m.Op() == "caught_up" {
				if m["recovered"] != true {
					t.Fatalf("caught_up = %v", m)
				}
				break
			}
			if m.Op() != "msg" {
				t.Fatalf("during the catch-up got %v", m)
			}
			seqs = append(seqs, m.Num("seq"))
		}
	}
	return snap, sub, seqs
}

// TestSubSnapshotThenTail: a client whose since is older than the history
// window (or that has none) and asks for the snapshot gets it, then exactly
// the messages after it, then live ones; a snapshot the history rolled
// past is not offered; without the flag nothing changes.
func TestSubSnapshotThenTail(t *testing.T) {
	for _, stream := range []bool{false, true} {
		name := "reply"
		if stream {
			name = "stream"
		}
		t.Run(name, func(t *testing.T) {
			forModes(t, func(t *testing.T, mode string) {
				ts := startServer(t, mode, func(c *config.Config) { c.History.Size = 20 })
				w := dial(t, ts)
				epoch := w.Sub("doc:y").Str("epoch")
				last := uint64(0)
				pub := func(n int) {
					for range n {
						last++
						w.Pub("doc:y", last)
					}
				}
				pub(30)
				w.MustCall("snap", snapAt("doc:y", 25, epoch, map[string]any{"upto": 25}), "snapped")
				pub(10) // history (20) holds 21..40: rolled past 3, not past 25

				for _, sinceArg := range []map[string]any{since(3, epoch), nil} {
					c := dial(t, ts)
					args := map[string]any{"op": "sub", "id": 1, "ch": "doc:y", "snapshot": true, "stream": stream}
					if sinceArg != nil {
						args["since"] = sinceArg
					}
					c.Send(args)
					snap, sub, seqs := collectTail(t, c, stream)
					if snap.Op() != "snapshot" || snap.Num("seq") != 25 || snap.Str("epoch") != epoch || jsonStr(snap["data"]) != `{"upto":25}` || snap.Str("ch") != "doc:y" {
						t.Fatalf("first frame = %v, want the snapshot at 25", snap)
					}
					if sub.Op() != "subscribed" || sub["recovered"] != true || sub.Num("seq") != last {
						t.Fatalf("then = %v, want subscribed recovered at %d", sub, last)
					}
					var want []uint64
					for q := uint64(26); q <= last; q++ {
						want = append(want, q)
					}
					if jsonStr(seqs) != jsonStr(want) {
						t.Fatalf("tail seqs = %v, want exactly 26..%d", seqs, last)
					}
					pub(1)
					if m := c.NextOp("msg"); m.Num("seq") != last {
						t.Fatalf("live after the tail = %v, want %d", m, last)
					}
					c.Close()
				}

				// Without the flag: v1 behaviour, no snapshot frame.
				c := dial(t, ts)
				c.Send(map[string]any{"op": "sub", "id": 1, "ch": "doc:y", "since": since(3, epoch)})
				if m := c.Next(anyMsg); m.Op() != "subscribed" || m["recovered"] != false {
					t.Fatalf("sub without snapshot flag = %v", m)
				}

				// History rolls past the snapshot: not offered, recovered false.
				pub(10) // history holds 33..52
				c2 := dial(t, ts)
				c2.Send(map[string]any{"op": "sub", "id": 1, "ch": "doc:y", "since": since(3, epoch), "snapshot": true, "stream": stream})
				if m := c2.Next(anyMsg); m.Op() != "subscribed" || m["recovered"] != false {
					t.Fatalf("sub with a snapshot older than history = %v, want recovered false first", m)
				}
			})
		})
	}
}

// TestSubSnapshotHostile: snapshots the broker returns are validated; a
// malformed one is ignored (recovered false, counted), never sent.
func TestSubSnapshotHostile(t *testing.T) {
	ts := startServer(t, "epoll", func(c *config.Config) {
		c.History.Size = 5
		c.History.SnapshotMaxBytes = 1024
	})
	w := dial(t, ts)
	epoch := w.Sub("doc:h").Str("epoch")
	for i := 1; i <= 20; i++ {
		w.Pub("doc:h", i)
	}
	cases := []struct {
		name string
		snap brokers.Snapshot
	}{
		{"not JSON", brokers.Snapshot{Seq: 18, Epoch: epoch, Data: []byte(`{"a":`)}},
		{"over the limit", brokers.Snapshot{Seq: 18, Epoch: epoch, Data: []byte(`"` + strings.Repeat("a", 2000) + `"`)}},
		{"beyond the channel", brokers.Snapshot{Seq: 99, Epoch: epoch, Data: []byte(`1`)}},
		{"malformed epoch", brokers.Snapshot{Seq: 18, Epoch: "bad epoch\n", Data: []byte(`1`)}},
		{"empty", brokers.Snapshot{Seq: 18, Epoch: epoch, Data: nil}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ts.broker.StoreSnapshot(t.Context(), "doc:h", brokers.Snapshot{Seq: 1, Epoch: "reset"}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := ts.broker.StoreSnapshot(t.Context(), "doc:h", tc.snap); err != nil {
				t.Fatal(err)
			}
			c := dial(t, ts)
			c.Send(map[string]any{"op": "sub", "id": 1, "ch": "doc:h", "since": since(1, epoch), "snapshot": true})
			if m := c.Next(anyMsg); m.Op() != "subscribed" || m["recovered"] != false {
				t.Fatalf("first frame = %v, want subscribed recovered false (no snapshot)", m)
			}
			c.Close()
		})
	}
	_, body := httpGet(t, "http://"+ts.metricsAddr+"/metrics")
	if !strings.Contains(body, `syncgate_broker_payload_rejected_total{kind="snapshot"} 5`) {
		t.Fatalf("want the 5 malformed snapshots counted: %s", grepLines(body, "payload_rejected"))
	}
}

func anyMsg(wstest.Msg) bool { return true }

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestSnapNeedsPublish: a subscriber without publish permission cannot
// store a snapshot (it would rewrite what late joiners load); nothing is
// stored.
func TestSnapNeedsPublish(t *testing.T) {
	ts := startServer(t, "epoll", withHMAC)
	w := dial(t, ts)
	w.MustCall("connect", map[string]any{"token": hsToken(t, userClaims("writer", []string{"doc:*"}, []string{"doc:p"}, time.Hour))}, "connected")
	epoch := w.Sub("doc:p").Str("epoch")
	w.Pub("doc:p", 1)
	r := dial(t, ts)
	r.MustCall("connect", map[string]any{"token": hsToken(t, userClaims("reader", []string{"doc:*"}, nil, time.Hour))}, "connected")
	if m := r.MustCall("snap", snapAt("doc:p", 1, epoch, "evil"), "error"); m.Str("code") != "forbidden" {
		t.Fatalf("snap by a reader = %v, want forbidden", m)
	}
	if _, ok, _ := ts.broker.LoadSnapshot(t.Context(), "doc:p"); ok {
		t.Fatal("a forbidden snap was stored")
	}
	w.MustCall("snap", snapAt("doc:p", 1, epoch, "good"), "snapped")
}

// noSnapshots is a memory broker that keeps history but no snapshots (it
// hides brokers.Snapshots), as redis-streams and nats core.
type noSnapshots struct {
	brokers.Broker
	brokers.History
}

// TestSnapUnavailableWithoutSnapshots: on a broker that keeps no
// snapshots, `snap` is answered `unavailable` and `snapshot: true` changes
// nothing (no `snapshot` frame; the usual catch-up answer).
func TestSnapUnavailableWithoutSnapshots(t *testing.T) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Client.PublishRate = 0
	cfg.Server.DrainWindow = 50 * time.Millisecond
	mb := memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL})
	srv, err := gateway.New(cfg.Gateway(), noSnapshots{mb, mb}, nil)
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
	c := wstest.Dial(t, "ws://"+addr+"/ws")
	c.Connect("alice")
	epoch := c.Sub("doc:n").Str("epoch")
	for i := 1; i <= 3; i++ {
		c.Pub("doc:n", i)
	}
	if r := c.MustCall("snap", snapAt("doc:n", 3, epoch, "three"), "error"); r.Str("code") != "unavailable" {
		t.Fatalf("snap = %v, want error unavailable", r)
	}
	// A snapshot the memory broker underneath does hold is not served
	// through a broker that does not offer snapshots.
	if _, _, err := mb.StoreSnapshot(context.Background(), "doc:n", brokers.Snapshot{Seq: 3, Epoch: epoch, Data: []byte(`"three"`)}); err != nil {
		t.Fatal(err)
	}
	d := wstest.Dial(t, "ws://"+addr+"/ws")
	d.Connect("bob")
	d.Send(map[string]any{"op": "sub", "id": 1, "ch": "doc:n", "since": since(1, "other-epoch"), "snapshot": true})
	r := d.NextWithin(3*time.Second, "sub reply", func(m wstest.Msg) bool { return m.Str("ch") == "doc:n" || m.Op() == "error" })
	if r.Op() != "subscribed" || r["recovered"] != false {
		t.Fatalf("sub with snapshot: true = %v, want subscribed recovered false (no snapshot frame)", r)
	}
}
