// Package nats is the core NATS broker backend: publications travel as
// plain NATS messages, at most once, with no history.
//
// # Guarantees
//
// A publication on channel ch is one message on subject <prefix>.c.<token>,
// where the token encodes ch injectively (see the natsbase package). Each
// node holds one subscription per channel it serves, whatever its number of
// clients. Delivery is at most once: a message published while a node is
// disconnected, or dropped because the node's delivery queue was full (a
// slow consumer, logged), is lost to that node. The server delivers the
// messages of one publisher in order; messages of different publishers have
// no order number. Publish returns a zero Position: no seq, no epoch. The
// backend does not implement brokers.History, so the gateway answers `sub`
// with no epoch and `recovered: false`.
//
// Presence is kept in a JetStream stream when the server has JetStream (the
// embedded server does): see natsbase.Presence. Without JetStream presence
// calls fail with brokers.ErrUnavailable.
//
// # Outages
//
// While the connection is down (or earlier outage publishes still wait),
// Publish delivers the publication to this node's subscribers at once and
// queues it in a bounded outbox (Config.OutboxSize); past the bound Publish
// fails with brokers.ErrUnavailable. When the connection is back the outbox
// is sent in order, marked so that this node does not deliver it twice.
// Other nodes get those messages late and unordered relative to what was
// published meanwhile.
//
// # Lifecycle
//
// New -> Start -> calls -> Close. Start connects (after starting the
// embedded server when Config.URL is empty) and starts Config.Shards
// delivery goroutines and one outbox flusher. Close stops them, closes the
// connection and shuts the embedded server down; no Handler call runs after
// Close returns.
//
// # Goroutine safety and buffers
//
// All methods are safe for concurrent use. Handler calls for one channel
// come from one goroutine at a time. Publish copies data only when it
// queues it; the Data handed to the Handler is valid only during the call.
package nats
