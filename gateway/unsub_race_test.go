package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestUnsubscribeUserDuringSub lands a server API unsubscribe (the same
// path a cross-node control message takes) while the user's `sub` is in
// flight, its history read held open: the client must see `subscribed`
// and then `unsubscribed` (never the other way round), get no message of
// the channel after that, and leave no presence entry behind; with a plain
// sub, and with a streamed catch-up (recovered and not).
func TestUnsubscribeUserDuringSub(t *testing.T) {
	for _, tc := range []struct {
		name      string
		since     bool
		sameEpoch bool
	}{
		{"Plain", false, false},
		{"StreamedRecovered", true, true},
		{"StreamedNotRecovered", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) { unsubscribeDuringSub(t, tc.since, tc.sameEpoch) })
	}
}

func unsubscribeDuringSub(t *testing.T, since, sameEpoch bool) {
	forModes(t, func(t *testing.T, mode string) {
		const ch = "doc:unsubrace"
		h := &heldHistory{ch: ch, readFirst: true, reading: make(chan struct{}), release: make(chan struct{}), armed: make(chan struct{}, 1)}
		cfg := config.Default()
		cfg.Listen = "127.0.0.1:0"
		cfg.Server.IO = mode
		cfg.Server.DrainWindow = 50 * time.Millisecond
		h.Broker = memory.New(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL})
		srv, err := gateway.New(cfg.Gateway(), h, nil)
		if err != nil {
			t.Fatal(err)
		}
		addr, done := wstest.Serve(t, srv, cfg.Listen)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
			<-done
		})
		ctx := t.Context()

		url := "ws://" + addr + "/ws"
		sub := `{"op":"sub","id":7,"ch":"` + ch + `"}`
		if since {
			if _, err := h.Broker.Publish(ctx, ch, []byte(`"from":"w","data":0`)); err != nil {
				t.Fatal(err)
			}
			epoch := "other"
			if sameEpoch {
				first := wstest.Dial(t, url)
				epoch = first.Sub(ch).Str("epoch")
				first.Close()
			}
			sub = fmt.Sprintf(`{"op":"sub","id":7,"ch":%q,"since":{"seq":0,"epoch":%q},"stream":true}`, ch, epoch)
		}
		h.armed <- struct{}{}
		c := wstest.Dial(t, url)
		c.Connect("alice")
		c.SendRaw(sub)
		select {
		case <-h.reading:
		case <-time.After(20 * time.Second):
			t.Fatal("the sub never read history")
		}
		n, err := srv.UnsubscribeUser(ctx, "alice", ch)
		if (err != nil && !errors.Is(err, gateway.ErrControlOff)) || n != 1 {
			t.Fatalf("UnsubscribeUser = %d, %v; want 1 subscription", n, err)
		}
		close(h.release)

		first := c.Next(func(m wstest.Msg) bool {
			return m.Op() == "subscribed" || m.Op() == "unsubscribed" || m.Op() == "error"
		})
		if first.Op() != "subscribed" || first.Num("id") != 7 {
			t.Fatalf("first answer = %v, want subscribed id 7", first)
		}
		second := c.NextWithin(10*time.Second, "unsubscribed", func(m wstest.Msg) bool {
			return m.Op() == "unsubscribed" || m.Op() == "error"
		})
		if second.Op() != "unsubscribed" || second.Str("ch") != ch || second["id"] != nil {
			t.Fatalf("after subscribed: %v, want unsubscribed (no id)", second)
		}
		if _, err := h.Broker.Publish(ctx, ch, []byte(`"from":"w","data":1`)); err != nil {
			t.Fatal(err)
		}
		c.None(200*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })
		ms, err := srv.PresenceFromServer(ctx, ch)
		if err != nil || len(ms) != 0 {
			t.Fatalf("presence of %s after the unsubscribe = %v, %v; want empty", ch, ms, err)
		}
		// The slot is free: subscribing again works.
		if r := c.Sub(ch); r.Op() != "subscribed" {
			t.Fatalf("sub again = %v", r)
		}
	})
}
