// Package redisstream is the redis-streams broker backend: Redis Streams
// are the durable per-channel log, and every node tails the channels it
// serves from it. Several nodes sharing Redis behave as one: a publication
// reaches every subscribed node with the same seq and epoch, history
// written through one node is read through any, presence is shared.
//
// # Data model
//
// Every key of a channel ch carries the hash tag {ch} (see shard.go):
//
//   - a stream <prefix>{ch}:h holds the messages: entry id <seq>-0, so
//     entry order is seq order; fields d (data) and e (epoch); trimmed to
//     exactly Config.HistorySize entries (MAXLEN, not ~); expiring
//     Config.HistoryTTL after the last publication;
//   - a hash <prefix>{ch}:m holds the epoch (e) and the last seq (s);
//   - a stream <prefix>{ch}:e carries presence events (join, leave);
//   - a hash <prefix>{ch}:p (client -> user) and a sorted set
//     <prefix>{ch}:x (client -> expiry) hold presence.
//
// Publish is one Lua script: it increments the seq and XADDs the entry
// with that id, atomically. When the meta hash is missing (first use, or
// Redis lost its data) the script starts a new epoch at seq 1. Since is
// one script too (XRANGE after a seq and the position, atomically); it
// writes nothing, so subscribing to a channel nobody publishes on stores
// nothing: the epoch it reports for an empty channel is kept on the node
// (while it serves the channel and reads no entry of it) and the node's
// own first publication keeps it.
//
// # Delivery
//
// There are no consumer groups and no per-client consumers. Per Redis
// server a node runs Config.Tailers tailers (default 4), each on a
// dedicated connection, channels spread over them by a hash of the name:
// a tailer issues one XREAD BLOCK over the streams of all its channels
// (messages and presence events), each from the last id it delivered. When the
// subscribed set changes, the read is interrupted with CLIENT UNBLOCK from
// the command connection and re-issued with the new set. Subscribe reads
// the channel's position first, so the tailer starts right after it: every
// publication with a later seq is delivered.
//
// A channel's tailer is the only goroutine that hands it to the Handler, so calls for one channel never overlap and come in seq order.
// The cursor is the last delivered seq, so a reconnect resumes where it
// stopped, with no gap. On reconnect and every Config.ValidateInterval the
// tailer compares each channel's epoch and seq in Redis with what it
// delivered: a changed or missing epoch (Redis lost the data, or it
// expired) restarts the channel's cursor at the beginning of the new
// epoch; a seq below what was delivered within the same epoch (an AOF
// that was not fsynced) starts a new epoch, so no (epoch, seq) is ever
// given to two different messages. An entry that does not follow the last
// one delivered (an epoch that changed under the reader) is preceded by
// what XRANGE still holds of the gap.
//
// A tailer that falls more than HistorySize entries behind on a channel
// (the stream is trimmed exactly) skips the trimmed entries: the Handler
// sees the jump in seqs.
//
// # Presence
//
// The redis backend's design (its scripts, announcing on the events stream
// instead of pub/sub): every presence script first prunes expired members
// and announces each leave, atomically, so a leave is announced once; each
// node also prunes the channels it serves when a member is due to expire
// (join events carry the TTL), so a crashed node's members leave within
// their TTL plus Config.PruneInterval.
//
// # Redis unreachable
//
// There is no outbox: Publish, Since, Subscribe and presence calls fail
// with an error wrapping brokers.ErrUnavailable. The tailer reconnects with
// exponential backoff and resumes from its cursors. A Publish whose reply
// was lost may have been applied (it is not retried, so never applied
// twice). With AOF appendfsync always nothing acked is lost across a Redis
// crash.
//
// # Sharding
//
// With several Config.Addrs, channels are spread by jump consistent
// hashing of the name, as in the redis backend; each server has its own
// command client and tailers. Redis Cluster and Sentinel are not supported.
//
// # Lifecycle
//
// New only stores the configuration. Start connects every server (failing
// when one cannot be reached) and starts three goroutines per tailer
// (tailer, kicker, pruner). Close stops them and waits; no Handler method
// runs after Close returns.
package redisstream
