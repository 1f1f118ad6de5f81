package brokers

import (
	"bytes"
	"context"
	"errors"
	"strconv"
)

// Snapshot is a channel's state as a client saw it at a position: opaque
// Data (the gateway keeps the client's JSON value) covering every message
// of Epoch up to and including Seq.
type Snapshot struct {
	Seq   uint64
	Epoch string
	Data  []byte
}

// Snapshots is implemented by backends that keep the latest snapshot of
// each channel (the `snap` op, docs/protocol.md).
//
// Compaction rule, the same on every backend: StoreSnapshot keeps s only
// when the channel has no snapshot, or the kept one is of another epoch,
// or s.Seq is higher than the kept one's. An equal or lower seq in the
// same epoch leaves the kept snapshot in place (the first stored at a seq
// stays), so concurrent writers end with the same result whatever their
// order: the highest seq, first come at that seq. The check and the write
// are one atomic step in the backend. Whether the channel has reached
// s.Seq in s.Epoch is the caller's check (the gateway reads the channel's
// position first).
type Snapshots interface {
	// StoreSnapshot stores s as ch's snapshot under the rule above and
	// reports whether it was kept, and the snapshot the channel has after
	// the call.
	StoreSnapshot(ctx context.Context, ch string, s Snapshot) (kept bool, now Snapshot, err error)
	// LoadSnapshot returns ch's snapshot; ok is false when it has none.
	// What it returns came from the broker and is untrusted: the caller
	// validates it (ValidSnapshot).
	LoadSnapshot(ctx context.Context, ch string) (s Snapshot, ok bool, err error)
}

// SnapshotReplaces reports whether next replaces kept under the rule of
// Snapshots.
func SnapshotReplaces(kept, next Snapshot) bool {
	return kept.Epoch != next.Epoch || next.Seq > kept.Seq
}

// ErrBadSnapshot: a stored snapshot does not decode.
var ErrBadSnapshot = errors.New("brokers: malformed snapshot")

// EncodeSnapshot appends s to b in the one-blob form backends store:
// "<seq> <epoch>\n<data>". Epochs contain no space or newline (the
// gateway validates them before storing).
func EncodeSnapshot(b []byte, s Snapshot) []byte {
	b = strconv.AppendUint(b, s.Seq, 10)
	b = append(b, ' ')
	b = append(b, s.Epoch...)
	b = append(b, '\n')
	return append(b, s.Data...)
}

// DecodeSnapshot parses what EncodeSnapshot wrote. Data aliases b. It
// checks the shape only; the gateway validates the contents.
func DecodeSnapshot(b []byte) (Snapshot, error) {
	head, data, ok := bytes.Cut(b, []byte{'\n'})
	if !ok {
		return Snapshot{}, ErrBadSnapshot
	}
	num, epoch, ok := bytes.Cut(head, []byte{' '})
	if !ok || len(num) == 0 || len(num) > 20 {
		return Snapshot{}, ErrBadSnapshot
	}
	seq, err := strconv.ParseUint(string(num), 10, 64)
	if err != nil {
		return Snapshot{}, ErrBadSnapshot
	}
	return Snapshot{Seq: seq, Epoch: string(epoch), Data: data}, nil
}

// Clone returns s with its own copy of Data.
func (s Snapshot) Clone() Snapshot {
	s.Data = append([]byte(nil), s.Data...)
	return s
}
