// Package gateway is a syncgate node: a WebSocket (and Server-Sent Events)
// server that lets clients subscribe to channels, publish to them, catch up
// on what they missed and see who else is there, on top of one
// brokers.Broker that carries publications between nodes. The wire
// contract is docs/protocol.md; docs/architecture.md walks through the
// files.
//
// # Lifecycle
//
// New(cfg, broker, log) checks cfg (Config: its zero value works, see
// Config.Validate), starts the broker with the server as its Handler and
// owns it from then on. Serve(ln) accepts on a listener until Shutdown;
// it may be called for several listeners. ServeMetrics(ln) serves
// /metrics on a separate listener. Shutdown(ctx) stops accepting, tells
// every client to reconnect elsewhere, waits for the connections to be
// cleaned up (presence left) and closes the broker; when ctx ends first
// the rest are closed at once. After Shutdown, Serve returns
// ErrServerClosed.
//
// # Goroutines
//
// On Linux with server.io: epoll, an idle connection has no goroutine and
// no buffer: one epoll loop hands ready sockets to bounded read and write
// worker pools (poll_linux.go, pool.go). Otherwise (TLS, other systems,
// server.io: goroutine) each connection has a reader goroutine. Every
// goroutine the server starts has an owner that Shutdown waits for.
// Broker deliveries run on the broker's goroutines: the hub encodes each
// publication once and queues the same bytes on every local subscriber,
// never blocking on a client; a client whose queue is full is
// disconnected (slow consumer).
//
// # Goroutine safety and buffers
//
// Server's exported methods are safe for concurrent use. The server API
// methods (PublishFromServer, HistoryFromServer, DisconnectUser, ...) act
// through this node and the broker as a client command would, with the
// same validation; the slices HistoryFromServer returns are the caller's.
// Everything a client or the broker sends is hostile input: bounded,
// deadlined, validated before it is used, and only the server's own
// encoders write the bytes a client receives.
package gateway
