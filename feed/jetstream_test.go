package feed_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/feed"
	"github.com/syncgate/syncgate/internal/natstest"
)

// jsBroker starts a jetstream broker on srv (memory storage).
func jsBroker(t *testing.T, srv *natstest.Server) *jetstream.Broker {
	t.Helper()
	b := jetstream.New(jetstream.Config{URL: srv.URL(), Storage: jetstream.MemoryStorage})
	if err := b.Start(context.Background(), nopHandler{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func natsConn(t *testing.T, srv *natstest.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func openJS(t *testing.T, nc *nats.Conn, pattern string, r feed.Resume) *feed.JetStream {
	t.Helper()
	f, err := feed.OpenJetStream(context.Background(), feed.JetStreamConfig{Conn: nc, Pattern: pattern}, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// publishMany publishes n publications on each of chs from concurrent
// publishers (one per channel: per-channel order is the publisher's).
func publishMany(t *testing.T, pub func(ch string, data []byte) error, chs []string, from, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, ch := range chs {
		wg.Go(func() {
			for i := from; i < from+n; i++ {
				if err := pub(ch, pubData("u", fmt.Sprintf(`{"ch":%q,"i":%d}`, ch, i))); err != nil {
					t.Errorf("publish %s: %v", ch, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestJetStreamFeed: the feed yields every publication of the matching
// channels, per channel in seq order with one epoch, the data as
// published; other channels and hostile entries are dropped (counted).
func TestJetStreamFeed(t *testing.T) {
	srv := natstest.RunServer(t)
	b := jsBroker(t, srv)
	nc := natsConn(t, srv)
	pub := func(ch string, data []byte) error { _, err := b.Publish(context.Background(), ch, data); return err }
	const n = 40
	publishMany(t, pub, []string{"doc:1", "doc:2", "docs:3", "chat:1"}, 1, n)
	// Hostile entries written straight into the stream by anyone with
	// write access to it: no seq, a forged payload, a bad epoch, a
	// channel name no client may use.
	js := natstest.JetStream(t, srv.URL())
	for _, m := range []*nats.Msg{
		{Subject: "sg.h.doc:9", Data: pubData("x", "1")},
		{Subject: "sg.h.doc:9", Header: nats.Header{"Sg-Seq": {"99"}, "Sg-Epoch": {"e"}}, Data: []byte(`"from":"x","data":1}` + "\n" + `{"op":"msg"`)},
		{Subject: "sg.h.doc:9", Header: nats.Header{"Sg-Seq": {"99"}, "Sg-Epoch": {"a b"}}, Data: pubData("x", "1")},
		{Subject: "sg.h.doc:~0A", Header: nats.Header{"Sg-Seq": {"1"}, "Sg-Epoch": {"e"}}, Data: pubData("x", "1")},
	} {
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	publishMany(t, pub, []string{"doc:1"}, n+1, 1)

	f := openJS(t, nc, "doc:*", feed.Resume{})
	pubs := collect(t, f, 2*n+1)
	count := checkOrder(t, pubs, nil)
	if count["doc:1"] != n+1 || count["doc:2"] != n {
		t.Fatalf("got %v publications per channel, want doc:1 %d, doc:2 %d", count, n+1, n)
	}
	for _, p := range pubs {
		if want := fmt.Sprintf(`{"ch":%q,"i":%d}`, p.Ch, p.Seq); string(p.Data) != want || p.From != "u" || p.Token == "" {
			t.Fatalf("got %+v, want data %s from u and a token", p, want)
		}
	}
	none(t, f)
	if got := f.Rejected(); got != 4 {
		t.Fatalf("rejected %d entries, want 4", got)
	}

	// One channel, no '*': the consumer filters on its subject.
	one := openJS(t, nc, "doc:2", feed.Resume{})
	if c := checkOrder(t, collect(t, one, n), nil); c["doc:2"] != n {
		t.Fatalf("got %v", c)
	}
}

// TestJetStreamFeedResume: a backend that persisted the token of the
// k-th publication and restarts gets everything after it, including what
// was published while it was down, and nothing before.
func TestJetStreamFeedResume(t *testing.T) {
	srv := natstest.RunServer(t)
	b := jsBroker(t, srv)
	nc := natsConn(t, srv)
	pub := func(ch string, data []byte) error { _, err := b.Publish(context.Background(), ch, data); return err }
	chs := []string{"doc:a", "doc:b", "doc:c"}
	publishMany(t, pub, chs, 1, 20)

	f := openJS(t, nc, "doc:*", feed.Resume{})
	first := collect(t, f, 25)
	persisted := first[24] // the backend persisted up to here, then died
	_ = f.Close()
	if _, err := f.Next(context.Background()); !errors.Is(err, feed.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	publishMany(t, pub, chs, 21, 10)

	g := openJS(t, nc, "doc:*", feed.Resume{After: persisted.Token})
	rest := collect(t, g, 3*30-25)
	none(t, g)
	checkOrder(t, append(first, rest...), nil) // contiguous: nothing missed, nothing twice
	if rest[0].Token <= persisted.Token && len(rest[0].Token) == len(persisted.Token) {
		t.Fatalf("resumed at %s after %s", rest[0].Token, persisted.Token)
	}

	if _, err := feed.OpenJetStream(context.Background(), feed.JetStreamConfig{Conn: nc, Pattern: "doc:*"}, feed.Resume{After: "js.1.x"}); !errors.Is(err, feed.ErrToken) {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := feed.OpenJetStream(context.Background(), feed.JetStreamConfig{Conn: nc}, feed.Resume{}); !errors.Is(err, feed.ErrConfig) {
		t.Fatalf("no pattern: %v", err)
	}
}

// TestJetStreamFeedStreamRecreated: the history stream is deleted (its
// history lost) and the broker creates it anew; a token from the old
// stream starts the feed at the new stream's beginning, where the
// channel has a new epoch from seq 1.
func TestJetStreamFeedStreamRecreated(t *testing.T) {
	srv := natstest.RunServer(t)
	b := jsBroker(t, srv)
	nc := natsConn(t, srv)
	pub := func(ch string, data []byte) error { _, err := b.Publish(context.Background(), ch, data); return err }
	publishMany(t, pub, []string{"doc:1"}, 1, 5)
	old := collect(t, openJS(t, nc, "doc:*", feed.Resume{}), 5)

	natstest.DeleteStreams(t, srv.URL(), "SG_HISTORY")
	publishMany(t, pub, []string{"doc:1"}, 6, 3) // held in the outbox until the stream is back
	f := openJSWhenBack(t, nc, feed.Resume{After: old[4].Token})
	pubs := collect(t, f, 3)
	checkOrder(t, pubs, nil)
	if pubs[0].Epoch == old[0].Epoch {
		t.Fatalf("epoch %s did not change", pubs[0].Epoch)
	}
}

// openJSWhenBack opens a feed once the history stream exists again.
func openJSWhenBack(t *testing.T, nc *nats.Conn, r feed.Resume) *feed.JetStream {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		f, err := feed.OpenJetStream(context.Background(), feed.JetStreamConfig{Conn: nc, Pattern: "doc:*"}, r)
		if err == nil {
			t.Cleanup(func() { _ = f.Close() })
			return f
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
