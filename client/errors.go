package client

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("client: closed")
	// ErrConnectionLost: the connection dropped before the reply came. A
	// Publish that fails with it may or may not have been published.
	ErrConnectionLost = errors.New("client: connection lost")
	// ErrUnsubscribed ends a Subscription after Unsubscribe.
	ErrUnsubscribed = errors.New("client: unsubscribed")
	// ErrUnsubscribedByServer ends a Subscription the server ended (the
	// application backend's server API unsubscribe); it wraps
	// ErrUnsubscribed. The channel is not resubscribed on reconnect.
	ErrUnsubscribedByServer = fmt.Errorf("%w by the server", ErrUnsubscribed)
	// ErrAlreadySubscribed: Subscribe on a channel this Client is
	// subscribed to.
	ErrAlreadySubscribed = errors.New("client: already subscribed")
	// ErrProtocol: the server sent a line that is not one JSON object.
	// The client drops that connection (nothing of the frame is used) and
	// reconnects; OnState sees an error wrapping it.
	ErrProtocol = errors.New("client: protocol error")
)

// ServerError is an `error` reply: Code is one of the protocol's codes
// (bad_request, unauthorized, forbidden, too_large, rate_limited,
// unavailable, internal).
type ServerError struct {
	Code    string
	Message string
}

func (e *ServerError) Error() string { return fmt.Sprintf("client: %s: %s", e.Code, e.Message) }

// DisconnectError is a `disconnect` from the server. With Reconnect false
// the client stops (Close is still needed to release it); otherwise it
// reconnects and OnState sees this as the reason.
type DisconnectError struct {
	Code      string
	Reason    string
	Reconnect bool
}

func (e *DisconnectError) Error() string {
	return fmt.Sprintf("client: disconnected by the server: %s (%s)", e.Code, e.Reason)
}
