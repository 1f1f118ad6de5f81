package gateway_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/wstest"
)

// TestNoJoinLeaveDuringCatchUp proves docs/protocol.md's "join and leave
// go to every other subscriber of the channel that has its subscribed
// reply ... one still catching up lists presence itself": while a sub's
// history read is held open, another client joins and a third joins and
// leaves; the catching-up client gets its subscribed first, no join or
// leave for any of them (before or after it), and then lists the one who
// stayed with presence; a join after its subscribed does reach it.
func TestNoJoinLeaveDuringCatchUp(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		const ch = "doc:heldpresence"
		h := &heldHistory{ch: ch, readFirst: true, reading: make(chan struct{}), release: make(chan struct{}), armed: make(chan struct{}, 1)}
		url := startHeldServer(t, mode, h)
		if _, err := h.Broker.Publish(t.Context(), ch, []byte(`"from":"w","data":1`)); err != nil {
			t.Fatal(err)
		}
		first := wstest.Dial(t, url)
		epoch := first.Sub(ch).Str("epoch")
		first.Close()

		h.armed <- struct{}{}
		a := wstest.Dial(t, url)
		a.Connect("ann")
		a.SendRaw(fmt.Sprintf(`{"op":"sub","id":1,"ch":%q,"since":{"seq":1,"epoch":%q}}`, ch, epoch))
		select {
		case <-h.reading:
		case <-time.After(20 * time.Second):
			t.Fatal("the catch-up never read history")
		}
		b := wstest.Dial(t, url)
		b.Connect("bob")
		b.Sub(ch)
		c := wstest.Dial(t, url)
		c.Connect("cat")
		c.Sub(ch)
		c.MustCall("unsub", map[string]any{"ch": ch}, "unsubscribed")
		b.NextOp("join")  // cat's join reached bob: the events happened
		b.NextOp("leave") // and cat's leave
		close(h.release)

		presenceEvent := func(m wstest.Msg) bool { return (m.Op() == "join" || m.Op() == "leave") && m.Str("ch") == ch }
		r := a.Next(func(m wstest.Msg) bool { return m.Op() == "subscribed" || presenceEvent(m) })
		if r.Op() != "subscribed" {
			t.Fatalf("%v came before the catching-up sub's reply", r)
		}
		a.None(200*time.Millisecond, presenceEvent)
		users := map[string]int{}
		members := a.Members(ch) // client -> user
		for _, u := range members {
			users[u]++
		}
		if len(users) != 2 || users["ann"] != 1 || users["bob"] != 1 {
			t.Fatalf("presence after the catch-up = %v, want ann and bob", members)
		}
		d := wstest.Dial(t, url)
		d.Connect("dan")
		d.Sub(ch)
		if j := a.NextOp("join"); j.Str("user") != "dan" {
			t.Fatalf("join after subscribed = %v, want dan's", j)
		}
	})
}
