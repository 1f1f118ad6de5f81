package web_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestClientJSStreamedCatchUp runs client.js under node against a node
// whose per-client queue (64 KB) is far smaller than the history the
// client catches up on (200 x 4 KB): the client asks for a streamed
// catch-up and must get every message once, in order, then `recovered`,
// without being cut off.
func TestClientJSStreamedCatchUp(t *testing.T) {
	url := startMemoryNode(t, func(c *config.Config) {
		c.Client.MaxQueueBytes = 64 << 10
		c.Client.MaxMessageSize = 8 << 10
		c.History.PageBytes = 16 << 10
	})

	const ch, n = "doc:js", 200
	pub := wstest.Dial(t, url)
	pub.Connect("writer")
	pad := strings.Repeat("x", 4<<10)
	var epoch string
	for i := 1; i <= n; i++ {
		epoch = pub.MustCall("pub", map[string]any{"ch": ch, "data": map[string]any{"i": i, "pad": pad}}, "ack").Str("epoch")
	}

	// client.js is an ES module; node 20 only takes .mjs as one outside a
	// "type": "module" package.
	runClientJS(t, "catchup.test.mjs", 60*time.Second, "WS_URL="+url, "CH="+ch, "EPOCH="+epoch, "N="+strconv.Itoa(n))
}
