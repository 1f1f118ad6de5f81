package feed_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/syncgate/syncgate/feed"
)

const wait = 10 * time.Second

// pubData is the payload a node stores for user's publication of data.
func pubData(user, data string) []byte {
	return []byte(fmt.Sprintf(`"from":%q,"data":%s`, user, data))
}

// collect reads n publications from f (failing after wait).
func collect(t *testing.T, f feed.Reader, n int) []feed.Publication {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	out := make([]feed.Publication, 0, n)
	for len(out) < n {
		p, err := f.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d publications: %v", len(out), n, err)
		}
		out = append(out, p)
	}
	return out
}

// none checks that f yields nothing more for a moment.
func none(t *testing.T, f feed.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if p, err := f.Next(ctx); err == nil {
		t.Fatalf("unexpected publication %+v", p)
	}
}

// checkOrder checks that pubs hold, per channel, seqs 1..n (or from the
// given first seqs on) in order, in one epoch per channel, and returns
// the count per channel.
func checkOrder(t *testing.T, pubs []feed.Publication, first map[string]uint64) map[string]int {
	t.Helper()
	next := map[string]uint64{}
	epoch := map[string]string{}
	count := map[string]int{}
	for _, p := range pubs {
		want, ok := next[p.Ch]
		if !ok {
			want = max(first[p.Ch], 1)
			epoch[p.Ch] = p.Epoch
		}
		if p.Seq != want || p.Epoch != epoch[p.Ch] || p.Epoch == "" {
			t.Fatalf("%s: got seq %d epoch %q, want seq %d epoch %q", p.Ch, p.Seq, p.Epoch, want, epoch[p.Ch])
		}
		next[p.Ch] = want + 1
		count[p.Ch]++
	}
	return count
}
