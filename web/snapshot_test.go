package web_test

import (
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestClientJSSnapshot: client.js subscribed with {snapshot: true} to a
// channel whose history (10) rolled past its start gets the `snapshot`
// event at the stored seq and then exactly the messages after it.
func TestClientJSSnapshot(t *testing.T) {
	url := startMemoryNode(t, func(c *config.Config) {
		c.History.Size = 10
	})
	const ch = "doc:snapjs"
	w := wstest.Dial(t, url)
	epoch := w.Sub(ch).Str("epoch")
	for i := 1; i <= 30; i++ {
		w.Pub(ch, i)
	}
	w.MustCall("snap", map[string]any{"ch": ch, "at": map[string]any{"seq": 25, "epoch": epoch}, "data": map[string]any{"y": "AAA="}}, "snapped")

	runClientJS(t, "snapshot.test.mjs", 60*time.Second, "WS_URL="+url, "CH="+ch, "SNAP=25", "N=30")
}
