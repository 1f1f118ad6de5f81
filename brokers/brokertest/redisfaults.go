package brokertest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/redistest"
)

// RedisBroker is a Redis-backed broker (redis, redis-streams) as the checks
// below drive it: the contract, history and readiness.
type RedisBroker interface {
	brokers.Broker
	brokers.History
	brokers.Pinger
}

// The checks below tamper with the Redis server under a running node, as
// anyone with access to the server can; every Redis-backed backend runs
// them with a broker on the server at addr.

// RedisFlushedUnderNode: the server's scripts and keys are flushed under a
// running node (SCRIPT FLUSH, FLUSHALL, as anyone with access to the
// server can). The node keeps serving: readiness stays true only because
// Subscribe, Publish and Since work, and a channel subscribed before is
// delivered in a new epoch.
func RedisFlushedUnderNode(t *testing.T, newBroker func(addr string) RedisBroker) {
	srv := redistest.Start(t, redistest.Options{})
	b := newBroker(srv.Addr())
	rec := NewRecorder()
	if err := b.Start(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	const old = "doc:before"
	if err := b.Subscribe(ctx, old); err != nil {
		t.Fatal(err)
	}
	before, err := b.Publish(ctx, old, []byte("m1"))
	if err != nil {
		t.Fatal(err)
	}
	rec.WaitPublications(t, old, 1, 10*time.Second)
	srv.MustDo("SCRIPT", "FLUSH")
	srv.MustDo("FLUSHALL")
	if got := srv.MustDo("DBSIZE"); got != "0" {
		t.Fatalf("DBSIZE after FLUSHALL: %s", got)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	after, err := b.Publish(pctx, old, []byte("m2"))
	if err != nil {
		t.Fatalf("Publish after the flush: %v", err)
	}
	if after.Epoch == before.Epoch || brokers.IsProvisional(after.Epoch) || after.Seq != 1 {
		t.Fatalf("Publish after the flush: %+v; want seq 1 of a new real epoch (before %+v)", after, before)
	}
	got := rec.WaitPublications(t, old, 2, 10*time.Second)
	if string(got[1].Data) != "m2" || got[1].Epoch != after.Epoch {
		t.Fatalf("delivered %q in %q, want m2 in %q", got[1].Data, got[1].Epoch, after.Epoch)
	}
	if err := b.Subscribe(pctx, "doc:after"); err != nil {
		t.Fatalf("Subscribe after the flush: %v", err)
	}
	if _, _, err := b.Since(pctx, "doc:after", 0, 10); err != nil {
		t.Fatalf("Since after the flush: %v", err)
	}
	if err := b.Ping(pctx); err != nil {
		t.Fatalf("Ping after the flush: %v", err)
	}
}

// RedisReadOnlyUnderNode: the node's server becomes a read-only replica
// under it (REPLICAOF, as after a failover the node missed). It still
// answers PING, but refuses every script that may write, so the node can
// serve neither Publish nor Subscribe: readiness (Ping) must say so, and
// say ready again once the server takes writes.
func RedisReadOnlyUnderNode(t *testing.T, newBroker func(addr string) RedisBroker) {
	srv := redistest.Start(t, redistest.Options{})
	b := newBroker(srv.Addr())
	if err := b.Start(t.Context(), NewRecorder()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	waitPing := func(what string) {
		t.Helper()
		for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
			err := b.Ping(ctx)
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("Ping %s: %v", what, err)
			}
			time.Sleep(wait)
		}
	}
	waitPing("after Start")
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// A master that does not exist on loopback: the server stays a
	// read-only replica, trying to connect.
	srv.MustDo("REPLICAOF", "127.0.0.1", strconv.Itoa(port))
	if err := b.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded on a read-only replica")
	}
	srv.MustDo("REPLICAOF", "NO", "ONE")
	waitPing("after REPLICAOF NO ONE")
	if _, err := b.Publish(ctx, "doc:rw", []byte("1")); err != nil {
		t.Fatalf("Publish after REPLICAOF NO ONE: %v", err)
	}
}

// RedisSubscribeStoresNothing: subscribing to channels nobody publishes on,
// and reading their position as the gateway does, must not write to Redis
// (before, each created the channel's meta hash, kept for MetaTTL, 24 h by
// default: one key per channel name any anonymous client chose). The epoch
// handed out stays the same while the node is subscribed, and the node's
// first publication keeps it.
func RedisSubscribeStoresNothing(t *testing.T, newBroker func(addr string) RedisBroker) {
	srv := redistest.Start(t, redistest.Options{})
	b := newBroker(srv.Addr())
	if err := b.Start(t.Context(), NewRecorder()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	before := srv.MustDo("DBSIZE")
	const count = 200
	epochs := make([]string, count)
	for i := range count {
		ch := "empty:" + strconv.Itoa(i)
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		_, pos, err := b.Since(ctx, ch, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if pos.Seq != 0 || pos.Epoch == "" {
			t.Fatalf("empty channel %s: %+v, want seq 0 and an epoch", ch, pos)
		}
		epochs[i] = pos.Epoch
	}
	if after := srv.MustDo("DBSIZE"); after != before {
		t.Fatalf("after %d subscribes to empty channels Redis holds %s keys, before %s", count, after, before)
	}
	const ch = "empty:0"
	_, again, err := b.Since(ctx, ch, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if again.Epoch != epochs[0] {
		t.Fatalf("second Since: epoch %q, want %q", again.Epoch, epochs[0])
	}
	pos, err := b.Publish(ctx, ch, []byte("first"))
	if err != nil {
		t.Fatal(err)
	}
	if pos.Seq != 1 || pos.Epoch != epochs[0] {
		t.Fatalf("first Publish: %+v, want seq 1 in %q", pos, epochs[0])
	}
}
