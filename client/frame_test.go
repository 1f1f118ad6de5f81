package client_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/client"
	"github.com/syncgate/syncgate/internal/wstest"
)

// batchingServer serves on loopback a WebSocket endpoint that answers the
// `sub` of doc:1 with ONE text frame holding the `subscribed` reply and
// three publications, separated by "\n", "\r\n" and "\n  \t" (PROTOCOL.md:
// any JSON whitespace between objects), and every other command with a
// plain one-object frame. It returns the ws:// URL and a function that
// reports how many connections it has had.
func batchingServer(t *testing.T) (url string, conns func() int) {
	t.Helper()
	return wstest.ScriptedServer(t, "b-1", func(ch string, _ int) string {
		if ch != "doc:1" {
			return ""
		}
		return "\n" + `{"op":"msg","ch":"doc:1","seq":1,"epoch":"e1","from":"u","data":{"n":1}}` +
			"\r\n" + `{"op":"msg","ch":"doc:1","seq":2,"epoch":"e1","from":"u","data":{"n":2}}` +
			"\n  \t" + `{"op":"msg","ch":"doc:1","seq":3,"epoch":"e1","from":"u","data":{"n":3}}` + "\n"
	})
}

// A frame of several objects (docs/protocol.md: clients must accept them)
// is split by the Go client into each of its messages, in order, over a
// real WebSocket: the subscribe succeeds from the first object, the three
// publications that follow it in the same frame are all delivered with
// their seq and data, and the connection is kept (no protocol error, no
// reconnect).
func TestFrameOfSeveralObjects(t *testing.T) {
	url, conns := batchingServer(t)
	var mu sync.Mutex
	var stateErrs []error
	c := dial(t, url, client.Options{OnState: func(s client.State, err error) {
		if s == client.StateReconnecting {
			mu.Lock()
			stateErrs = append(stateErrs, err)
			mu.Unlock()
		}
	}})
	s := subscribe(t, c, "doc:1")
	for want := uint64(1); want <= 3; want++ {
		e := nextOf(t, s, client.Message)
		if e.Seq != want || e.Epoch != "e1" || e.From != "u" {
			t.Fatalf("message %d: got seq %d epoch %q from %q", want, e.Seq, e.Epoch, e.From)
		}
		if got, wantData := string(e.Data), fmt.Sprintf(`{"n":%d}`, want); got != wantData {
			t.Fatalf("message %d: data %s, want %s", want, got, wantData)
		}
	}
	// The connection survived the frame: a later command is answered on
	// it, and it is still the only one.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, "doc:2"); err != nil {
		t.Fatalf("subscribe after the batched frame: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(stateErrs) > 0 || conns() != 1 {
		t.Fatalf("the client reconnected (%d connections, reasons %v)", conns(), stateErrs)
	}
}
