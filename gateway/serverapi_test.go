package gateway_test

import (
	"errors"
	"testing"
	"time"

	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestRevokeLeavesProxySessions: revoke is about tokens; a session the
// connect hook admitted holds none and stays, and disconnect closes it.
func TestRevokeLeavesProxySessions(t *testing.T) {
	ts, _ := cookieServer(t, "epoll", nil)
	cl, err := wstest.DialHeader(t, ts.url(), cookieHeader(appOrigin, "sid-alice"))
	if err != nil {
		t.Fatal(err)
	}
	cl.MustCall("connect", nil, "connected")
	n, err := ts.srv.RevokeUser(t.Context(), "alice", time.Now().Add(time.Hour))
	if n != 0 || !errors.Is(err, gateway.ErrControlOff) {
		t.Fatalf("RevokeUser = %d, %v; want 0 connections, this node only", n, err)
	}
	cl.MustCall("ping", nil, "pong")
	if n, _ := ts.srv.DisconnectUser(t.Context(), "alice", false); n != 1 {
		t.Fatalf("DisconnectUser closed %d connections, want 1", n)
	}
	if m := cl.NextOp("disconnect"); m.Str("code") != "disconnected" {
		t.Fatalf("got %v", m)
	}
}
