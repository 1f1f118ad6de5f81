package multinode_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/redistest"
)

// readyz returns the status code of the node's /readyz.
func readyz(t *testing.T, n *node) int {
	t.Helper()
	url := "http://" + strings.TrimSuffix(strings.TrimPrefix(n.url, "ws://"), "/ws") + "/readyz"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestRedisOutage: Redis dies under two nodes. Node A's clients keep
// talking to each other (local epoch); node B's clients get nothing of it
// yet; /readyz says the nodes are not ready. When Redis is back, node B's
// client receives what was published on A, with real seqs right after the
// last one it had, without reconnecting; node A's clients see the epoch
// change back and get the same messages under their real seqs.
func TestRedisOutage(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	a, b := startNode(t, srv.Addr()), startNode(t, srv.Addr())
	const ch = "doc:outage"
	writer, readerA, readerB := dial(t, a.url), dial(t, a.url), dial(t, b.url)
	writer.connect("writer")
	readerA.connect("readerA")
	readerB.connect("readerB")
	for _, c := range []*client{writer, readerA, readerB} {
		c.mustCall("sub", map[string]any{"ch": ch}, "subscribed")
	}
	first := writer.mustCall("pub", map[string]any{"ch": ch, "data": "before"}, "ack")
	epoch := readerB.msgs(ch, 1, 5*time.Second)[0].str("epoch")
	readerA.msgs(ch, 1, 5*time.Second)
	if readyz(t, a) != http.StatusOK {
		t.Fatalf("node A not ready before the outage")
	}

	srv.Kill()
	waitReady := func(n *node, want int) {
		deadline := time.Now().Add(10 * time.Second)
		for readyz(t, n) != want {
			if time.Now().After(deadline) {
				t.Fatalf("/readyz never answered %d", want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitReady(a, http.StatusServiceUnavailable)
	for i := 1; i <= 3; i++ {
		ack := writer.mustCall("pub", map[string]any{"ch": ch, "data": fmt.Sprintf("during%d", i)}, "ack")
		if ack.num("seq") != uint64(i) {
			t.Errorf("ack %d during the outage: %v, want local seq %d", i, ack, i)
		}
	}
	local := readerA.msgs(ch, 3, 5*time.Second)
	for i, m := range local {
		if m.num("seq") != uint64(i+1) || m.str("epoch") == epoch || m.str("data") != fmt.Sprintf("during%d", i+1) {
			t.Errorf("node A, local delivery %d: %v", i, m)
		}
	}

	srv.Restart()
	waitReady(a, http.StatusOK)
	waitReady(b, http.StatusOK)
	got := readerB.msgs(ch, 3, 10*time.Second)
	for i, m := range got {
		if m.num("seq") != first.num("seq")+uint64(i+1) || m.str("epoch") != epoch || m.str("data") != fmt.Sprintf("during%d", i+1) {
			t.Errorf("node B after the outage, message %d: %v (epoch %q)", i, m, epoch)
		}
	}
	again := readerA.msgs(ch, 3, 10*time.Second)
	for i, m := range again {
		if m.num("seq") != first.num("seq")+uint64(i+1) || m.str("epoch") != epoch {
			t.Errorf("node A after the outage, message %d: %v", i, m)
		}
	}
	ack := readerB.mustCall("pub", map[string]any{"ch": ch, "data": "after"}, "ack")
	if ack.num("seq") != first.num("seq")+4 {
		t.Errorf("first publication after the outage: %v, want seq %d", ack, first.num("seq")+4)
	}
}
