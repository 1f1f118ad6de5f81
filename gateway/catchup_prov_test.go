package gateway_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/internal/wstest"
)

// provTap is a heldHistory whose delivery handler the test calls to hand
// the gateway what the jetstream and redis backends deliver around a
// broker outage on the publishing node: provisional publications, then
// their real copies, with `was`, once the outbox is stored.
type provTap struct {
	*heldHistory
	mu sync.Mutex
	h  brokers.Handler
}

func (b *provTap) Start(ctx context.Context, h brokers.Handler) error {
	b.mu.Lock()
	b.h = h
	b.mu.Unlock()
	return b.heldHistory.Start(ctx, h)
}

func (b *provTap) deliver(ch string, p brokers.Publication) {
	b.mu.Lock()
	h := b.h
	b.mu.Unlock()
	h.HandlePublication(ch, p)
}

// applier applies msgs by the client rule of docs/provisional.md (step 5)
// and records the data it applied.
type applier struct {
	real    uint64 // seq of the real position (one epoch in this test)
	prov    map[string]uint64
	applied []int
}

func (a *applier) apply(m wstest.Msg) {
	seq, epoch := m.Num("seq"), m.Str("epoch")
	if brokers.IsProvisional(epoch) {
		if seq <= a.prov[epoch] {
			return
		}
		a.prov[epoch] = seq
		a.applied = append(a.applied, int(m["data"].(float64)))
		return
	}
	if seq <= a.real {
		return
	}
	a.real = seq
	if was, ok := m["was"].(map[string]any); ok {
		if w := wstest.Msg(was); w.Num("seq") <= a.prov[w.Str("epoch")] {
			return // applied already under its provisional position
		}
	}
	a.applied = append(a.applied, int(m["data"].(float64)))
}

// TestResumeProvisionalHole: a client resumes, with its provisional
// position as since, on the node whose broker was away while that node's
// outbox still drains: the node handed out provisional seqs while the
// client was not there, and goes on handing out more. Those the client
// missed come later under their real positions, with `was`; if the client
// got a later provisional seq first, the client rule took them for
// applied and skipped them (lost, while the reply said recovered: true).
// The bench study's jetstream crash run lost up to 898 acked messages
// this way at the subscribers resuming on the publishing node. Each
// resuming client must apply every message once; one that stayed must
// too. The provisional publication after the hole lands live (after the
// reply) or while the catch-up's history read is held (the buffer).
func TestResumeProvisionalHole(t *testing.T) {
	for _, tc := range []struct {
		name     string
		buffered bool
		stream   bool
	}{
		{"Live", false, false},
		{"Buffered", true, false},
		{"StreamedLive", false, true},
		{"StreamedBuffered", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forModes(t, func(t *testing.T, mode string) {
				const ch = "doc:prov"
				h := &heldHistory{ch: ch, readFirst: true, reading: make(chan struct{}), release: make(chan struct{}), armed: make(chan struct{}, 1)}
				b := &provTap{heldHistory: h}
				url := startWrappedServer(t, mode, func(m *memory.Broker) brokers.Broker { h.Broker = m; return b })
				ctx := t.Context()
				data := func(i int) []byte { return fmt.Appendf(nil, `"from":"w","data":%d`, i) }

				stay := wstest.Dial(t, url)
				stay.Sub(ch)
				away := wstest.Dial(t, url)
				away.Sub(ch)
				var pos brokers.Position
				for i := 1; i <= 2; i++ {
					p, err := h.Broker.Publish(ctx, ch, data(i))
					if err != nil {
						t.Fatal(err)
					}
					pos = p
				}
				// The broker goes away: the node's publishes get positions
				// in a provisional epoch opened after 2.
				prov := brokers.ProvisionalEpoch("out", pos)
				b.deliver(ch, brokers.Publication{Seq: 1, Epoch: prov, Data: data(3)})
				away.NextWithin(10*time.Second, "the first provisional msg", func(m wstest.Msg) bool {
					return m.Op() == "msg" && m.Str("epoch") == prov
				})
				away.Close()
				// Handed out while the client is away.
				b.deliver(ch, brokers.Publication{Seq: 2, Epoch: prov, Data: data(4)})
				b.deliver(ch, brokers.Publication{Seq: 3, Epoch: prov, Data: data(5)})

				c := wstest.Dial(t, url)
				if tc.buffered {
					h.armed <- struct{}{}
				}
				c.SendRaw(fmt.Sprintf(`{"op":"sub","id":1,"ch":%q,"since":{"seq":1,"epoch":%q},"stream":%t}`, ch, prov, tc.stream))
				if tc.buffered {
					select {
					case <-h.reading:
					case <-time.After(20 * time.Second):
						t.Fatal("the catch-up never read history")
					}
					b.deliver(ch, brokers.Publication{Seq: 4, Epoch: prov, Data: data(6)})
					close(h.release)
				}
				r := c.NextWithin(10*time.Second, "the sub's reply", func(m wstest.Msg) bool { return m.Op() == "subscribed" || m.Op() == "error" })
				if r.Op() != "subscribed" || r["recovered"] != true {
					t.Fatalf("reply = %v", r)
				}
				if tc.stream {
					if cu := c.NextWithin(10*time.Second, "caught_up", func(m wstest.Msg) bool { return m.Op() == "caught_up" }); cu["recovered"] != true {
						t.Fatalf("caught_up = %v", cu)
					}
				}
				if !tc.buffered {
					b.deliver(ch, brokers.Publication{Seq: 4, Epoch: prov, Data: data(6)})
				}
				// The outbox is stored: every node gets the real copies.
				for i := uint64(1); i <= 4; i++ {
					b.deliver(ch, brokers.Publication{Seq: pos.Seq + i, Epoch: pos.Epoch, Data: data(int(2 + i)), Was: brokers.Position{Seq: i, Epoch: prov}})
				}

				collect := func(cl *wstest.Client, a *applier, pubs []any) []string {
					var got []string
					for _, p := range pubs {
						m := wstest.Msg(p.(map[string]any))
						got = append(got, m.Str("epoch")+"/"+fmt.Sprint(m.Num("seq")))
						a.apply(m)
					}
					for a.real < pos.Seq+4 {
						m := cl.NextWithin(10*time.Second, "the last real msg", func(m wstest.Msg) bool { return m.Op() == "msg" })
						got = append(got, m.Str("epoch")+"/"+fmt.Sprint(m.Num("seq")))
						a.apply(m)
					}
					return got
				}
				resumed := &applier{real: pos.Seq, prov: map[string]uint64{prov: 1}}
				pubs, _ := r["pubs"].([]any)
				got := collect(c, resumed, pubs)
				if want := []int{4, 5, 6}; !slices.Equal(resumed.applied, want) {
					t.Errorf("the resumed client applied %v, want %v once each (it had 3 under its since); msgs %v", resumed.applied, want, got)
				}
				stayed := &applier{prov: map[string]uint64{}}
				got = collect(stay, stayed, nil)
				if want := []int{1, 2, 3, 4, 5, 6}; !slices.Equal(stayed.applied, want) {
					t.Errorf("the client that stayed applied %v, want %v once each; msgs %v", stayed.applied, want, got)
				}
			})
		})
	}
}
