// Package redis is the Redis broker backend: several gateway nodes that
// share Redis behave as one. A publication on one node reaches the
// subscribers of every node with the same seq and epoch, history written
// through one node is read through any, and presence is shared.
//
// # Data model
//
// Every key of a channel ch carries the hash tag {ch} (see keys.go), so
// all of a channel lives on one Redis server, or one cluster slot:
//
//   - a hash <prefix>{ch}:m holds the epoch (e) and the last seq (s);
//   - a stream <prefix>{ch}:h holds the history: entry id <seq>-0, trimmed
//     to exactly Config.HistorySize entries (MAXLEN, not ~), expiring
//     Config.HistoryTTL after the last publication;
//   - the pub/sub channel <prefix>{ch} carries publications and presence
//     events;
//   - a hash <prefix>{ch}:p (client -> user) and a sorted set
//     <prefix>{ch}:x (client -> expiry) hold presence.
//
// Publish is one Lua script (EVALSHA, reloaded on NOSCRIPT): it increments
// the seq, appends to the stream, and PUBLISHes "<epoch>, <seq>, data" in
// one payload, atomically. When the meta hash is missing (first use, or
// Redis lost its data: a restart without persistence, an expired meta
// key), the script creates a new epoch and seq restarts at 1, so a client
// holding an old position gets recovered:false, never wrong data. Since
// is one script too: the history after a seq and the current position,
// read atomically, writing nothing (a subscriber to a channel nobody
// publishes on costs Redis nothing). The epoch it reports for a channel
// without meta hash is kept on the node (chanState.empty) and given to the
// node's first publication there.
//
// # Connections
//
// A node holds, per shard (Redis server, or cluster master), a command
// client and one pub/sub connection that multiplexes all its channels.
// SUBSCRIBE and UNSUBSCRIBE are batched: requests made while a batch is
// in flight go out together, many channels per command. Publications are
// batched too: one pipeline per shard is in flight at a time, and what
// accumulates meanwhile goes out in the next one, in order.
//
// The node delivers each channel to the Handler contiguously, in seq
// order, from one goroutine at a time (the shard's reader, or its filler,
// under the channel's lock). When a live publication does not follow the
// last one delivered (a lost pub/sub message, a reconnect, an epoch
// change), live publications are buffered while the gap is read from
// history, then delivered after it.
//
// # Presence
//
// Join, Leave and Refresh are scripts that first prune members whose
// expiry passed, publishing a leave for each; being atomic, a leave is
// published once however many nodes prune at the same time. Every node
// also prunes the channels it subscribed when a member is due to expire
// (it learns expiries from join events and its own calls), so the members
// of a node that crashed leave within their TTL, plus a filler tick (at
// most 250ms), with a leave on every node.
//
// # Redis unreachable
//
// When a shard's pub/sub connection fails, its probe does not come back
// (a connection to a demoted master stays open but hears nothing), or a
// publish fails with a connection error, the shard goes down:
//
//   - Publications are not dropped: they wait in an outbox bounded by
//     Config.OutboxSize (per node); past it Publish fails with an error
//     wrapping brokers.ErrUnavailable. Each is delivered at once to this
//     node's subscribers under a node-local epoch (a provisional epoch,
//     brokers.ProvisionalEpoch, naming the last real position delivered
//     here; a new one per channel per outage) with its own
//     seqs 1, 2, 3..., and Publish returns that local position. Other
//     nodes do not see these until Redis is back. A publication whose
//     attempt went unanswered (it may be in Redis already, without its
//     local position) is not delivered locally, and neither are the
//     channel's later ones for the rest of the outage (they would
//     overtake it): they all reach this node's subscribers once Redis is
//     back, in order, under their real positions. A publication Redis
//     refused with an error reply (TRYAGAIN, CLUSTERDOWN...) was not
//     applied, so it is delivered locally as usual.
//   - Since fails with brokers.ErrUnavailable; Subscribe succeeds (the
//     subscription is made at reconnect); presence calls fail.
//   - The node reconnects with jittered exponential backoff, subscribes
//     every channel again, proves with a probe published to itself that
//     the connection receives, then replays the outbox in order (a
//     per-node counter stored with each channel makes the replay of
//     publications whose first attempt went unanswered exactly-once), and
//     fills every channel from history after the last seq it delivered, so
//     the subscribers of every node get what they missed without
//     reconnecting. Publications made during the replay wait their turn
//     and get real positions.
//
// So a subscriber on the node that lost Redis sees: the real epoch up to
// seq N, then the local epoch 1..k (messages published on this node during
// the outage), then the real epoch again from N+1, where the local
// messages reappear with their real seqs among those of other nodes, each
// with Publication.Was set to its local position (the publish script
// stores it with the history entry and publishes it, see scripts.go), so a
// client does not apply it twice. A new epoch resets the gateway's dedupe
// watermark (brokers.Handler); within each epoch seqs are contiguous. A
// node that did not lose Redis never sees a local epoch.
//
// # Waiting for replicas
//
// With Config.WaitReplicas, every publish pipeline ends with a WAIT for
// that many replicas. Its publications are acked only when WAIT counts
// them all; otherwise their outcome is unknown (the master has them, a
// failover may lose them) and they are handled like an unanswered
// attempt: the shard goes down, the outbox keeps them and replays them
// until the WAIT that follows the replay succeeds (the publish script
// rewrites the node's counter when it finds a publication applied
// already, so the replay is a write the WAIT covers). A master that acked
// a publication therefore had it on a replica, and a failover to that
// replica keeps it. A master paused or cut off past the cluster's node
// timeout has a promoted replica that no longer follows it: its WAITs
// count none, and what it took is replayed on the new master.
//
// A publish pipeline carries a deadline in the server's clock (the
// shard's offset to it is read with TIME at connect): the node stops
// waiting for the reply after Config.ReadTimeout, and a script that runs
// later (a paused master resumed, commands held back by the network) is
// refused with SGLATE, so that what the node replays elsewhere is not also
// stored and fanned out by the server it gave up on.
//
// When a fill finds the channel's seq in Redis below what this node
// delivered (writes lost in a failover to a lagging replica, or an AOF
// that was not fsynced), it starts a new epoch for the channel, so no
// client ever gets two different messages under one (epoch, seq).
//
// # Sharding, Cluster, Sentinel
//
// With several Config.Addrs, channels are spread by jump consistent
// hashing of the name. With Config.Cluster, keys share a slot by hash tag
// and pub/sub is sharded (SSUBSCRIBE/SPUBLISH, Redis 7): one shard, so one
// command client and one pub/sub connection, per master. The node follows
// the cluster's topology (topology.go): a shard that goes down (its
// connection dropped, its shard channels dropped by a master that lost
// their slot, a MOVED reply) reads the slot map before it reconnects; a
// failover points the shard at the new master, and slots that moved
// (resharding, a new master) take their channels, pending and outbox
// publications along to the shard of their new master, which subscribes
// and fills them. While a slot migrates, its publications get TRYAGAIN or
// ASK: the shard goes down and they wait in the outbox until the slot has
// its new master. With Config.SentinelMaster, the node follows the
// master through Sentinel; after a failover it reconnects, and the probe
// guarantees it does not stay on a demoted master.
//
// # Lifecycle
//
// New only stores the configuration. Start connects every shard (it fails
// when one cannot be reached), loads the scripts and starts four
// goroutines per shard (reader, writer, subscription control, filler).
// Close stops them and waits for them; publications still in the outbox
// are dropped, and no Handler method runs after Close returns.
//
// # Goroutine safety and buffers
//
// All methods are safe for concurrent use. Publish copies data. The Data
// handed to the Handler is valid only until the call returns; Since
// returns fresh copies.
package redis
