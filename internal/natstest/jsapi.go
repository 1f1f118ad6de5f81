package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

// JetStream connects a second client to the server at url, as anyone with
// access to it can, and returns its JetStream API; the connection is
// closed when the test ends.
func JetStream(t testing.TB, url string) natsjs.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// DeleteStreams deletes the named streams through JetStream(t, url).
func DeleteStreams(t testing.TB, url string, names ...string) {
	t.Helper()
	js := JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range names {
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Fatalf("delete stream %s: %v", name, err)
		}
	}
}
