package memory

import (
	"context"
	"slices"

	"github.com/syncgate/syncgate/brokers"
)

// Snapshots live as long as the broker (one node, no persistence), apart
// from the channels' history: a channel forgotten after its TTL starts a
// new epoch, and the next snapshot of that epoch replaces the old one.

// StoreSnapshot implements brokers.Snapshots.
func (b *Broker) StoreSnapshot(ctx context.Context, ch string, s brokers.Snapshot) (bool, brokers.Snapshot, error) {
	if err := b.check(ctx); err != nil {
		return false, brokers.Snapshot{}, err
	}
	b.snapMu.Lock()
	defer b.snapMu.Unlock()
	if b.snaps == nil {
		b.snaps = make(map[string]brokers.Snapshot)
	}
	kept, ok := b.snaps[ch]
	if ok && !brokers.SnapshotReplaces(kept, s) {
		return false, kept, nil
	}
	s.Data = slices.Clone(s.Data)
	b.snaps[ch] = s
	return true, s, nil
}

// LoadSnapshot implements brokers.Snapshots.
func (b *Broker) LoadSnapshot(ctx context.Context, ch string) (brokers.Snapshot, bool, error) {
	if err := b.check(ctx); err != nil {
		return brokers.Snapshot{}, false, err
	}
	b.snapMu.Lock()
	defer b.snapMu.Unlock()
	s, ok := b.snaps[ch]
	return s, ok, nil
}
