// Package client is a Go client for syncgate: the same behaviour as the
// browser client (web/client.js) over a WebSocket.
//
// # Lifecycle
//
// [Dial] opens a connection and sends `connect`; from then on the Client
// keeps one connection open until [Client.Close]. When the connection
// drops (network, node restart, a `disconnect` from the server that allows
// reconnecting) it reconnects with jittered exponential backoff
// (Options.MinBackoff to Options.MaxBackoff), resubscribes every channel
// with `since` = the last seq and epoch it delivered, and delivers the
// missed messages before live ones: a [Subscription] sees each seq once,
// in order, with no gap while the server's history holds them. When it does
// not (`recovered: false`), the subscription gets a [Reset] event: reload
// the state from your source of truth.
//
// The client sends `ping` at the interval the server asks for (`connected.
// ping`) and treats a missing `pong` as a dead connection. With
// Options.TokenFunc it renews its token before `exp` (the `refresh` op) and
// fetches a new one after `token_expired`.
//
// # Goroutines and safety
//
// Every method is safe for concurrent use. A Client runs two goroutines
// while connected (a reader and a supervisor that pings and reconnects);
// Close stops both and returns after they have exited.
//
// Commands made while the client is reconnecting wait for the connection
// (bounded by their ctx). A command in flight when a connection drops fails
// with [ErrConnectionLost]: for Publish that means the message may or may
// not have been published.
//
// # Events
//
// Each Subscription queues its events ([Message], [Join], [Leave],
// [Recovered], [Reset], [Gap]) without bound and hands them out in order
// through [Subscription.Next]; read them promptly. Connection state changes
// go to Options.OnState.
package client
