package natsbase

import (
	"sync"
	"sync/atomic"
)

// Outbox is a bounded FIFO of publishes accepted while the server could not
// take them. It only stores; the broker decides what an entry means and
// when it is flushed. Safe for concurrent use; a broker that needs a push
// to be atomic with its own bookkeeping serializes its pushes itself.
type Outbox[T any] struct {
	mu    sync.Mutex
	items []T
	head  int
	limit int
	n     atomic.Int64 // entries, readable without the lock
}

// NewOutbox returns an outbox holding at most limit entries (0: none).
func NewOutbox[T any](limit int) *Outbox[T] {
	return &Outbox[T]{limit: max(limit, 0)}
}

// Len is the number of entries.
func (o *Outbox[T]) Len() int { return int(o.n.Load()) }

// lenLocked is the number of entries (mu held).
func (o *Outbox[T]) lenLocked() int { return len(o.items) - o.head }

// Full reports whether a Push would be refused now. A broker that
// serializes its pushes can check it before doing what must precede the
// push (nothing else grows the outbox meanwhile).
func (o *Outbox[T]) Full() bool { return o.Len() >= o.limit }

// Push appends v; false when the outbox is full.
func (o *Outbox[T]) Push(v T) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lenLocked() >= o.limit {
		return false
	}
	if o.head > 0 && o.head >= len(o.items)/2 {
		n := copy(o.items, o.items[o.head:])
		clear(o.items[n:])
		o.items = o.items[:n]
		o.head = 0
	}
	o.items = append(o.items, v)
	o.n.Add(1)
	return true
}

// Peek returns the oldest entry without removing it.
func (o *Outbox[T]) Peek() (T, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var zero T
	if o.lenLocked() == 0 {
		return zero, false
	}
	return o.items[o.head], true
}

// Replace swaps the oldest entry for v (the flusher records progress).
func (o *Outbox[T]) Replace(v T) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lenLocked() > 0 {
		o.items[o.head] = v
	}
}

// Pop removes the oldest entry.
func (o *Outbox[T]) Pop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lenLocked() == 0 {
		return
	}
	var zero T
	o.items[o.head] = zero
	o.head++
	o.n.Add(-1)
	if o.head == len(o.items) {
		o.items, o.head = o.items[:0], 0
	}
}
