// Package natsbase holds what the nats and jetstream broker backends share:
// the client connection with its reconnect policy, the delivery goroutines, the
// outbox, raw JetStream API calls, and presence kept in a JetStream stream.
//
// Channel names become subject tokens through internal/natsname, and the
// embedded server is internal/natsserver's; both live outside brokers/
// because the change feed and the bench tool use them too.
//
// # Credentials
//
// The embedded server never accepts an anonymous client or route:
// natsserver.ServerOptions refuses a ServerConfig without User/Password or
// Token, and Node.Start, given none for a loopback-only server without a cluster,
// makes a random token (natsserver.RandomToken) that only its own in-process
// connection knows. Routes log in with the same credential. ClientAuth is
// how a node logs in to servers it dials by URL. No credential is logged
// or put in an error: URLs go through RedactURLs.
//
// # Goroutine safety
//
// Presence, Outbox and Shards are safe for concurrent use. EventFilter is
// not: its owner serializes calls.
package natsbase
