package serverapi_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/syncgate/syncgate/client/api"
	"github.com/syncgate/syncgate/gateway/serverapi"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestSnapshotMethod: the server API's snapshot method stores a channel
// snapshot under the rules of the `snap` op (a position the channel has
// reached, higher seq wins, history.snapshot_max_bytes) and reads it
// back, JSON or bytes; a client's `sub` with snapshot: true is served
// what it stored.
func TestSnapshotMethod(t *testing.T) {
	n := startNode(t, func(c *config.Config, _ *serverapi.Config) { c.History.SnapshotMaxBytes = 1024 })
	ctx := t.Context()
	const ch = "doc:snap"
	c := wstest.Dial(t, n.ws)
	epoch := c.Sub(ch).Str("epoch")
	for i := 1; i <= 3; i++ {
		c.Pub(ch, i)
	}
	if r, err := n.api.Snapshot(ctx, ch); err != nil || r.Found {
		t.Fatalf("snapshot of a channel without one = %+v, %v", r, err)
	}
	r, err := n.api.StoreSnapshot(ctx, ch, api.Position{Seq: 2, Epoch: epoch}, map[string]any{"text": "at two"})
	if err != nil || !r.Stored || r.Seq != 2 || r.Epoch != epoch {
		t.Fatalf("store at 2 = %+v, %v", r, err)
	}
	if r, err := n.api.StoreSnapshot(ctx, ch, api.Position{Seq: 1, Epoch: epoch}, "older"); err != nil || r.Stored || r.Seq != 2 {
		t.Fatalf("store at 1 = %+v, %v; want kept 2", r, err)
	}
	for _, bad := range []api.Position{{Seq: 4, Epoch: epoch}, {Seq: 2, Epoch: "other"}, {Seq: 0, Epoch: epoch}} {
		if _, err := n.api.StoreSnapshot(ctx, ch, bad, 1); !api.IsCode(err, "bad_request") {
			t.Fatalf("store at %+v: %v, want bad_request", bad, err)
		}
	}
	if _, err := n.api.StoreSnapshot(ctx, ch, api.Position{Seq: 3, Epoch: epoch}, bytes.Repeat([]byte{1}, 1025)); !api.IsCode(err, "too_large") {
		t.Fatalf("1025 bytes over snapshot_max_bytes 1024: %v", err)
	}
	got, err := n.api.Snapshot(ctx, ch)
	if err != nil || !got.Found || got.Seq != 2 || string(got.Data) != `{"text":"at two"}` || got.Bin != nil {
		t.Fatalf("read = %+v, %v", got, err)
	}

	// Bytes: stored and read back as bytes, served to a JSON client as
	// base64 "bin".
	state := []byte{0, '\n', 0xff, '"'}
	if r, err := n.api.StoreSnapshot(ctx, ch, api.Position{Seq: 3, Epoch: epoch}, state); err != nil || !r.Stored || r.Seq != 3 {
		t.Fatalf("binary store = %+v, %v", r, err)
	}
	if got, err := n.api.Snapshot(ctx, ch); err != nil || !got.Found || got.Seq != 3 || !bytes.Equal(got.Bin, state) || got.Data != nil {
		t.Fatalf("binary read = %+v, %v", got, err)
	}
	late := wstest.Dial(t, n.ws)
	late.Send(map[string]any{"op": "sub", "id": 1, "ch": ch, "snapshot": true})
	if m := late.Next(func(wstest.Msg) bool { return true }); m.Op() != "snapshot" || m.Num("seq") != 3 || m.Str("bin") != base64.StdEncoding.EncodeToString(state) {
		t.Fatalf("client's snapshot = %v", m)
	}

	// Bad requests over raw HTTP.
	url := n.base + "/api/snapshot"
	for _, tc := range []struct{ body, has string }{
		{`{"ch":"doc:snap","data":1}`, `needs \"at\"`},
		{`{"ch":"doc:snap","at":{"seq":3,"epoch":"` + epoch + `"},"data":1,"bin":"AA=="}`, "exclude"},
		{`{"ch":"doc:snap","at":{"seq":3,"epoch":"` + epoch + `"}}`, `missing \"data\"`},
		{`{"at":{"seq":3,"epoch":"` + epoch + `"},"data":1}`, `missing \"ch\"`},
		{`{"ch":"a b"}`, "channel"},
	} {
		if code, body := post(t, "POST", url, "apikey "+key, tc.body); code != 400 || !strings.Contains(body, tc.has) {
			t.Fatalf("%s = %d %s, want 400 with %q", tc.body, code, body, tc.has)
		}
	}
	if code, _ := post(t, "POST", url, "apikey wrong-key-0123456789", `{"ch":"doc:snap"}`); code != 401 {
		t.Fatalf("wrong key = %d, want 401", code)
	}
}

// TestPublishBinaryMethod: publish with "bin" is a binary publication:
// bytes to a binary WebSocket client, base64 to a JSON one and in the
// API's history.
func TestPublishBinaryMethod(t *testing.T) {
	n := startNode(t, nil)
	ctx := t.Context()
	const ch = "doc:binpub"
	b := wstest.Dial(t, n.ws, wstest.AcceptBinary())
	b.MustCall("connect", map[string]any{"user": "b", "binary": true}, "connected")
	b.Sub(ch)
	j := wstest.Dial(t, n.ws)
	j.Sub(ch)
	data := []byte{0xca, 0xfe, 0, '\n'}
	if r, err := n.api.PublishBinary(ctx, ch, data, "backend"); err != nil || r.Seq != 1 {
		t.Fatalf("publish binary = %+v, %v", r, err)
	}
	if m := b.NextOp("msg"); !m.Binary() || !bytes.Equal(m.Bytes(), data) || m.Str("from") != "backend" {
		t.Fatalf("binary client got %v", m)
	}
	if m := j.NextOp("msg"); m.Binary() || !bytes.Equal(m.Bytes(), data) {
		t.Fatalf("JSON client got %v", m)
	}
	h, err := n.api.History(ctx, ch, 0, 10)
	if err != nil || len(h.Pubs) != 1 || !bytes.Equal(h.Pubs[0].Bin, data) || h.Pubs[0].Data != nil {
		t.Fatalf("history = %+v, %v", h, err)
	}
	if _, err := n.api.PublishBinary(ctx, ch, bytes.Repeat([]byte{1}, 1025), ""); !api.IsCode(err, "too_large") {
		t.Fatalf("1025 bytes over max_message_size 1024: %v", err)
	}
	if code, body := post(t, "POST", n.base+"/api/publish", "apikey "+key, `{"ch":"doc:binpub","data":1,"bin":"AA=="}`); code != 400 || !strings.Contains(body, "exclude") {
		t.Fatalf("data and bin = %d %s", code, body)
	}
}
