package jetstream_test

import (
	"fmt"
	"testing"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
)

// TestSinceSparseChannel: a channel's messages lie far apart in the
// stream when other channels publish in bursts between them (an outbox
// flushed after an outage, a busy channel beside a quiet one). Since must
// still return exactly the publications after since, for every since in
// the kept history. It failed when the read found the first wanted
// message by probing backwards from the channel's last message and took
// two probes that found the same message for the channel's oldest: a
// catch-up near the head then got only the newest messages, and the
// gateway answered `recovered: false` (the crash run of `bench study`
// lost acked messages at subscribers resuming on the publishing node).
func TestSinceSparseChannel(t *testing.T) {
	srv := natstest.RunServer(t)
	b := jetstream.New(jetstream.Config{URL: srv.URL(), HistorySize: 1000})
	if err := b.Start(t.Context(), brokertest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	const ch, other = "sparse", "busy"
	// Other channels' messages before each of ch's: gaps that do and do
	// not fit within the probes' doubling distances.
	gaps := []int{0, 1, 0, 7, 2, 30, 0, 0, 3, 13, 1, 60, 0, 5}
	for i, gap := range gaps {
		for range gap {
			if _, err := b.Publish(t.Context(), other, []byte(`"o"`)); err != nil {
				t.Fatal(err)
			}
		}
		pos, err := b.Publish(t.Context(), ch, fmt.Appendf(nil, `%d`, i+1))
		if err != nil {
			t.Fatal(err)
		}
		if pos.Seq != uint64(i+1) {
			t.Fatalf("publication %d at %+v, want seq %d", i+1, pos, i+1)
		}
	}
	n := uint64(len(gaps))
	for _, limit := range []int{1, 2, 3, 1000} {
		for since := range n + 1 {
			pubs, pos, err := b.Since(t.Context(), ch, since, limit)
			if err != nil {
				t.Fatal(err)
			}
			if pos.Seq != n {
				t.Fatalf("Since(%d, limit %d): position %+v, want seq %d", since, limit, pos, n)
			}
			want := min(n-since, uint64(limit))
			ok := uint64(len(pubs)) == want
			for i := 0; ok && i < len(pubs); i++ {
				p := pubs[i]
				ok = p.Seq == since+1+uint64(i) && p.Epoch == pos.Epoch && string(p.Data) == fmt.Sprint(p.Seq)
			}
			if !ok {
				var got []uint64
				for _, p := range pubs {
					got = append(got, p.Seq)
				}
				t.Fatalf("Since(%d, limit %d) gave seqs %v, want %d from %d", since, limit, got, want, since+1)
			}
		}
	}
}
