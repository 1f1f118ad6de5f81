// Package multinode holds end-to-end tests of several gateway nodes in one
// process sharing a NATS server or cluster: WebSocket clients on different
// nodes, cross-node delivery, seq contiguity, catch-up, presence, and what
// a node crash does. It has no code of its own.
package multinode
