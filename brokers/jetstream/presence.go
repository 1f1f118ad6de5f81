package jetstream

import (
	"context"
	"fmt"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/natsbase"
)

// Join implements brokers.Presence.
func (b *Broker) Join(ctx context.Context, ch string, m brokers.Member, ttl time.Duration) error {
	if err := b.presenceCheck(ctx); err != nil {
		return fmt.Errorf("jetstream: join %s: %w", ch, err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	return wrap("join", ch, b.pres.Join(ctx, ch, m, ttl))
}

// Leave implements brokers.Presence.
func (b *Broker) Leave(ctx context.Context, ch string, m brokers.Member) error {
	if err := b.presenceCheck(ctx); err != nil {
		return fmt.Errorf("jetstream: leave %s: %w", ch, err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	return wrap("leave", ch, b.pres.Leave(ctx, ch, m))
}

// Refresh implements brokers.Presence.
func (b *Broker) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if err := b.presenceCheck(ctx); err != nil {
		return fmt.Errorf("jetstream: refresh %s: %w", ch, err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	return wrap("refresh", ch, b.pres.Refresh(ctx, ch, ms, ttl))
}

// Members implements brokers.Presence.
func (b *Broker) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	if err := b.presenceCheck(ctx); err != nil {
		return nil, fmt.Errorf("jetstream: members %s: %w", ch, err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	ms, err := b.pres.Members(ctx, ch)
	return ms, wrap("members", ch, err)
}

func (b *Broker) presenceCheck(ctx context.Context) error { return b.check(ctx) }

func wrap(op, ch string, err error) error { return natsbase.Wrap("jetstream", op, ch, err) }
