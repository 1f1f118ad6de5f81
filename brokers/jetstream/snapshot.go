package jetstream

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syncgate/syncgate/brokers"
)

// Snapshots live in the key-value bucket <STREAM>_SNAP (history 1, the
// streams' storage and replicas, created on first use), one key per
// channel: the channel name in hex (KV keys do not allow every channel
// character), the value brokers.EncodeSnapshot's form. The rule of
// brokers.Snapshots is kept with the bucket's compare-and-set: Create
// when there is none, Update at the revision read, and a read again when
// another writer came first. A value must fit the server's max_payload
// (1 MiB by default) with its headers.

const snapRetries = 8

func (b *Broker) snapBucket(ctx context.Context) (jetstream.KeyValue, error) {
	b.snapMu.Lock()
	defer b.snapMu.Unlock()
	if b.snapKV != nil {
		return b.snapKV, nil
	}
	name := strings.NewReplacer(".", "_", "*", "_", ">", "_").Replace(b.cfg.Stream) + "_SNAP"
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   name,
		History:  1,
		Storage:  b.cfg.Storage,
		Replicas: max(b.cfg.Replicas, 1),
	})
	if err != nil {
		return nil, err
	}
	b.snapKV = kv
	return kv, nil
}

func snapKey(ch string) string { return "c" + hex.EncodeToString([]byte(ch)) }

// StoreSnapshot implements brokers.Snapshots.
func (b *Broker) StoreSnapshot(ctx context.Context, ch string, s brokers.Snapshot) (bool, brokers.Snapshot, error) {
	if err := b.n.Check(ctx); err != nil {
		return false, brokers.Snapshot{}, fmt.Errorf("jetstream: snapshot %s: %w", ch, err)
	}
	ctx, cancel := b.n.OpCtx(ctx)
	defer cancel()
	kv, err := b.snapBucket(ctx)
	if err != nil {
		return false, brokers.Snapshot{}, fmt.Errorf("jetstream: snapshot %s: %w", ch, wrapKV(err))
	}
	key, val := snapKey(ch), brokers.EncodeSnapshot(nil, s)
	for range snapRetries {
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err := kv.Create(ctx, key, val); err == nil {
				return true, s.Clone(), nil
			} else if !casConflict(err) {
				return false, brokers.Snapshot{}, fmt.Errorf("jetstream: snapshot %s: %w", ch, wrapKV(err))
			}
			continue // another writer created it: compare with theirs
		case err != nil:
			return false, brokers.Snapshot{}, fmt.Errorf("jetstream: snapshot %s: %w", ch, wrapKV(err))
		}
		kept, err := brokers.DecodeSnapshot(e.Value())
		if err == nil && !brokers.SnapshotReplaces(kept, s) {
			return false, kept.Clone(), nil
		}
		// A malformed value is replaced.
		if _, err := kv.Update(ctx, key, val, e.Revision()); err == nil {
			return true, s.Clone(), nil
		} else if !casConflict(err) {
			return false, brokers.Snapshot{}, fmt.Errorf("jetstream: snapshot %s: %w", ch, wrapKV(err))
		}
	}
	return false, brokers.Snapshot{}, fmt.Errorf("jetstream: snapshot %s: %d concurrent writers in a row: %w", ch, snapRetries, brokers.ErrUnavailable)
}

// LoadSnapshot implements brokers.Snapshots.
func (b *Broker) LoadSnapshot(ctx context.Context, ch string) (brokers.Snapshot, bool, error) {
	if err := b.n.Check(ctx); err != nil {
		return brokers.Snapshot{}, false, fmt.Errorf("jetstream: snapshot %s: %w", ch, err)
	}
	ctx, cancel := b.n.OpCtx(ctx)
	defer cancel()
	kv, err := b.snapBucket(ctx)
	if err != nil {
		return brokers.Snapshot{}, false, fmt.Errorf("jetstream: snapshot %s: %w", ch, wrapKV(err))
	}
	e, err := kv.Get(ctx, snapKey(ch))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return brokers.Snapshot{}, false, nil
	}
	if err != nil {
		return brokers.Snapshot{}, false, fmt.Errorf("jetstream: snapshot %s: %w", ch, wrapKV(err))
	}
	s, err := brokers.DecodeSnapshot(e.Value())
	if err != nil {
		return brokers.Snapshot{}, false, fmt.Errorf("jetstream: snapshot %s: %w", ch, err)
	}
	return s.Clone(), true, nil
}

// casConflict reports whether a Create or Update lost to another writer:
// ErrKeyExists, which replicated buckets report as error code 10164.
func casConflict(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) ||
		(errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
}

// wrapKV marks the errors of an unreachable server as ErrUnavailable.
func wrapKV(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return fmt.Errorf("%w: %w", brokers.ErrUnavailable, err)
	}
	return err
}
