package feed_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"sync"
	"testing"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/feed"
	"github.com/syncgate/syncgate/internal/gwtest"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestFeedGateways: publications made by WebSocket clients on two
// gateways sharing a log backend end up in the feed, in order per
// channel, with the seq and epoch the clients were acked; a binary
// publication comes with its bytes and Binary set.
func TestFeedGateways(t *testing.T) {
	t.Run("jetstream", func(t *testing.T) {
		srv := natstest.RunServer(t)
		newBroker := func() brokers.Broker { return jetstream.New(jetstream.Config{URL: srv.URL()}) }
		nc := natsConn(t, srv)
		feedGateways(t, newBroker, func() feed.Reader { return openJS(t, nc, "doc:*", feed.Resume{}) })
	})
	t.Run("redis-streams", func(t *testing.T) {
		r1, r2 := redistest.Start(t, redistest.Options{}), redistest.Start(t, redistest.Options{})
		addrs := []string{r1.Addr(), r2.Addr()}
		newBroker := func() brokers.Broker {
			return redisstream.New(redisstream.Config{Addrs: addrs, Logger: redistest.Logger()})
		}
		cs := redisClients(t, addrs...)
		feedGateways(t, newBroker, func() feed.Reader { return openRS(t, cs, feed.Resume{}) })
	})
}

func feedGateways(t *testing.T, newBroker func() brokers.Broker, open func() feed.Reader) {
	n1, n2 := gwtest.Start(t, newBroker(), nil), gwtest.Start(t, newBroker(), nil)
	c1, c2 := n1.Dial(t, "ann"), n2.Dial(t, "bob")
	chs := []string{"doc:gw1", "doc:gw2", "doc:gw3"}
	const each = 10
	acks := map[string]string{} // "ch/seq" -> epoch
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, c := range []*wstest.Client{c1, c2} {
		wg.Go(func() {
			for j := range each {
				for _, ch := range chs {
					ack := c.Pub(ch, map[string]any{"node": i, "j": j})
					mu.Lock()
					acks[fmt.Sprintf("%s/%d", ch, ack.Num("seq"))] = ack.Str("epoch")
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	c1.Pub("chat:1", "not a document")
	bin := []byte{0, '\n', 0xff, '"'}
	c2.MustCall("pub", map[string]any{"ch": "doc:bin", "bin": base64.StdEncoding.EncodeToString(bin)}, "ack")
	f := open()
	pubs := collect(t, f, 2*each*len(chs)+1)
	none(t, f)
	count := checkOrder(t, pubs, nil)
	var binary []feed.Publication
	for _, p := range pubs {
		if p.Ch == "doc:bin" || p.Binary {
			binary = append(binary, p)
		}
	}
	if len(binary) != 1 || !binary[0].Binary || !bytes.Equal(binary[0].Data, bin) || binary[0].From != "bob" {
		t.Fatalf("binary publications in the feed: %+v, want one with %q", binary, bin)
	}
	for _, p := range pubs {
		if p.Ch == "doc:bin" {
			continue
		}
		if e, ok := acks[fmt.Sprintf("%s/%d", p.Ch, p.Seq)]; !ok || e != p.Epoch || (p.From != "ann" && p.From != "bob") {
			t.Fatalf("feed %+v does not match the acks %v", p, acks)
		}
	}
	for _, ch := range chs {
		if count[ch] != 2*each {
			t.Fatalf("%v publications per channel, want %d each", count, 2*each)
		}
	}
}
