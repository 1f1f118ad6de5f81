package natsbase

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrDisconnected: the connection was lost while a request waited for its
// answer. Whether the server acted on the request is unknown.
var ErrDisconnected = errors.New("nats: connection lost while waiting for an answer")

// Inflight tracks the contexts of requests in flight so that they all end
// at once when the connection is lost: the client library would let each
// wait for its timeout. Safe for concurrent use.
type Inflight struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]context.CancelCauseFunc
}

// Context derives a request context from ctx: it also ends when life does
// (the broker closed), after DefaultOpTimeout when ctx has no deadline, and
// with cause ErrDisconnected on CancelAll. Call the returned func when the
// request is done.
func (f *Inflight) Context(ctx, life context.Context) (context.Context, func()) {
	var cancelTimeout context.CancelFunc = func() {}
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancelTimeout = context.WithTimeout(ctx, DefaultOpTimeout)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(life, func() { cancel(context.Canceled) })
	f.mu.Lock()
	if f.m == nil {
		f.m = make(map[uint64]context.CancelCauseFunc)
	}
	f.next++
	id := f.next
	f.m[id] = cancel
	f.mu.Unlock()
	return ctx, func() {
		f.mu.Lock()
		delete(f.m, id)
		f.mu.Unlock()
		stop()
		cancel(nil)
		cancelTimeout()
	}
}

// CancelAll ends every tracked context with cause ErrDisconnected.
func (f *Inflight) CancelAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, cancel := range f.m {
		cancel(ErrDisconnected)
	}
}

// cause adds ctx's cancellation cause to err, so errors.Is(err,
// ErrDisconnected) holds for a request cut short by a lost connection.
func cause(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	if c := context.Cause(ctx); c != nil && c != ctx.Err() && !errors.Is(err, c) {
		return fmt.Errorf("%w: %w", err, c)
	}
	return err
}
