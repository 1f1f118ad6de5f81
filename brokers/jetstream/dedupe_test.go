package jetstream

import (
	"testing"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/internal/natstest"
)

// TestPublicationStoredOnce: a second write of a publication (same id),
// conditional on whatever is last, as a fresh attempt made while the
// first write is being stored would be, is not stored again: the stream
// dedupes it by its Nats-Msg-Id and the write returns the first copy's
// position. Before the id went into Nats-Msg-Id it was stored a second
// time, right after the first (TestClusterMinority's "stored twice").
func TestPublicationStoredOnce(t *testing.T) {
	srv := natstest.RunServer(t)
	b := New(Config{URL: srv.URL()})
	if err := b.Start(t.Context(), brokertest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx := t.Context()
	const ch = "doc.dedupe"
	first, _, err := b.publish(ctx, ch, []byte("once"), "test-pub-1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := b.publish(ctx, ch, []byte("once"), "test-pub-1", "", nil)
	if err != nil {
		t.Fatalf("the second write: %v; want the first copy's position", err)
	}
	if again.pos != first.pos || again.sseq != first.sseq {
		t.Errorf("the second write returned %+v, want the first copy's %+v (stream seq %d, got %d)", again.pos, first.pos, first.sseq, again.sseq)
	}
	next, _, err := b.publish(ctx, ch, []byte("next"), "test-pub-2", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	hist, _, err := b.Since(ctx, ch, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range hist {
		got = append(got, string(p.Data))
	}
	if len(got) != 2 || got[0] != "once" || got[1] != "next" || next.pos.Seq != first.pos.Seq+1 {
		t.Errorf("history %q (next at seq %d, first at %d), want [once next] at consecutive seqs", got, next.pos.Seq, first.pos.Seq)
	}
}
