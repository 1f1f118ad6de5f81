package jetstream

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/natsbase"
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
		e, err := b.snapGet(ctx, kv, key)
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
		kept, err := brokers.DecodeSnapshot(e.Data)
		if err == nil && !brokers.SnapshotReplaces(kept, s) {
			return false, kept.Clone(), nil
		}
		// A malformed value is replaced.
		if _, err := kv.Update(ctx, key, val, e.Seq); err == nil {
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
	e, err := b.snapGet(ctx, kv, snapKey(ch))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return brokers.Snapshot{}, false, nil
	}
	if err != nil {
		return brokers.Snapshot{}, false, fmt.Errorf("jetstream: snapshot %s: %w", ch, wrapKV(err))
	}
	s, err := brokers.DecodeSnapshot(e.Data)
	if err != nil {
		return brokers.Snapshot{}, false, fmt.Errorf("jetstream: snapshot %s: %w", ch, err)
	}
	return s.Clone(), true, nil
}

// snapGet reads key's value and revision from the bucket's stream leader.
// kv.Get would use a direct get, which any replica of a replicated bucket
// may answer from behind the leader: a snapshot just stored could read as
// missing or older (seen as TestClusterConformance/Snapshots/Rules failing
// under load). A deleted or purged key reads as ErrKeyNotFound.
func (b *Broker) snapGet(ctx context.Context, kv jetstream.KeyValue, key string) (*natsbase.StoredMsg, error) {
	bucket := kv.Bucket()
	m, err := natsbase.GetLast(ctx, b.n.Conn().Conn, "KV_"+bucket, "$KV."+bucket+"."+key)
	if errors.Is(err, natsbase.ErrNotFound) {
		return nil, jetstream.ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	if op := m.Header.Get("KV-Operation"); op != "" {
		return nil, jetstream.ErrKeyNotFound // DEL or PURGE marker
	}
	return m, nil
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
