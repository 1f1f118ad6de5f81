package nats

import (
	"context"
	"fmt"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/natsbase"
)

// errNoPresence: the server has no JetStream to keep presence in.
var errNoPresence = fmt.Errorf("%w: presence needs JetStream on the NATS server", brokers.ErrUnavailable)

// Join implements brokers.Presence.
func (b *Broker) Join(ctx context.Context, ch string, m brokers.Member, ttl time.Duration) error {
	if err := b.presenceCheck(ctx); err != nil {
		return fmt.Errorf("nats: join %s: %w", ch, err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	return wrap("join", ch, b.pres.Join(ctx, ch, m, ttl))
}

// Leave implements brokers.Presence.
func (b *Broker) Leave(ctx context.Context, ch string, m brokers.Member) error {
	if err := b.presenceCheck(ctx); err != nil {
		return fmt.Errorf("nats: leave %s: %w", ch, err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	return wrap("leave", ch, b.pres.Leave(ctx, ch, m))
}

// Refresh implements brokers.Presence.
func (b *Broker) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if err := b.presenceCheck(ctx); err != nil {
		return fmt.Errorf("nats: refresh %s: %w", ch, err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	return wrap("refresh", ch, b.pres.Refresh(ctx, ch, ms, ttl))
}

// Members implements brokers.Presence.
func (b *Broker) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	if err := b.presenceCheck(ctx); err != nil {
		return nil, fmt.Errorf("nats: members %s: %w", ch, err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	ms, err := b.pres.Members(ctx, ch)
	return ms, wrap("members", ch, err)
}

func (b *Broker) presenceCheck(ctx context.Context) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if b.pres == nil {
		return errNoPresence
	}
	return nil
}

func wrap(op, ch string, err error) error { return natsbase.Wrap("nats", op, ch, err) }
