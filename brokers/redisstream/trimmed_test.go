package redisstream_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestTailerBehindHistory proves the redis-streams Delivery row
// (docs/brokers.md): a node whose tailer falls more than history.size
// messages behind on a channel skips the trimmed ones, in the open (the
// seqs jump), and nothing else. Node b's tailer is held in its handler
// on seq 1 (a stalled node) while node a publishes 2..20 with
// history.size 5; once released, b delivers what the stream still holds
// (16..20) and the next message, in order, once, with the right data.
func TestTailerBehindHistory(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := testConfig(srv.Addr())
	cfg.HistorySize = 5
	a, _ := brokertest.Started(t, redisstream.New(cfg))
	rec := brokertest.NewStallingRecorder()
	b := redisstream.New(cfg)
	brokertest.StartedOn(t, b, rec)
	const ch = "doc:trimmed"
	if err := b.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	publish := func(i int) { brokertest.PublishSeq(t, a, ch, i) }
	publish(1)
	<-rec.Stalled()
	for i := 2; i <= 20; i++ {
		publish(i)
	}
	rec.Release()
	last := func(seq uint64) func([]brokertest.Event) bool {
		return func([]brokertest.Event) bool {
			got := rec.Publications(ch)
			return len(got) > 0 && got[len(got)-1].Seq == seq
		}
	}
	rec.WaitFor(t, 10*time.Second, "seq 20 delivered", last(20))
	publish(21)
	rec.WaitFor(t, 10*time.Second, "seq 21 delivered", last(21))
	got := rec.Publications(ch)
	var seqs []uint64
	for _, p := range got {
		seqs = append(seqs, p.Seq)
	}
	want := []uint64{1, 16, 17, 18, 19, 20, 21}
	if fmt.Sprint(seqs) != fmt.Sprint(want) {
		t.Fatalf("node b delivered seqs %v, want %v: the trimmed 2..15 skipped, nothing else", seqs, want)
	}
	for _, p := range got {
		if string(p.Data) != fmt.Sprint(p.Seq) || p.Epoch != got[0].Epoch {
			t.Errorf("seq %d: %q in epoch %q, want %q in %q", p.Seq, p.Data, p.Epoch, fmt.Sprint(p.Seq), got[0].Epoch)
		}
	}
}
