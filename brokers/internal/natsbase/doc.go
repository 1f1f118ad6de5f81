// Package natsbase holds what the nats and jetstream broker backends share:
// the channel-name-to-subject encoding, the embedded server, the client
// connection with its reconnect policy, the delivery goroutines, the
// outbox, raw JetStream API calls, and presence kept in a JetStream stream.
//
// # Subjects
//
// Every channel, client id and user id becomes exactly one subject token
// (Token): characters that are safe in a token stand for themselves, any
// other byte is escaped as ~XX. The encoding is injective, so "a.b" and the
// tokens "a", "b" can never collide, and no token is a wildcard.
//
// # Credentials
//
// The embedded server never accepts an anonymous client or route:
// ServerOptions refuses a ServerConfig without User/Password or Token, and
// Node.Start, given none for a loopback-only server without a cluster,
// makes a random token (RandomToken) that only its own in-process
// connection knows. Routes log in with the same credential. ClientAuth is
// how a node logs in to servers it dials by URL. No credential is logged
// or put in an error: URLs go through RedactURLs.
//
// # Goroutine safety
//
// Presence, Outbox and Shards are safe for concurrent use. EventFilter is
// not: its owner serializes calls.
package natsbase
