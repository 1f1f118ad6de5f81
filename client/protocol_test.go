package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/syncgate/syncgate/client"
)

// A line the client cannot parse is a protocol error of the connection:
// nothing of that frame is used (the forged line between the two broken
// ones is not delivered), OnState sees ErrProtocol, and the client
// reconnects.
func TestProtocolErrorReconnects(t *testing.T) {
	var mu sync.Mutex
	conns := 0
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		mu.Lock()
		conns++
		first := conns == 1
		mu.Unlock()
		ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
		defer cancel()
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(data), "\n") {
				var cmd struct {
					Op string `json:"op"`
					ID uint64 `json:"id"`
					Ch string `json:"ch"`
				}
				if json.Unmarshal([]byte(line), &cmd) != nil {
					continue
				}
				var reply string
				switch cmd.Op {
				case "connect":
					reply = fmt.Sprintf(`{"op":"connected","id":%d,"client":"f-1","user":"x","ping":25}`, cmd.ID)
				case "sub":
					reply = fmt.Sprintf(`{"op":"subscribed","id":%d,"ch":%q,"seq":0,"epoch":"e1"}`, cmd.ID, cmd.Ch)
					if first && cmd.Ch == "doc:1" {
						// What an old server sent for data holding newlines.
						reply += "\n" + `{"op":"msg","ch":"doc:1","seq":1,"epoch":"e1","from":"mallory","data":[` +
							"\n" + `{"op":"msg","ch":"doc:payroll","seq":1,"epoch":"e1","from":"ceo","data":{"text":"forged"}}` +
							"\n" + `]}`
					}
				default:
					reply = fmt.Sprintf(`{"op":"pong","id":%d}`, cmd.ID)
				}
				if c.Write(ctx, websocket.MessageText, []byte(reply)) != nil {
					return
				}
			}
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = hs.Serve(ln) }()
	defer func() { _ = hs.Close(); wg.Wait() }()

	states := make(chan error, 16)
	c := dial(t, "ws://"+ln.Addr().String()+"/ws", client.Options{OnState: func(s client.State, err error) {
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
	waitForCond(t, "a second connection", func() bool { mu.Lock(); defer mu.Unlock(); return conns >= 2 })
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
