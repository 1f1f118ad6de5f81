package brokertest

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers"
)

// testFeatures: the declared optional capabilities are exactly the
// implemented interfaces, so Features (and the docs built on them) cannot
// drift from the code.
func (h *harness) testFeatures(t *testing.T) {
	b := h.New(t)
	defer b.Close()
	_, hasHistory := b.(brokers.History)
	_, hasPresence := b.(brokers.Presence)
	_, hasPinger := b.(brokers.Pinger)
	_, hasSnapshots := b.(brokers.Snapshots)
	for _, c := range []struct {
		name            string
		declared, found bool
	}{
		{"History", h.Features.History, hasHistory},
		{"Presence", h.Features.Presence, hasPresence},
		{"Pinger", h.Features.Pinger, hasPinger},
		{"Snapshots", h.Features.Snapshots, hasSnapshots},
	} {
		if c.declared != c.found {
			t.Errorf("Features.%s = %v, but %T implementing brokers.%s is %v", c.name, c.declared, b, c.name, c.found)
		}
	}
	if h.Features.Epoch && !h.Features.History {
		t.Errorf("Features.Epoch without Features.History: an epoch names a history")
	}
}

// testBeforeStart: calls before Start fail with brokers.ErrClosed; Start
// then works.
func (h *harness) testBeforeStart(t *testing.T) {
	b := h.New(t)
	ch := h.channel(t, "a")
	if _, err := b.Publish(t.Context(), ch, []byte("x")); !isClosed(err) {
		t.Errorf("Publish before Start: %v, want brokers.ErrClosed", err)
	}
	if err := b.Subscribe(t.Context(), ch); !isClosed(err) {
		t.Errorf("Subscribe before Start: %v, want brokers.ErrClosed", err)
	}
	n := h.start(t, b)[0]
	subscribe(t, n, ch)
	publish(t, n, ch, []byte("x"))
	n.rec.WaitPublications(t, ch, 1, h.Wait)
}

// testClose: Ping works while running; Close returns nil, leaves no
// goroutine, stops delivery (the Recorder flags a later call), and every
// later call fails with brokers.ErrClosed.
func (h *harness) testClose(t *testing.T) {
	b := h.New(t)
	leakOpts := append([]goleak.Option{goleak.IgnoreCurrent()}, h.LeakOptions...)
	rec := NewRecorder()
	if err := b.Start(t.Context(), rec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	ctx := t.Context()
	ch := h.channel(t, "a")
	if err := b.Subscribe(ctx, ch); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if _, err := b.Publish(ctx, ch, []byte("x")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if p, ok := b.(brokers.Presence); ok {
		if err := p.Join(ctx, ch, brokers.Member{User: "u", Client: "c"}, time.Minute); err != nil {
			t.Fatalf("Join: %v", err)
		}
	}
	rec.WaitPublications(t, ch, 1, h.Wait)
	if p, ok := b.(brokers.Pinger); ok {
		if err := p.Ping(ctx); err != nil {
			t.Errorf("Ping while running: %v", err)
		}
	}

	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	rec.MarkClosed()
	goleak.VerifyNone(t, leakOpts...)

	if _, err := b.Publish(ctx, ch, []byte("y")); !isClosed(err) {
		t.Errorf("Publish after Close: %v, want brokers.ErrClosed", err)
	}
	if err := b.Subscribe(ctx, ch); !isClosed(err) {
		t.Errorf("Subscribe after Close: %v, want brokers.ErrClosed", err)
	}
	if err := b.Unsubscribe(ctx, ch); !isClosed(err) {
		t.Errorf("Unsubscribe after Close: %v, want brokers.ErrClosed", err)
	}
	if hs, ok := b.(brokers.History); ok {
		if _, _, err := hs.Since(ctx, ch, 0, 10); !isClosed(err) {
			t.Errorf("Since after Close: %v, want brokers.ErrClosed", err)
		}
	}
	if p, ok := b.(brokers.Presence); ok {
		m := brokers.Member{User: "u", Client: "c"}
		if err := p.Join(ctx, ch, m, time.Minute); !isClosed(err) {
			t.Errorf("Join after Close: %v, want brokers.ErrClosed", err)
		}
		if err := p.Leave(ctx, ch, m); !isClosed(err) {
			t.Errorf("Leave after Close: %v, want brokers.ErrClosed", err)
		}
		if err := p.Refresh(ctx, ch, []brokers.Member{m}, time.Minute); !isClosed(err) {
			t.Errorf("Refresh after Close: %v, want brokers.ErrClosed", err)
		}
		if _, err := p.Members(ctx, ch); !isClosed(err) {
			t.Errorf("Members after Close: %v, want brokers.ErrClosed", err)
		}
	}
	if p, ok := b.(brokers.Pinger); ok {
		if err := p.Ping(ctx); !isClosed(err) {
			t.Errorf("Ping after Close: %v, want brokers.ErrClosed", err)
		}
	}
	if err := b.Start(ctx, NewRecorder()); !isClosed(err) {
		t.Errorf("Start after Close: %v, want brokers.ErrClosed", err)
	}
	if err := b.Close(); err != nil && !isClosed(err) {
		t.Errorf("second Close: %v, want nil or brokers.ErrClosed", err)
	}
	if err := rec.Err(); err != nil {
		t.Error(err)
	}
}
