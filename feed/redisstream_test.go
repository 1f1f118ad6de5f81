package feed_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/feed"
	"github.com/syncgate/syncgate/internal/redistest"
)

// rsBroker starts a redis-streams broker on the given servers.
func rsBroker(t *testing.T, addrs ...string) *redisstream.Broker {
	t.Helper()
	b := redisstream.New(redisstream.Config{Addrs: addrs, Logger: redistest.Logger()})
	if err := b.Start(context.Background(), nopHandler{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func redisClients(t *testing.T, addrs ...string) []*goredis.Client {
	t.Helper()
	var cs []*goredis.Client
	for _, a := range addrs {
		c := goredis.NewClient(&goredis.Options{Addr: a})
		t.Cleanup(func() { _ = c.Close() })
		cs = append(cs, c)
	}
	return cs
}

func openRS(t *testing.T, cs []*goredis.Client, r feed.Resume) *feed.RedisStream {
	t.Helper()
	f, err := feed.OpenRedisStream(context.Background(), feed.RedisStreamConfig{
		Clients: cs, Pattern: "doc:*", Rescan: 100 * time.Millisecond, Poll: 50 * time.Millisecond,
	}, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// TestRedisStreamFeed: two sharded Redis servers; the feed finds the
// matching channels on both (including ones created after it opened),
// yields every publication per channel in seq order, drops other
// channels and hostile entries; a backend that restarts with its
// per-channel positions gets exactly what follows them.
func TestRedisStreamFeed(t *testing.T) {
	r1, r2 := redistest.Start(t, redistest.Options{}), redistest.Start(t, redistest.Options{})
	addrs := []string{r1.Addr(), r2.Addr()}
	b := rsBroker(t, addrs...)
	pub := func(ch string, data []byte) error { _, err := b.Publish(context.Background(), ch, data); return err }
	chs := []string{"doc:1", "doc:2", "doc:3", "doc:4", "doc:5", "doc:6"}
	publishMany(t, pub, append(chs[:3:3], "docs:x", "chat:1"), 1, 20)
	// Hostile entries, written by anyone with access to Redis.
	for _, args := range [][]string{
		{"XADD", "sgs{doc:9}:h", "1-0", "d", `"from":"x","data":1}` + "\n" + `{"op":"msg"`, "e", "e1"},
		{"XADD", "sgs{doc:9}:h", "2-0", "d", string(pubData("x", "1")), "e", "bad epoch"},
		{"XADD", "sgs{doc:9}:h", "3-0", "d", string(pubData("x", "1"))},
		{"XADD", "sgs{doc:9}:h", "4-1", "d", string(pubData("x", "1")), "e", "e1"},
	} {
		r1.MustDo(args...)
	}
	r1.MustDo("HSET", "sgs{doc:9}:m", "e", "e1", "s", "4")
	// A channel name no client may use (a newline in it).
	r1.MustDo("XADD", "sgs{doc:\n}:h", "1-0", "d", string(pubData("x", "1")), "e", "e1")
	r1.MustDo("HSET", "sgs{doc:\n}:m", "e", "e1", "s", "1")

	cs := redisClients(t, addrs...)
	f := openRS(t, cs, feed.Resume{})
	first := collect(t, f, 60)
	publishMany(t, pub, chs, 21, 5) // doc:4..6 appear after the feed opened
	pubs := append(first, collect(t, f, 6*5)...)
	none(t, f)
	count := checkOrder(t, pubs, nil)
	for _, ch := range chs {
		if want := map[bool]int{true: 25, false: 5}[ch <= "doc:3"]; count[ch] != want {
			t.Fatalf("%s: %d publications, want %d (%v)", ch, count[ch], want, count)
		}
	}
	if got := f.Rejected(); got != 4 {
		t.Fatalf("rejected %d, want 4", got)
	}
	// Both servers hold some of the channels (the test means sharding).
	if n1, n2 := r1.MustDo("DBSIZE"), r2.MustDo("DBSIZE"); n1 == "0" || n2 == "0" {
		t.Fatalf("keys per server %s, %s: not sharded", n1, n2)
	}

	// Restart: the backend persisted, per channel, the position of the
	// last publication it processed (here: the 40th of the feed).
	persisted := map[string]brokers.Position{}
	for _, p := range pubs[:40] {
		persisted[p.Ch] = brokers.Position{Seq: p.Seq, Epoch: p.Epoch}
	}
	_ = f.Close()
	if _, err := f.Next(context.Background()); !errors.Is(err, feed.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	publishMany(t, pub, chs, 26, 3) // while the backend is down
	g := openRS(t, cs, feed.Resume{Channel: func(ch string) (brokers.Position, bool) {
		p, ok := persisted[ch]
		return p, ok
	}})
	want := 6*3 + len(pubs) - 40
	rest := collect(t, g, want)
	none(t, g)
	from := map[string]uint64{}
	for _, ch := range chs {
		from[ch] = persisted[ch].Seq + 1 // 1 when nothing was persisted
	}
	checkOrder(t, rest, from)
}

// TestRedisStreamFeedEpoch: Redis loses its data (FLUSHALL) under a
// running feed; the channels start new epochs at seq 1, below the feed's
// cursors, and the feed still yields them from seq 1.
func TestRedisStreamFeedEpoch(t *testing.T) {
	r1 := redistest.Start(t, redistest.Options{})
	b := rsBroker(t, r1.Addr())
	pub := func(ch string, data []byte) error { _, err := b.Publish(context.Background(), ch, data); return err }
	chs := []string{"doc:1", "doc:2"}
	publishMany(t, pub, chs, 1, 10)
	f := openRS(t, redisClients(t, r1.Addr()), feed.Resume{})
	old := collect(t, f, 20)
	checkOrder(t, old, nil)
	r1.MustDo("FLUSHALL")
	publishMany(t, pub, chs, 1, 4)
	pubs := collect(t, f, 8)
	none(t, f)
	checkOrder(t, pubs, nil)
	was := map[string]string{}
	for _, p := range old {
		was[p.Ch] = p.Epoch
	}
	for _, p := range pubs {
		if p.Epoch == was[p.Ch] {
			t.Fatalf("%s: epoch %s did not change", p.Ch, p.Epoch)
		}
	}
}

// TestRedisStreamFeedManyChannels: more channels than one XREAD names
// (64): every channel is read, including after an idle pass.
func TestRedisStreamFeedManyChannels(t *testing.T) {
	r1 := redistest.Start(t, redistest.Options{})
	b := rsBroker(t, r1.Addr())
	pub := func(ch string, data []byte) error { _, err := b.Publish(context.Background(), ch, data); return err }
	var chs []string
	for i := range 150 {
		chs = append(chs, fmt.Sprintf("doc:%d", i))
	}
	publishMany(t, pub, chs, 1, 3)
	f := openRS(t, redisClients(t, r1.Addr()), feed.Resume{})
	count := checkOrder(t, collect(t, f, 450), nil)
	if len(count) != 150 {
		t.Fatalf("%d channels, want 150", len(count))
	}
	none(t, f)
	publishMany(t, pub, chs[149:], 4, 1)
	if p := collect(t, f, 1)[0]; p.Ch != chs[149] || p.Seq != 4 {
		t.Fatalf("after idle: %+v", p)
	}
}
