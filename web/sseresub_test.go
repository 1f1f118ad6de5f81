package web_test

import (
	"testing"
	"time"
)

// TestClientJSSSEResubscribe: client.js on SSE subscribes to a channel
// right after unsubscribing from it (and to another one while the stream
// reopens): each subscribe resolves and the channel's messages arrive.
func TestClientJSSSEResubscribe(t *testing.T) {
	url := startMemoryNode(t, nil)
	runClientJS(t, "sseresub.test.mjs", time.Minute, "WS_URL="+url)
}
