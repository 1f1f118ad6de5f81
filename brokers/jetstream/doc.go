// Package jetstream is the NATS JetStream broker backend: every channel's
// publications are a log in one stream, so channels have contiguous seqs,
// epochs and history for catch-up, across any number of nodes.
//
// # The stream
//
// One stream (Config.Stream, default SG_HISTORY) holds every channel on
// subject <prefix>.h.<token> (the token encodes the channel name
// injectively, see the natsbase package), with MaxMsgsPerSubject =
// HistorySize and MaxAge = HistoryTTL, file storage by default. Each
// message carries its channel seq and epoch in headers (Sg-Seq, Sg-Epoch).
//
// # Seq and epoch
//
// Publish is a conditional write (Nats-Expected-Last-Subject-Sequence = the
// stream seq of the channel's last message, read once and then remembered):
// the stream leader stores a message only if nothing was stored on the
// channel since, so the messages of a channel in stream order carry seqs
// n, n+1, n+2... even with publishers on many nodes, and a node that loses
// a race rereads the last message and retries. The epoch is copied from
// message to message; a channel with no stored message (never used, or
// silent for HistoryTTL so that every message aged out, or its stream lost
// with its server's memory) begins a new random epoch at seq 1. Since, on
// an empty channel, stores nothing (a subscriber to a channel nobody
// publishes on costs the stream nothing): the epoch it returns lives on
// the nodes serving the channel, which hand it to each other on request,
// until they see anything stored on it; the first publication keeps it
// (see empty.go). Epoch markers (seq 0) that older versions stored are
// still read.
//
// # Streams deleted under the node
//
// The node asks for both streams every Config.CheckEvery, and at once when
// a request finds one missing; it re-creates what is gone (its history is
// lost: channels start new epochs), notices a history stream created anew
// elsewhere by its creation time, and then checks every subscribed channel
// against the new stream. Ping (readiness) fails while a stream is missing
// or publishes wait in the outbox.
//
// # Stream leader changes
//
// While a replicated stream elects a leader (its leader stepped down, or
// its server died: seconds), a publish finds nobody to store it (no
// responders) and joins the outbox, and a JetStream API request sent then
// is dropped unanswered. The flusher, which alone flushes the outbox, so
// never waits long on one: a stream check gets 250 ms, doubled after each
// failed one up to 8 s, and the stream's election advisory ends the check
// in progress, as it ends the flusher's other waits (a flushed write, a
// sweep's read); a write still waiting for its ack when the history stream
// elects a leader (the old one never answers it) is resolved at once like
// an interrupted one. So every node delivers again within moments of the
// election (TestLeaderStepdownResume, TestLeaderKilledResume).
//
// # Delivery
//
// The stream republishes each stored message on <prefix>.r.<token> with its
// stream seq and the subject's previous stream seq. A node subscribed to a
// channel holds one core NATS subscription there (no consumer per channel
// or per client) and hands messages on in stream order; a message whose
// previous seq is not the last one the node accounted for reveals a gap,
// which the node fills from the stream with a direct get before going on
// (from the stream leader when the replica answering direct gets lags).
// After a reconnect, an outage of the stream, or the election of a new
// stream leader (which does not republish what its predecessor stored but
// had not yet republished), every subscribed channel is checked against
// the stream and what was stored meanwhile is delivered. Subscribe reads the channel's
// last message from the stream leader after the server has the
// subscription, so every message stored later is delivered.
//
// # Outages
//
// While the server or the stream is unreachable, Publish delivers the
// publication to this node's subscribers at once, with an outage position
// (seq 1, 2... in a provisional epoch of its own that no history serves,
// brokers.ProvisionalEpoch: it names the last position delivered here), queues
// it in a bounded outbox (Config.OutboxSize; past it Publish fails with
// brokers.ErrUnavailable) and returns that position. When the server is back
// the outbox is stored in order, each publication exactly once (an
// interrupted conditional write is resolved by reading what follows its
// expected seq, and its id tells whether it is the one stored; nothing
// there proves nothing, as the write may still be in flight at the stream
// leader, so it stays unresolved until a message follows; and its id is
// its Nats-Msg-Id too, so the stream does not store a second write of it
// within dupWindow), and
// delivered again under its real position, with Publication.Was (header
// Sg-Was, stored with it) naming the outage position, so a client that
// applied it does not apply it again, and a client holding an outage
// position can resume from the position the epoch names. A node's Publish
// calls of one channel go one at a time, in call order (pubState.order):
// one still waiting for its ack when the outage starts is not overtaken by
// the later ones, in the outbox nor on this node: acked, it is delivered
// here before them (from a copy kept, when the stream's copy is late); its
// outcome unknown, it is delivered here under its outage position before
// them, and a first write of it stored without Sg-Was still comes with
// Was on this node (see inflight.go).
// Subscribe and Since fail with brokers.ErrUnavailable during an outage.
//
// # Presence
//
// Presence lives in a second stream, one entry per member with a
// per-message TTL; see natsbase.Presence.
//
// # Lifecycle
//
// New -> Start -> calls -> Close. Start connects (after starting the
// embedded server when Config.URL is empty), creates or updates the streams
// and starts Config.Shards delivery goroutines and one flusher (outbox,
// recovery after reconnects). Close stops them, closes the connection and
// shuts the embedded server down; no Handler call runs after Close returns.
//
// # Goroutine safety and buffers
//
// All methods are safe for concurrent use. Handler calls for one channel
// are made one at a time, under the channel's lock. The Data handed to the
// Handler is valid only during the call; Since returns data the caller owns.
package jetstream
