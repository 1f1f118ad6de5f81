package docbackend

import (
	"context"
	"time"

	"github.com/syncgate/syncgate/feed"
)

// Opener opens the change feed at a position.
type Opener func(ctx context.Context, r feed.Resume) (feed.Reader, error)

// Run follows the feed until ctx ends: it opens it at the store's
// position and, when it fails (the broker restarted, a connection
// dropped), closes it and opens it again from the position persisted
// last, retrying every retry.
func (b *Backend) Run(ctx context.Context, open Opener, retry time.Duration) {
	for ctx.Err() == nil {
		f, err := open(ctx, b.Resume())
		if err == nil {
			err = b.Follow(ctx, f)
			_ = f.Close()
		}
		if err != nil {
			b.log().Warn("docbackend: feed failed; reopening from the last persisted position", "err", err, "retry", retry)
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}
