package multinode_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/wstest"
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
	writer, readerA, readerB := wstest.Dial(t, a.url), wstest.Dial(t, a.url), wstest.Dial(t, b.url)
	writer.Connect("writer")
	readerA.Connect("readerA")
	readerB.Connect("readerB")
	for _, c := range []*wstest.Client{writer, readerA, readerB} {
		c.MustCall("sub", map[string]any{"ch": ch}, "subscribed")
	}
	first := writer.MustCall("pub", map[string]any{"ch": ch, "data": "before"}, "ack")
	epoch := readerB.Msgs(ch, 1, 5*time.Second)[0].Str("epoch")
	readerA.Msgs(ch, 1, 5*time.Second)
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
		ack := writer.MustCall("pub", map[string]any{"ch": ch, "data": fmt.Sprintf("during%d", i)}, "ack")
		if ack.Num("seq") != uint64(i) {
			t.Errorf("ack %d during the outage: %v, want local seq %d", i, ack, i)
		}
	}
	local := readerA.Msgs(ch, 3, 5*time.Second)
	for i, m := range local {
		if m.Num("seq") != uint64(i+1) || m.Str("epoch") == epoch || m.Str("data") != fmt.Sprintf("during%d", i+1) {
			t.Errorf("node A, local delivery %d: %v", i, m)
		}
	}

	srv.Restart()
	waitReady(a, http.StatusOK)
	waitReady(b, http.StatusOK)
	got := readerB.Msgs(ch, 3, 10*time.Second)
	for i, m := range got {
		if m.Num("seq") != first.Num("seq")+uint64(i+1) || m.Str("epoch") != epoch || m.Str("data") != fmt.Sprintf("during%d", i+1) {
			t.Errorf("node B after the outage, message %d: %v (epoch %q)", i, m, epoch)
		}
	}
	again := readerA.Msgs(ch, 3, 10*time.Second)
	for i, m := range again {
		if m.Num("seq") != first.Num("seq")+uint64(i+1) || m.Str("epoch") != epoch {
			t.Errorf("node A after the outage, message %d: %v", i, m)
		}
	}
	ack := readerB.MustCall("pub", map[string]any{"ch": ch, "data": "after"}, "ack")
	if ack.Num("seq") != first.Num("seq")+4 {
		t.Errorf("first publication after the outage: %v, want seq %d", ack, first.Num("seq")+4)
	}
}
