// Package natsbase holds what the nats and jetstream broker backends share:
// the client connection with its reconnect policy, the delivery goroutines, the
// outbox, raw JetStream API calls, and presence kept in a JetStream stream.
//
// # How a backend uses it
//
// By composition: each backend's Broker is its own type and holds a *Node,
// an *Outbox of its own entries and whatever else it needs, and calls
// them. Node is opaque: lifecycle, embedded server, connection, requests
// in flight, delivery shards, subscribed channels and presence, behind
// methods that keep its lock rules (stated on Node). The backend starts it
// in steps (Open, its own setup on the returned connection, Run, Go; see
// Node) rather than handing it closures to call, so the backend's Start
// reads top to bottom and its own invariants (a channel's lock, the
// outbox's meaning, the flusher's state) are stated and kept in the
// backend. Besides the functions a backend passes to a call and that run
// before it returns (Register's constructor, DeliverLocal's delivery),
// natsbase calls into a backend in two places only, each with its rule:
// the handle function given to NewShards (on a shard goroutine, one
// message at a time per queue) and Channel.Deactivate (from Close, with no
// Node lock held). What a connection wants its owner to know
// (lost, back, messages dropped) arrives as a ConnEvent that wakes the
// backend's flusher (Kicked), which reads the connection's counters
// (Stats().Reconnects, Conn.Dropped) itself.
//
// Channel names become subject tokens through internal/natsname, and the
// embedded server is internal/natsserver's; both live outside brokers/
// because the change feed and the bench tool use them too.
//
// # Credentials
//
// The embedded server never accepts an anonymous client or route:
// natsserver.ServerOptions refuses a ServerConfig without User/Password or
// Token, and Node.Open, given none for a loopback-only server without a cluster,
// makes a random token (natsserver.RandomToken) that only its own in-process
// connection knows. Routes log in with the same credential. ClientAuth is
// how a node logs in to servers it dials by URL. No credential is logged
// or put in an error: URLs go through RedactURLs.
//
// # Goroutine safety
//
// Node, Presence, Outbox and Shards are safe for concurrent use.
// EventFilter is not: its owner serializes calls.
package natsbase
