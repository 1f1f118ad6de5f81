// Package feed is the change feed: how an application backend receives
// every accepted publication of the channels matching a pattern
// ("doc:*"), with its seq and epoch, to persist it with its position
// (docs/integration.md, "Change feed").
//
// # Guarantees
//
// On the log backends the feed reads the log itself, so it sees exactly
// what clients see:
//
//   - jetstream: OpenJetStream reads the history stream with an ordered
//     consumer (no state on the server). Position: the stream sequence,
//     in Publication.Token; the backend persists the token of the last
//     publication it processed and reopens with Resume{After: token}.
//   - redis-streams: OpenRedisStream finds the matching channels' streams
//     on every Redis server (SCAN every Rescan, so a new channel shows up
//     within it) and reads each from its own cursor (XREAD). Position:
//     the backend's own per-channel (seq, epoch), given back through
//     Resume.Channel. Cost: one SCAN of the keyspace and one HGET per
//     followed channel per server every Rescan, one XREAD per 64
//     channels per read.
//
// Both deliver each channel's publications in seq order (channels
// interleave), at least once: after a restart from the last persisted
// position nothing is missed, and only what followed that position is
// delivered again (a backend that persists each publication with its
// position, as examples/docbackend does, sees none again; one that
// persists in batches sees at most the last batch again and drops it by
// seq). The log keeps each channel's last HistorySize publications for
// HistoryTTL (broker.*.history_size / history_ttl): a backend down
// longer than that, or falling further behind, finds a jump in a
// channel's seqs (Publication.Seq > last+1), which it must treat as lost
// edits. A new epoch (the broker lost the channel's history) restarts
// the channel at seq 1.
//
// The memory, redis (Pub/Sub) and nats (core) backends have no log to
// read: there is no feed. A backend that must persist every edit there
// does it in the publish proxy (synchronously, before the publication is
// accepted); the redis backend's history (History.Since) holds each
// channel's last history_size publications within history_ttl, which a
// backend may poll per channel but with no notice of new channels.
//
// # Hostile entries
//
// Anyone with write access to the stream or to Redis can put anything
// there. An entry is delivered only if a node would fan it out: a channel
// name a client may use (gateway.ValidChannel), headers or fields present
// and well-formed, epoch printable, payload at most
// MaxMessageSize plus the publisher's share and of the exact shape a
// node writes (gateway.DecodePublication). Others are dropped, counted
// (Reader.Rejected) and logged.
//
// # Goroutines and buffers
//
// A feed is used by one goroutine. Publication.Data belongs to the
// caller. Close releases the feed; JetStream's consumer goroutines
// belong to the NATS connection, which the caller owns.
package feed
