// Package natsname maps syncgate names onto NATS subjects and stream
// names: every channel, client id and user id becomes exactly one subject
// token (Token). Characters that are safe in a token stand for themselves,
// any other byte is escaped as ~XX. The encoding is injective, so "a.b" and
// the tokens "a", "b" can never collide, and no token is a wildcard.
//
// The nats and jetstream backends and the JetStream change feed share it:
// a subject one writes is a subject the others parse.
package natsname
