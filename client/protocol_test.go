package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/syncgate/syncgate/client"
	"github.com/syncgate/syncgate/internal/wstest"
)

// A line the client cannot parse is a protocol error of the connection:
// nothing of that frame is used (the forged line between the two broken
// ones is not delivered), OnState sees ErrProtocol, and the client
// reconnects.
func TestProtocolErrorReconnects(t *testing.T) {
	url, conns := wstest.ForgingServer(t)

	states := make(chan error, 16)
	c := dial(t, url, client.Options{OnState: func(s client.State, err error) {
		if s == client.StateReconnecting {
			states <- err
		}
	}})
	defer c.Close()
	payroll := subscribe(t, c, "doc:payroll")
	doc := subscribe(t, c, "doc:1")
	select {
	case err := <-states:
		if !errors.Is(err, client.ErrProtocol) {
			t.Fatalf("reconnecting because of %v, want ErrProtocol", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not drop the connection")
	}
	waitForCond(t, "a second connection", func() bool { return conns() >= 2 })
	for _, s := range []*client.Subscription{payroll, doc} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		for {
			ev, err := s.Next(ctx)
			if err != nil {
				break
			}
			if ev.Type == client.Message {
				t.Errorf("delivered %+v from a frame with an unparsable line", ev)
			}
		}
		cancel()
	}
}

func waitForCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
