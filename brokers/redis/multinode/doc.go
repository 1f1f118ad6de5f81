// Package multinode tests syncgate at the gateway level with several
// gateway nodes sharing Redis: real gateway.Server instances, each with its
// own redis.Broker, and real WebSocket clients. It has no non-test code.
package multinode
