// Command docbackend runs the example document backend (package
// docbackend): it follows the change feed of "doc:*" on a JetStream or
// Redis Streams deployment, stores the edits in a file and serves
//
//	GET  /doc/{id}        the document's state at seq S
//	POST /proxy/publish   the publish-proxy hook (proxy.publish.url)
//
// on -listen, which must stay on a private network: the hook has no
// credential of its own.
//
//	docbackend -nats nats://127.0.0.1:4222 -store docs.json
//	docbackend -redis 127.0.0.1:6379 -store docs.json
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/syncgate/syncgate/examples/docbackend"
	"github.com/syncgate/syncgate/feed"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "docbackend:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8090", "HTTP address (documents and the publish hook)")
	storePath := flag.String("store", "docbackend.json", "file of the documents and the feed position")
	natsURL := flag.String("nats", "", "NATS URL of the jetstream broker (broker.jetstream.url)")
	redisAddrs := flag.String("redis", "", "comma-separated Redis addresses of the redis-streams broker")
	prefix := flag.String("prefix", "", "the broker's prefix (default sg for JetStream, sgs for Redis Streams)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	store, err := docbackend.OpenStore(*storePath)
	if err != nil {
		return err
	}
	b := &docbackend.Backend{Store: store, Log: log}
	var open docbackend.Opener
	switch {
	case *natsURL != "":
		nc, err := nats.Connect(*natsURL, nats.UserInfo(os.Getenv("NATS_USER"), os.Getenv("NATS_PASSWORD")))
		if err != nil {
			return err
		}
		defer nc.Close()
		open = func(ctx context.Context, r feed.Resume) (feed.Reader, error) {
			return feed.OpenJetStream(ctx, feed.JetStreamConfig{Conn: nc, Prefix: *prefix, Pattern: b.Pattern(), Log: log}, r)
		}
	case *redisAddrs != "":
		var cs []*goredis.Client
		for _, a := range strings.Split(*redisAddrs, ",") {
			c := goredis.NewClient(&goredis.Options{Addr: a, Password: os.Getenv("REDIS_PASSWORD")})
			defer c.Close()
			cs = append(cs, c)
		}
		open = func(ctx context.Context, r feed.Resume) (feed.Reader, error) {
			return feed.OpenRedisStream(ctx, feed.RedisStreamConfig{Clients: cs, Prefix: *prefix, Pattern: b.Pattern(), Log: log}, r)
		}
	default:
		return errors.New("set -nats or -redis")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{
		Addr: *listen, Handler: b.Handler(),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx, open, time.Second)
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("docbackend listening", "addr", *listen)
	err = srv.ListenAndServe()
	stop()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
