package gateway_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// countedHistory is a memory broker that counts the history reads on one
// channel and makes each of them take delay, as a loaded broker does.
type countedHistory struct {
	*memory.Broker
	ch    string
	delay time.Duration
	reads atomic.Int64
	limit atomic.Int64 // the largest limit a read asked for
}

func (h *countedHistory) Since(ctx context.Context, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position, error) {
	if ch == h.ch {
		h.reads.Add(1)
		if int64(limit) > h.limit.Load() {
			h.limit.Store(int64(limit))
		}
		if h.delay > 0 {
			select {
			case <-time.After(h.delay):
			case <-ctx.Done():
				return nil, brokers.Position{}, ctx.Err()
			}
		}
	}
	return h.Broker.Since(ctx, ch, since, limit)
}

// TestCatchUpStreamPagesSizedByMessages: a streamed catch-up sizes its
// pages by the messages it reads, not by client.max_message_size. With
// the defaults, pages sized for the largest message held 3 messages, so a
// catch-up of 600 small ones took 200 history reads, and one racing a
// channel that grows faster than 3 messages per read never reached
// caught_up (the client was never told).
func TestCatchUpStreamPagesSizedByMessages(t *testing.T) {
	const ch = "doc:pages"
	setup := func(t *testing.T, mode string, delay time.Duration, grow ...int) (*countedHistory, string, string) {
		h := &countedHistory{ch: ch, delay: delay}
		url := startWrappedServer(t, mode, func(m *memory.Broker) brokers.Broker { h.Broker = m; return h },
			func(c *config.Config) { c.History.Size = 5000; c.Client.MaxQueueBytes = 8 << 20 })
		for i := 1; i <= 600; i++ {
			pad := ""
			if len(grow) > 0 && i > grow[0] && i <= grow[0]+60 {
				pad = strings.Repeat("x", 60<<10) // near max_message_size
			}
			if _, err := h.Broker.Publish(t.Context(), ch, fmt.Appendf(nil, `"from":"w","data":{"i":%d,"pad":%q}`, i, pad)); err != nil {
				t.Fatal(err)
			}
		}
		first := wstest.Dial(t, url)
		epoch := first.Sub(ch).Str("epoch")
		first.Close()
		return h, url, epoch
	}
	sub := func(t *testing.T, url, epoch string) (*wstest.Client, wstest.Msg) {
		c := wstest.Dial(t, url)
		c.SendRaw(fmt.Sprintf(`{"op":"sub","id":1,"ch":%q,"since":{"seq":0,"epoch":%q},"stream":true}`, ch, epoch))
		r := c.Next(func(m wstest.Msg) bool { return m.Op() == "subscribed" || m.Op() == "error" })
		if r.Op() != "subscribed" || r["recovered"] != true || r["more"] != true {
			t.Fatalf("subscribed = %v", r)
		}
		return c, r
	}

	t.Run("FewReads", func(t *testing.T) {
		forModes(t, func(t *testing.T, mode string) {
			h, url, epoch := setup(t, mode, 0)
			before := h.reads.Load()
			c, r := sub(t, url, epoch)
			seqs, caught := streamed(t, c, ch, r)
			if caught["recovered"] != true {
				t.Fatalf("caught_up = %v", caught)
			}
			checkSeqs(t, seqs, 1, 600)
			// 3 (the first page, sized for the largest message), then
			// pages of 16 * 3 small messages (pageGrowth): 14 reads in all
			// (200 before).
			n := h.reads.Load() - before
			t.Logf("%d history reads", n)
			if n > 14 {
				t.Fatalf("a catch-up of 600 small messages took %d history reads, want at most 14", n)
			}
		})
	})

	t.Run("FewReadsV1", func(t *testing.T) {
		forModes(t, func(t *testing.T, mode string) {
			// A client without stream: true gets the 600 in `subscribed`,
			// read in the same pages.
			h, url, epoch := setup(t, mode, 0)
			before := h.reads.Load()
			c := wstest.Dial(t, url)
			c.SendRaw(fmt.Sprintf(`{"op":"sub","id":1,"ch":%q,"since":{"seq":0,"epoch":%q}}`, ch, epoch))
			r := c.Next(func(m wstest.Msg) bool { return m.Op() == "subscribed" || m.Op() == "error" })
			if r.Op() != "subscribed" || r["recovered"] != true {
				t.Fatalf("subscribed = %v", r)
			}
			seqs, _ := streamed(t, c, ch, r)
			checkSeqs(t, seqs, 1, 600)
			if n := h.reads.Load() - before; n > 14 {
				t.Fatalf("a v1 catch-up of 600 small messages took %d history reads, want at most 14", n)
			}
		})
	})

	t.Run("GrowingMessages", func(t *testing.T) {
		forModes(t, func(t *testing.T, mode string) {
			// 300 small messages, 60 of 60 KiB, 240 small: the pages sized by
			// the small ones meet the large ones, and ask for at most 16
			// times the first page's 3 (16 x page_bytes at most).
			h, url, epoch := setup(t, mode, 0, 300)
			h.limit.Store(0)
			c, r := sub(t, url, epoch)
			seqs, caught := streamed(t, c, ch, r)
			if caught["recovered"] != true {
				t.Fatalf("caught_up = %v", caught)
			}
			checkSeqs(t, seqs, 1, 600)
			if l := h.limit.Load(); l > 48 {
				t.Fatalf("a read asked for %d messages, want at most 16 x 3", l)
			}
		})
	})

	t.Run("OutrunsSteadyPublishing", func(t *testing.T) {
		forModes(t, func(t *testing.T, mode string) {
			// Every read takes 30 ms, the channel grows by 2 messages
			// every 4 ms tick (500 a second, a few hundred even on a
			// loaded box): 3 messages a read (at most 100 a second) never
			// catch up; pages of 48 (1600 a second) do.
			h, url, epoch := setup(t, mode, 30*time.Millisecond)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var published atomic.Int64
			published.Store(600)
			wg.Go(func() {
				tick := time.NewTicker(4 * time.Millisecond)
				defer tick.Stop()
				for i := 601; i <= 3000; i++ {
					if i%2 == 1 {
						select {
						case <-stop:
							return
						case <-tick.C:
						}
					}
					if _, err := h.Broker.Publish(context.Background(), ch, fmt.Appendf(nil, `"from":"w","data":{"i":%d}`, i)); err != nil {
						t.Error(err)
						return
					}
					published.Store(int64(i))
				}
			})
			defer wg.Wait()
			defer close(stop)
			c, r := sub(t, url, epoch)
			seqs, caught := streamed(t, c, ch, r)
			if caught["recovered"] != true {
				t.Fatalf("caught_up = %v", caught)
			}
			if p := published.Load(); p >= 3000 {
				t.Fatalf("caught_up only after publishing stopped (%d messages)", p)
			}
			checkSeqs(t, seqs, 1, seqs[len(seqs)-1])
		})
	})
}
