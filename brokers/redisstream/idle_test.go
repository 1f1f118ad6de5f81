package redisstream_test

import (
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestIdleChannelNewEpoch proves the "Idle channel" row of docs/brokers.md
// (redis-streams). The meta hash is kept 24 h after the last use (its
// PTTL, set by the publish script, is checked); when Redis expires it
// (PEXPIRE 1 ms, which is what 24 h of idleness does) the next message is
// seq 1 in a new epoch at the publisher, and a node subscribed all along
// delivers it within 5 s. That node's cursor is past seq 1, so only its
// periodic check of the channel's epoch finds the new one: the publication
// lands just after that check ran (the first, when the channel was
// subscribed), the worst case for the bound, with the default check
// interval and read timeout. Then, published by a node with history.ttl
// 1 s, the stream is gone a second after the last message while seq and
// epoch stay: a resume gets no message (the gateway answers
// recovered:false). (The first part keeps the default history.ttl: the
// subscribed node reads the new epoch's message from the stream, which
// must still hold it.)
func TestIdleChannelNewEpoch(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := testConfig(srv.Addr())
	// MetaTTL and HistoryTTL stay the defaults (24 h, 10 min).
	cfg.Block = redisstream.DefaultBlock
	cfg.ValidateInterval = redisstream.DefaultValidateInterval
	start := func(cfg redisstream.Config) (*redisstream.Broker, *brokertest.Recorder) {
		return brokertest.Started(t, redisstream.New(cfg))
	}
	a, _ := start(cfg)
	sub, rec := start(cfg)
	const ch = "idle"
	if err := sub.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	old := brokertest.PublishN(t, a, ch, 3, `"x"`)
	rec.WaitPublications(t, ch, 3, 5*time.Second)
	meta, hist := "sgs{"+ch+"}:m", "sgs{"+ch+"}:h"
	srv.CheckPTTL(hist, redisstream.DefaultHistoryTTL)
	srv.CheckPTTL(meta, redisstream.DefaultMetaTTL)

	// A read is a use: it gives the meta hash its 24 h again.
	srv.MustDo("PEXPIRE", meta, "60000")
	if _, _, err := sub.Since(t.Context(), ch, 0, 1); err != nil {
		t.Fatal(err)
	}
	srv.CheckPTTL(meta, redisstream.DefaultMetaTTL)

	// 24 h without use: Redis expires the meta hash.
	srv.MustDo("PEXPIRE", meta, "1")
	for srv.MustDo("EXISTS", meta) != "0" {
		time.Sleep(time.Millisecond)
	}
	published := time.Now()
	pos, err := a.Publish(t.Context(), ch, []byte(`"y"`))
	if err != nil {
		t.Fatal(err)
	}
	// Within 5 s, plus up to 0.5 s for the check's and the read's round
	// trips and Redis ending a blocked read late (it does on its 10 Hz
	// timer): measured 5.03-5.10 s. Before the tailer's read was cut at the
	// next check it came up to a read timeout (2 s) late: 6 s here.
	const within = 5*time.Second + 500*time.Millisecond
	took := brokertest.WaitNewEpoch(t, rec, ch, pos, `"y"`, published, within)
	t.Logf("subscribed node delivered the new epoch %v after the publish", took)
	brokertest.CheckNewEpoch(t, sub, ch, old, pos)

	// history.ttl after the last message the stream is gone; seq and epoch
	// are not.
	short := cfg
	short.HistoryTTL = time.Second
	b, _ := start(short)
	for range 2 {
		if old, err = b.Publish(t.Context(), ch, []byte(`"z"`)); err != nil {
			t.Fatal(err)
		}
	}
	srv.CheckPTTL(hist, short.HistoryTTL)
	time.Sleep(short.HistoryTTL)
	deadline := time.Now().Add(3 * time.Second)
	for srv.MustDo("EXISTS", hist) != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("stream of a channel silent for 4 s with history.ttl 1 s still exists (PTTL %s)", srv.MustDo("PTTL", hist))
		}
		time.Sleep(50 * time.Millisecond)
	}
	pubs, latest, err := sub.Since(t.Context(), ch, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	// None of the 2 missed messages, at seq 3: the gateway's catch-up
	// (continues, gateway/catchup.go) then answers recovered:false.
	if latest != old || old.Seq != 3 || len(pubs) != 0 {
		t.Fatalf("Since(1) after history.ttl: %d publications at %+v, want none at %+v, seq 3 (seq and epoch stay)", len(pubs), latest, old)
	}
	srv.CheckPTTL(meta, redisstream.DefaultMetaTTL)
}
