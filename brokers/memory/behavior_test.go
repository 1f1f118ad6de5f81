package memory_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/memory"
)

// start starts a memory broker with a Recorder and closes it at cleanup.
func start(t *testing.T, cfg memory.Config) (*memory.Broker, *brokertest.Recorder) {
	t.Helper()
	b := memory.New(cfg)
	rec := brokertest.NewRecorder()
	if err := b.Start(context.Background(), rec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		rec.MarkClosed()
		if err := rec.Err(); err != nil {
			t.Error(err)
		}
	})
	return b, rec
}

func mustPublish(t *testing.T, b *memory.Broker, ch, data string) brokers.Position {
	t.Helper()
	pos, err := b.Publish(context.Background(), ch, []byte(data))
	if err != nil {
		t.Fatalf("Publish(%s): %v", ch, err)
	}
	return pos
}

func mustSince(t *testing.T, b *memory.Broker, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position) {
	t.Helper()
	pubs, pos, err := b.Since(context.Background(), ch, since, limit)
	if err != nil {
		t.Fatalf("Since(%s): %v", ch, err)
	}
	return pubs, pos
}

func seqs(pubs []brokers.Publication) []uint64 {
	s := make([]uint64, len(pubs))
	for i, p := range pubs {
		s[i] = p.Seq
	}
	return s
}

func TestStartErrors(t *testing.T) {
	ctx := context.Background()
	b := memory.New(memory.Config{})
	if err := b.Start(ctx, nil); err == nil {
		t.Error("Start with a nil handler succeeded")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Start(canceled, brokertest.NewRecorder()); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a canceled context: %v, want context.Canceled", err)
	}
	if err := b.Ping(ctx); !errors.Is(err, brokers.ErrClosed) {
		t.Errorf("Ping before Start: %v, want brokers.ErrClosed", err)
	}
	if err := b.Start(ctx, brokertest.NewRecorder()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := b.Start(ctx, brokertest.NewRecorder()); err == nil || errors.Is(err, brokers.ErrClosed) {
		t.Errorf("second Start: %v, want an 'already started' error", err)
	}
	if _, err := b.Publish(canceled, "a", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish with a canceled context: %v, want context.Canceled", err)
	}
	if err := b.Join(ctx, "a", brokers.Member{Client: "c"}, 0); err == nil {
		t.Error("Join with TTL 0 succeeded")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := memory.New(memory.Config{}).Close(); err != nil {
		t.Errorf("Close of a broker never started: %v", err)
	}
}

func TestDefaultHistorySize(t *testing.T) {
	b, _ := start(t, memory.Config{})
	for i := range memory.DefaultHistorySize + 3 {
		mustPublish(t, b, "a", fmt.Sprint(i+1))
	}
	pubs, pos := mustSince(t, b, "a", 0, 2*memory.DefaultHistorySize)
	if len(pubs) != memory.DefaultHistorySize || pubs[0].Seq != 4 || pos.Seq != memory.DefaultHistorySize+3 {
		t.Errorf("got %d publications from seq %d, latest %d; want %d from 4, latest %d",
			len(pubs), pubs[0].Seq, pos.Seq, memory.DefaultHistorySize, memory.DefaultHistorySize+3)
	}
}

// TestSinceDataOutlivesRing: data returned by Since stays intact after the
// ring slots it came from are overwritten (stored copies are never reused).
func TestSinceDataOutlivesRing(t *testing.T) {
	b, _ := start(t, memory.Config{HistorySize: 4})
	for i := 1; i <= 4; i++ {
		mustPublish(t, b, "a", fmt.Sprintf("old%d", i))
	}
	old, _ := mustSince(t, b, "a", 0, 10)
	for i := 5; i <= 12; i++ {
		mustPublish(t, b, "a", fmt.Sprintf("new%d", i))
	}
	for i, p := range old {
		if want := fmt.Sprintf("old%d", i+1); string(p.Data) != want {
			t.Errorf("publication %d changed to %q, want %q", i, p.Data, want)
		}
	}
	now, _ := mustSince(t, b, "a", 0, 10)
	if got := seqs(now); !slices.Equal(got, []uint64{9, 10, 11, 12}) {
		t.Errorf("history seqs %v, want 9..12", got)
	}
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestHistoryTTL: publications older than HistoryTTL leave history; the seq
// and epoch go on. The channel is subscribed so it is never forgotten.
func TestHistoryTTL(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	b, _ := start(t, memory.Config{HistoryTTL: time.Minute, Now: clock.Now})
	if err := b.Subscribe(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	first := mustPublish(t, b, "a", "1")
	mustPublish(t, b, "a", "2")
	clock.Advance(30 * time.Second)
	mustPublish(t, b, "a", "3")
	clock.Advance(31 * time.Second) // 1 and 2 are 61s old, 3 is 31s old

	pubs, pos := mustSince(t, b, "a", 0, 10)
	if got := seqs(pubs); !slices.Equal(got, []uint64{3}) || pos != (brokers.Position{Seq: 3, Epoch: first.Epoch}) {
		t.Errorf("history %v at %+v, want [3] at seq 3 epoch %q", got, pos, first.Epoch)
	}
	clock.Advance(30 * time.Second)
	pubs, pos = mustSince(t, b, "a", 0, 10)
	if len(pubs) != 0 || pos.Seq != 3 || pos.Epoch != first.Epoch {
		t.Errorf("history %v at %+v, want empty at seq 3 epoch %q", seqs(pubs), pos, first.Epoch)
	}
	if next := mustPublish(t, b, "a", "4"); next.Seq != 4 || next.Epoch != first.Epoch {
		t.Errorf("Publish after history expired: %+v, want seq 4 epoch %q", next, first.Epoch)
	}
}

// TestForgetIdleChannels: a channel with no publication for HistoryTTL, no
// subscription and no member is forgotten: its next publication starts a
// new epoch at seq 1. A subscribed channel, or one with a member, is kept.
func TestForgetIdleChannels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b, _ := start(t, memory.Config{HistoryTTL: time.Minute})
		idle := mustPublish(t, b, "idle", "1")
		sub := mustPublish(t, b, "subscribed", "1")
		if err := b.Subscribe(ctx, "subscribed"); err != nil {
			t.Fatal(err)
		}
		present := mustPublish(t, b, "present", "1")
		if err := b.Join(ctx, "present", brokers.Member{User: "u", Client: "c"}, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
		_, never := mustSince(t, b, "looked-at", 0, 10) // Since creates the epoch too

		time.Sleep(59 * time.Second)
		synctest.Wait()
		if _, pos := mustSince(t, b, "idle", 0, 10); pos != idle {
			t.Fatalf("after 59s: %+v, want %+v", pos, idle)
		}
		time.Sleep(2 * time.Second) // > HistoryTTL plus a sweep interval
		synctest.Wait()

		if pos := mustPublish(t, b, "idle", "again"); pos.Seq != 1 || pos.Epoch == idle.Epoch {
			t.Errorf("idle channel after HistoryTTL: %+v, want seq 1 and an epoch other than %q", pos, idle.Epoch)
		}
		if _, pos := mustSince(t, b, "looked-at", 0, 10); pos.Epoch == never.Epoch {
			t.Errorf("channel only looked at kept epoch %q after HistoryTTL", pos.Epoch)
		}
		if pos := mustPublish(t, b, "subscribed", "2"); pos.Seq != 2 || pos.Epoch != sub.Epoch {
			t.Errorf("subscribed channel: %+v, want seq 2 epoch %q", pos, sub.Epoch)
		}
		if pos := mustPublish(t, b, "present", "2"); pos.Seq != 2 || pos.Epoch != present.Epoch {
			t.Errorf("channel with a member: %+v, want seq 2 epoch %q", pos, present.Epoch)
		}
	})
}

// TestPresenceExpiry, on a fake clock: a member expires at its TTL, within a
// sweep interval, with one Leave; Refresh and a second Join push expiry
// back; refreshing an expired member does not bring it back.
func TestPresenceExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b, rec := start(t, memory.Config{})
		if err := b.Subscribe(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		short := brokers.Member{User: "u1", Client: "c1"}
		refreshed := brokers.Member{User: "u2", Client: "c2"}
		rejoined := brokers.Member{User: "u3", Client: "c3"}
		const ttl = 30 * time.Second
		for _, m := range []brokers.Member{short, refreshed, rejoined} {
			if err := b.Join(ctx, "a", m, ttl); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Second)
		if err := b.Refresh(ctx, "a", []brokers.Member{refreshed}, ttl); err != nil {
			t.Fatal(err)
		}
		if err := b.Join(ctx, "a", rejoined, ttl); err != nil {
			t.Fatal(err)
		}
		time.Sleep(9 * time.Second) // t=29s: nobody expired yet
		synctest.Wait()
		if leaves := presenceOf(rec, brokers.Leave); len(leaves) != 0 {
			t.Fatalf("at 29s of a 30s TTL: Leave of %v", leaves)
		}
		time.Sleep(2 * time.Second) // t=31s: short expired, swept within 1s
		synctest.Wait()
		if leaves := presenceOf(rec, brokers.Leave); !slices.Equal(leaves, []brokers.Member{short}) {
			t.Fatalf("at 31s: Leave of %v, want %v", leaves, short)
		}
		ms, err := b.Members(ctx, "a")
		if err != nil || !slices.Equal(ms, []brokers.Member{refreshed, rejoined}) {
			t.Fatalf("Members = %v, %v; want %v sorted by client", ms, err, []brokers.Member{refreshed, rejoined})
		}
		// Refreshing a member that has expired and left does not re-add it.
		if err := b.Refresh(ctx, "a", []brokers.Member{short}, ttl); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Second) // t=51s: the other two expired at 50s
		synctest.Wait()
		if leaves := presenceOf(rec, brokers.Leave); len(leaves) != 3 {
			t.Fatalf("at 51s: Leave of %v, want all three once", leaves)
		}
		if joins := presenceOf(rec, brokers.Join); len(joins) != 3 {
			t.Fatalf("Join of %v, want each member once (a second Join only refreshes)", joins)
		}
		if ms, err := b.Members(ctx, "a"); err != nil || len(ms) != 0 {
			t.Fatalf("Members = %v, %v; want none", ms, err)
		}
	})
}

func presenceOf(rec *brokertest.Recorder, typ brokers.PresenceEventType) []brokers.Member {
	var ms []brokers.Member
	for _, e := range rec.Presence("a") {
		if e.Presence == typ {
			ms = append(ms, e.Member)
		}
	}
	return ms
}

// TestMembersHidesExpired: Members leaves out a member whose TTL ran out
// even before the sweeper removes it.
func TestMembersHidesExpired(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	b, _ := start(t, memory.Config{Now: clock.Now})
	ctx := context.Background()
	if err := b.Join(ctx, "a", brokers.Member{User: "u", Client: "c"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if ms, err := b.Members(ctx, "a"); err != nil || len(ms) != 0 {
		t.Errorf("Members = %v, %v; want none", ms, err)
	}
}

// blockingHandler blocks in HandlePublication until release is closed.
type blockingHandler struct {
	entered chan struct{}
	release chan struct{}
}

func (h *blockingHandler) HandlePublication(string, brokers.Publication) {
	close(h.entered)
	<-h.release
}

func (h *blockingHandler) HandlePresence(string, brokers.PresenceEventType, brokers.Member) {}

// TestCloseWaitsForDelivery: Close does not return while a handler call is
// running.
func TestCloseWaitsForDelivery(t *testing.T) {
	ctx := context.Background()
	h := &blockingHandler{entered: make(chan struct{}), release: make(chan struct{})}
	b := memory.New(memory.Config{})
	if err := b.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := b.Subscribe(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() {
		_, err := b.Publish(ctx, "a", []byte("x"))
		published <- err
	}()
	<-h.entered
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	// Close must wait. A correct broker never returns here; a broken one
	// returns at once, which this window catches.
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while the handler was running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(h.release)
	if err := <-published; err != nil {
		t.Errorf("Publish: %v", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := b.Publish(ctx, "a", []byte("y")); !errors.Is(err, brokers.ErrClosed) {
		t.Errorf("Publish after Close: %v, want brokers.ErrClosed", err)
	}
}

// TestPublishWhileForgetting races publishers with a sweeper that forgets
// channels as fast as it can (1ns TTL, 10ms sweeps): in every epoch a
// channel has, Publish returns seqs 1, 2, 3... without gap or duplicate.
func TestPublishWhileForgetting(t *testing.T) {
	b, _ := start(t, memory.Config{HistoryTTL: time.Nanosecond})
	ctx := context.Background()
	var mu sync.Mutex
	byEpoch := make(map[string][]uint64)
	var wg sync.WaitGroup
	deadline := time.Now().Add(300 * time.Millisecond)
	for g := range 8 {
		wg.Go(func() {
			ch := fmt.Sprintf("ch%d", g%2)
			for time.Now().Before(deadline) {
				pos, err := b.Publish(ctx, ch, []byte("x"))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				byEpoch[ch+"/"+pos.Epoch] = append(byEpoch[ch+"/"+pos.Epoch], pos.Seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for key, ss := range byEpoch {
		slices.Sort(ss)
		for i, s := range ss {
			if s != uint64(i+1) {
				t.Fatalf("%s: seqs %v...: want 1..%d without gap or duplicate", key, ss[:min(len(ss), i+3)], len(ss))
			}
		}
	}
	if len(byEpoch) <= 2 {
		t.Errorf("%d epochs over 2 channels: the sweeper never forgot a channel, the race was not exercised", len(byEpoch))
	}
}
