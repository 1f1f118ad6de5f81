package feed_test

import (
	"context"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/feed"
	"github.com/syncgate/syncgate/internal/natstest"
)

// A backend follows the documents' channels on a JetStream deployment,
// persisting each publication's token so that it resumes after a
// restart.
func Example() {
	dir, _ := os.MkdirTemp("", "feed-example")
	defer os.RemoveAll(dir)
	srv, err := natstest.Start(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown()
	// Two publications through a node's broker (clients' pubs do the same).
	b := jetstream.New(jetstream.Config{URL: srv.URL()})
	_ = b.Start(context.Background(), nopHandler{})
	defer b.Close()
	_, _ = b.Publish(context.Background(), "doc:1", []byte(`"from":"ann","data":{"set":{"title":"Hi"}}`))
	_, _ = b.Publish(context.Background(), "chat:1", []byte(`"from":"bob","data":"hello"`))

	nc, err := nats.Connect(srv.URL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	var persisted string // a real backend reads it from its database
	f, err := feed.OpenJetStream(context.Background(), feed.JetStreamConfig{Conn: nc, Pattern: "doc:*"}, feed.Resume{After: persisted})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	p, err := f.Next(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	// Apply p and persist p.Token with it, in one transaction.
	persisted = p.Token
	fmt.Println(p.Ch, p.Seq, p.From, string(p.Data), persisted != "")
	// Output: doc:1 1 ann {"set":{"title":"Hi"}} true
}
