package web_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/memory"
	"github.com/syncgate/syncgate/internal/config"
)

// yjsHistory is the test nodes' history.size: small, so a document of a
// few hundred keystrokes rolls the history window over.
const yjsHistory = 20

// TestBrowserYjs runs web/e2e/yjs.test.mjs: the demo page (a Yjs editor on
// web/yjs.js, with real Yjs from web/e2e/node_modules served in place of
// the page's CDN URLs) in headless Chromium against two nodes sharing a
// JetStream broker (embedded in node A, node B connects to it) whose
// history keeps only yjsHistory messages per channel. The script checks:
// two pages on two nodes typing into the same line at once converge with
// both people's characters kept; node B restarting while its user types
// loses nothing; a page opened when nobody else is online, after the
// history window rolled over, loads the whole document from snapshot +
// tail; a page cut off from the network merges its edits on return.
func TestBrowserYjs(t *testing.T) {
	nodeJS, chromium := browserDeps(t)
	start := time.Now()
	bin, dir := buildSyncgate(t)
	a, b := jetstreamPair(t, bin, dir, "SYNCGATE_HISTORY_SIZE="+strconv.Itoa(yjsHistory))
	a.start()
	t.Cleanup(a.stop)
	b.start()
	t.Cleanup(b.stop)
	mux := http.NewServeMux()
	mux.Handle("/", nodeControl(b))
	control := serveLoopback(t, mux)

	runE2E(t, nodeJS, "yjs.test.mjs", 120*time.Second,
		"NODE_A=http://"+a.addr, "NODE_B=http://"+b.addr, "CONTROL="+control,
		"HISTORY_SIZE="+strconv.Itoa(yjsHistory), "CHROMIUM="+chromium)
	t.Logf("yjs browser test took %v", time.Since(start).Round(time.Millisecond))
}

// TestYjsProviderHostile runs web/e2e/yjshostile.test.mjs: another client
// with publish permission sends the provider non-Yjs data, bad base64, an
// unreadable update, a garbage state vector and garbage awareness
// updates; the provider reports them as error events, stays connected,
// keeps its document and applies the valid update that follows.
func TestYjsProviderHostile(t *testing.T) {
	cfg := config.Default()
	cfg.Client.PublishRate = 0
	url, stop := yjsNode(t, cfg, memory.New(memory.Config{HistorySize: 100}))
	defer stop()
	out := nodeYjs(t, "yjshostile.test.mjs", time.Minute, "WS_URL="+url)
	t.Logf("node: %s", out)
}

// TestYjsProviderSnapshotTooLarge runs web/e2e/yjslimits.test.mjs on a
// node with the default client.max_message_size: 60 KiB of Yjs state is
// snapshotted; the `snap` of 65 KiB is discarded by the node as over the
// limit, which the client sees as an error event (docs/yjs.md, Limits).
func TestYjsProviderSnapshotTooLarge(t *testing.T) {
	cfg := config.Default()
	cfg.Client.PublishRate = 0
	url, stop := yjsNode(t, cfg, memory.New(memory.Config{HistorySize: 1000}))
	defer stop()
	out := nodeYjs(t, "yjslimits.test.mjs", time.Minute, "WS_URL="+url)
	t.Logf("node: %s", out)
}
