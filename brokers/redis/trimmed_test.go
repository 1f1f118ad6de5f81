package redis_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestGapBeyondHistory proves the last clause of the redis Delivery row
// (docs/brokers.md): a node that misses messages fills the gap from the
// stream, and only messages the stream no longer holds are skipped, in
// the open (the seqs jump). Node b reaches Redis through a proxy that is
// cut; while b is in its outage node a publishes 20 messages on a
// channel with history.size 5; after the heal b delivers, without a new
// message, every message the stream still holds (16..20), then the next
// one, in order, once, with the right data: the ones it skipped are only
// trimmed ones.
func TestGapBeyondHistory(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	proxy := redistest.StartProxy(t, srv.Addr())
	cfg := testConfig(srv.Addr())
	cfg.HistorySize = 5
	as, _ := startNodes(t, cfg, 1)
	cfg.Addrs = []string{proxy.Addr()}
	bs, brecs := startNodes(t, cfg, 1)
	a, b, rec := as[0], bs[0], brecs[0]
	const ch = "doc:trimmed"
	if err := b.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	publish := func(i int) { brokertest.PublishSeq(t, a, ch, i) }
	publish(1)
	rec.WaitPublications(t, ch, 1, waitTimeout)
	proxy.Partition()
	// Down, not just slow to answer: the pub/sub connection is given up,
	// so what the proxy holds back never reaches b.
	brokertest.Eventually(t, waitTimeout, "node b in an outage", func() bool {
		err := b.Ping(t.Context())
		return err != nil && strings.Contains(err.Error(), ": down (")
	})
	for i := 2; i <= 20; i++ {
		publish(i)
	}
	proxy.Heal()
	// After the reconnect b reads what it missed from the stream on its
	// own (docs/brokers.md, Outage): 16..20, all the stream still holds.
	// Only then the next message, which would trim 16.
	rec.WaitFor(t, waitTimeout, "seq 20 delivered after the heal", func([]brokertest.Event) bool {
		got := rec.Publications(ch)
		return len(got) > 0 && got[len(got)-1].Seq == 20
	})
	publish(21)
	checkTrimmedGap(t, rec, ch, 21, 16)
	if t.Failed() {
		return
	}
	if n := len(rec.Publications(ch)); n == 21 {
		t.Fatal("node b delivered all 21: nothing was trimmed before it looked, the gap was not exercised")
	}
}

// checkTrimmedGap waits for last on rec and checks rec's deliveries of
// ch: seqs increasing, one epoch, data = seq, and every seq from
// firstKept to last delivered (only trimmed ones may be missing).
func checkTrimmedGap(t *testing.T, rec *brokertest.Recorder, ch string, last, firstKept uint64) {
	t.Helper()
	rec.WaitFor(t, waitTimeout, fmt.Sprintf("seq %d delivered", last), func([]brokertest.Event) bool {
		got := rec.Publications(ch)
		return len(got) > 0 && got[len(got)-1].Seq == last
	})
	got := rec.Publications(ch)
	var seqs []uint64
	have := map[uint64]bool{}
	for i, p := range got {
		seqs = append(seqs, p.Seq)
		if string(p.Data) != fmt.Sprint(p.Seq) || p.Epoch != got[0].Epoch || (i > 0 && p.Seq <= got[i-1].Seq) {
			t.Errorf("delivery %d: seq %d %q in epoch %q: wrong data, another epoch or out of order", i, p.Seq, p.Data, p.Epoch)
		}
		have[p.Seq] = true
	}
	for s := firstKept; s <= last; s++ {
		if !have[s] {
			t.Errorf("seq %d, still in the stream, was skipped: delivered %v", s, seqs)
		}
	}
	t.Logf("delivered seqs %v", seqs)
}
