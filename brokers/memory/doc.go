// Package memory is the single-node, in-process broker backend. It keeps
// everything in the process's memory: nothing survives a restart and nothing
// is shared with other nodes, so it suits one gateway instance, development
// and tests.
//
// # Guarantees
//
// Publish gives a channel's next seq (1-based, +1 per message), appends the
// message to the channel's history and, when this node subscribed the
// channel, hands it to the Handler, all in one step under the channel's lock.
// So publications of one channel are delivered in seq order, handler calls
// for one channel never overlap, and a Since called after Subscribe returned
// never leaves a gap before the first live publication.
//
// Presence lists are kept per channel, keyed by Member.Client. Join announces
// a client not yet listed, Leave one that was, and a member not refreshed
// within its TTL is removed by the sweeper (within a third of the shortest
// TTL in use, at most a second) and announced as a Leave. Like publications,
// presence events reach the Handler only for channels this node subscribed.
//
// History keeps the last Config.HistorySize publications of each channel and
// drops those older than Config.HistoryTTL. A channel that has had no
// publication for HistoryTTL, is not subscribed and has no presence member is
// forgotten; its next use creates a new epoch and seq restarts at 1.
//
// # Lifecycle
//
// New returns a Broker that refuses every call with an error wrapping
// brokers.ErrClosed until Start. Start stores the Handler and starts one
// background goroutine that expires presence members (emitting Leave) and
// forgets idle channels. Close stops that goroutine, waits for it and for any
// call that is delivering to the Handler, and from then on every call fails
// with brokers.ErrClosed. No Handler method is called after Close returns.
//
// # Goroutine safety
//
// All methods are safe for concurrent use. Channel state is kept in 64
// shards keyed by an FNV-1a hash of the channel name, each channel with its
// own lock, so different channels rarely contend. Handler methods are called
// with the channel's lock held: they must not block and must not call back
// into the Broker (as brokers.Handler requires).
//
// # Buffer ownership
//
// Publish copies data; the caller may reuse its buffer as soon as Publish
// returns. The stored copy is never modified afterwards, and both the Data
// given to the Handler and the Data returned by Since alias it: treat them as
// read-only. Channel names and member ids are copied when first stored.
package memory
