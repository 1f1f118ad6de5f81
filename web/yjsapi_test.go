package web_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/client/api"
	"github.com/syncgate/syncgate/internal/config"
)

// TestYjsProviderServerSnapshot: a backend seeds a Yjs document as the
// documented server-API path says (docs/yjs.md, "Migrating": publish one
// message, then store 0x00 + the Yjs state as `bin` at its position); a
// provider joining with nobody else online loads it and reports synced,
// and a second joiner gets the seed and the first one's edits
// (web/e2e/yjsseed.test.mjs, real Yjs).
func TestYjsProviderServerSnapshot(t *testing.T) {
	requireYjs(t)
	url, backend := startAPINode(t, nil)
	const ch = "doc:seeded"
	runClientJSControl(t, "yjsseed.test.mjs", time.Minute, func(req string) string {
		b64, ok := strings.CutPrefix(req, "seed ")
		if !ok {
			return "unknown request " + req
		}
		state, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return err.Error()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pub, err := backend.Publish(ctx, ch, map[string]any{"seeded": "backend"}, "backend")
		if err != nil {
			return err.Error()
		}
		r, err := backend.StoreSnapshot(ctx, ch, api.Position{Seq: pub.Seq, Epoch: pub.Epoch}, append([]byte{0}, state...))
		if err != nil {
			return "store: " + err.Error()
		}
		if !r.Stored {
			return "snapshot not stored"
		}
		return "ok"
	}, "WS_URL="+url, "CH="+ch)
}

// TestYjsProviderSnapshotOverMax: a snapshot over history.snapshot_max_bytes
// (4096 here) but within client.max_message_size is answered too_large,
// which the provider reports as an error event with code "yjs"; it stays
// connected and a reader joining later gets the whole document from
// history (web/e2e/yjssnapmax.test.mjs, real Yjs; docs/yjs.md, Limits).
func TestYjsProviderSnapshotOverMax(t *testing.T) {
	requireYjs(t)
	url := startMemoryNode(t, func(c *config.Config) { c.History.SnapshotMaxBytes = 4096 })
	runClientJS(t, "yjssnapmax.test.mjs", time.Minute, "WS_URL="+url)
}

// TestYjsProviderUpdateTooLarge: one Yjs update over
// client.max_message_size (64 KiB) is reported once as an error event with
// code "yjs" and not re-sent; the provider stays connected
// (web/e2e/yjsbigupdate.test.mjs, real Yjs; docs/yjs.md, Reconnects and
// Limits).
func TestYjsProviderUpdateTooLarge(t *testing.T) {
	requireYjs(t)
	url := startMemoryNode(t, nil)
	runClientJS(t, "yjsbigupdate.test.mjs", time.Minute, "WS_URL="+url)
}
