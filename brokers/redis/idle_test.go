package redis_test

import (
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestIdleChannelNewEpoch proves the "Idle channel" row of docs/brokers.md
// (redis): with history.ttl 1 s the history is gone a second after the
// last message while seq and epoch stay (a resume answers
// recovered:false: the missed messages are not there); the meta hash is
// kept 24 h after the last use (its PTTL, set by the publish script, is
// checked), and when Redis expires it (PEXPIRE 1 ms, which is what 24 h
// of idleness does) the next message is seq 1 in a new epoch, at the
// publisher and at a node subscribed all along.
func TestIdleChannelNewEpoch(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := testConfig(srv.Addr())
	cfg.HistoryTTL = time.Second // MetaTTL stays the default: 24 h
	bs, recs := startNodes(t, cfg, 2)
	a, sub, rec := bs[0], bs[1], recs[1]
	const ch = "idle"
	if err := sub.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	old := brokertest.PublishN(t, a, ch, 3, `"x"`)
	rec.WaitPublications(t, ch, 3, waitTimeout)
	meta, hist := "sg{"+ch+"}:m", "sg{"+ch+"}:h"
	srv.CheckPTTL(hist, time.Second)
	srv.CheckPTTL(meta, redis.DefaultMetaTTL)

	// history.ttl after the last message the history is gone; seq and
	// epoch are not.
	time.Sleep(time.Second)
	deadline := time.Now().Add(3 * time.Second)
	for srv.MustDo("EXISTS", hist) != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("history of a channel silent for 4 s with history.ttl 1 s still exists (PTTL %s)", srv.MustDo("PTTL", hist))
		}
		time.Sleep(50 * time.Millisecond)
	}
	pubs, latest, err := sub.Since(t.Context(), ch, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	// None of the 2 missed messages, at seq 3: the gateway's catch-up
	// (continues, gateway/catchup.go) then answers recovered:false.
	if latest != old || len(pubs) != 0 {
		t.Fatalf("Since(1) after history.ttl: %d publications at %+v, want none at %+v (seq and epoch stay)", len(pubs), latest, old)
	}
	srv.CheckPTTL(meta, redis.DefaultMetaTTL)

	// A read is a use: it gives the meta hash its 24 h again.
	srv.MustDo("PEXPIRE", meta, "60000")
	if _, _, err := sub.Since(t.Context(), ch, 0, 1); err != nil {
		t.Fatal(err)
	}
	srv.CheckPTTL(meta, redis.DefaultMetaTTL)

	// 24 h without use: Redis expires the meta hash.
	srv.MustDo("PEXPIRE", meta, "1")
	for srv.MustDo("EXISTS", meta) != "0" {
		time.Sleep(time.Millisecond)
	}
	pos, err := a.Publish(t.Context(), ch, []byte(`"y"`))
	if err != nil {
		t.Fatal(err)
	}
	brokertest.WaitNewEpoch(t, rec, ch, pos, `"y"`, time.Now(), waitTimeout)
	brokertest.CheckNewEpoch(t, sub, ch, old, pos)
}
