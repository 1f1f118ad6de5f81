package wstest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// ForgingServer serves on loopback a WebSocket endpoint that answers as a
// node did before publish data was re-encoded (issue: message forgery
// through raw newlines): on its first connection, the reply to a `sub` of
// doc:1 is followed in the same frame by a msg whose data holds raw
// newlines, so a client that splits frames on '\n' sees an unparsable line,
// a forged doc:payroll msg from "ceo", and another unparsable line. Every
// other command gets a plain answer. It returns the ws:// URL and a
// function that reports how many connections it has had (a client that
// treats the frame as a protocol error reconnects).
func ForgingServer(t testing.TB) (url string, conns func() int) {
	t.Helper()
	return ScriptedServer(t, "f-1", func(ch string, conn int) string {
		if conn != 1 || ch != "doc:1" {
			return ""
		}
		return "\n" + `{"op":"msg","ch":"doc:1","seq":1,"epoch":"e1","from":"mallory","data":[` +
			"\n" + `{"op":"msg","ch":"doc:payroll","seq":1,"epoch":"e1","from":"ceo","data":{"text":"forged"}}` +
			"\n" + `]}`
	})
}

// ScriptedServer serves on loopback a minimal node for client tests: it
// answers `connect` with `connected` (client id client), `sub` with
// `subscribed` (seq 0, epoch e1) followed in the same frame by what
// afterSub returns for the channel and the connection's number (1 for the
// first), and every other command with a `pong` of its id. It returns the
// ws:// URL and a function that reports how many connections it has had.
func ScriptedServer(t testing.TB, client string, afterSub func(ch string, conn int) string) (url string, conns func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		mu.Lock()
		n++
		conn := n
		mu.Unlock()
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
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
					reply = fmt.Sprintf(`{"op":"connected","id":%d,"client":%q,"user":"x","ping":25}`, cmd.ID, client)
				case "sub":
					reply = fmt.Sprintf(`{"op":"subscribed","id":%d,"ch":%q,"seq":0,"epoch":"e1"}`, cmd.ID, cmd.Ch) + afterSub(cmd.Ch, conn)
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
	t.Cleanup(func() { _ = hs.Close(); wg.Wait() })
	return "ws://" + ln.Addr().String() + "/ws", func() int { mu.Lock(); defer mu.Unlock(); return n }
}
