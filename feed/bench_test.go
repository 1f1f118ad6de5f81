package feed_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/feed"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
)

// benchFeed measures reading b.N publications (stored beforehand over
// 16 channels, 100-byte edits) through a feed.
func benchFeed(b *testing.B, br brokers.Broker, open func() feed.Reader) {
	if err := br.Start(context.Background(), nopHandler{}); err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	data := pubData("u", fmt.Sprintf(`{"set":{"text":"%080d"}}`, 0))
	for i := range b.N {
		if _, err := br.Publish(context.Background(), fmt.Sprintf("doc:%d", i%16), data); err != nil {
			b.Fatal(err)
		}
	}
	f := open()
	defer f.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := f.Next(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFeedJetStream(b *testing.B) {
	srv := natstest.RunServer(b)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	br := jetstream.New(jetstream.Config{URL: srv.URL(), Storage: jetstream.MemoryStorage, HistorySize: 1 << 20})
	benchFeed(b, br, func() feed.Reader {
		f, err := feed.OpenJetStream(context.Background(), feed.JetStreamConfig{Conn: nc, Pattern: "doc:*"}, feed.Resume{})
		if err != nil {
			b.Fatal(err)
		}
		return f
	})
}

func BenchmarkFeedRedisStream(b *testing.B) {
	r := redistest.Start(b, redistest.Options{})
	c := goredis.NewClient(&goredis.Options{Addr: r.Addr()})
	defer c.Close()
	br := redisstream.New(redisstream.Config{Addrs: []string{r.Addr()}, HistorySize: 1 << 20, Logger: redistest.Logger()})
	benchFeed(b, br, func() feed.Reader {
		f, err := feed.OpenRedisStream(context.Background(), feed.RedisStreamConfig{Clients: []*goredis.Client{c}, Pattern: "doc:*"}, feed.Resume{})
		if err != nil {
			b.Fatal(err)
		}
		return f
	})
}
