// Package natsserver starts the embedded NATS server (with JetStream) that
// the nats and jetstream backends run when no URL is configured, and that
// the bench tool runs as a separate process.
//
// The server never accepts an anonymous client or route: ServerOptions
// refuses a ServerConfig without User/Password or Token, and routes log in
// with the same credential. RandomToken makes a credential for a server
// only this process talks to.
package natsserver
