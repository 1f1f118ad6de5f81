package client_test

import (
	"bytes"
	"testing"

	"github.com/syncgate/syncgate/client"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestBinaryPublicationJSONForm: the Go client (a JSON client: it does
// not ask for binary messages) gets a binary publication's bytes in
// Event.Bin, live and in a catch-up, and Data empty.
func TestBinaryPublicationJSONForm(t *testing.T) {
	n := startMemoryNode(t, nil)
	c := dial(t, n.url(), client.Options{User: "go"})
	s := subscribe(t, c, "doc:bin")
	w := wstest.Dial(t, n.url(), wstest.AcceptBinary())
	w.MustCall("connect", map[string]any{"user": "w", "binary": true}, "connected")
	data := []byte{0, '\n', 0xff}
	if r := w.CallBinary("pub", map[string]any{"ch": "doc:bin"}, data); r.Op() != "ack" {
		t.Fatalf("binary pub = %v", r)
	}
	m := nextOf(t, s, client.Message)
	if !bytes.Equal(m.Bin, data) || m.Data != nil || m.From != "w" {
		t.Fatalf("msg = %+v", m)
	}
	late := dial(t, n.url(), client.Options{User: "late"})
	ls, err := late.Subscribe(bg(), "doc:bin", client.SubscribeOptions{Since: &client.Position{Seq: 0, Epoch: m.Epoch}})
	if err != nil {
		t.Fatal(err)
	}
	if m := nextOf(t, ls, client.Message); !bytes.Equal(m.Bin, data) {
		t.Fatalf("catch-up msg = %+v", m)
	}
}
