package natsbase

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Retry calls f until it succeeds, fails for good (see Transient) or ctx
// ends, with jittered backoff from 50ms to 1s. It returns f's last error.
func Retry(ctx context.Context, f func(ctx context.Context) error) error {
	wait := 50 * time.Millisecond
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !Transient(err) {
			return err
		}
		t := time.NewTimer(wait/2 + rand.N(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}

// DefaultOpTimeout bounds a call whose context has no deadline (the client
// library needs one for every round trip).
const DefaultOpTimeout = 10 * time.Second

// Transient reports whether a JetStream setup error may go away by itself:
// the connection, an unanswered request, or a cluster still forming (no
// meta leader, peers not known yet).
func Transient(err error) bool {
	if IsConnErr(err) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10008, // JetStream system temporarily unavailable
			10005, // no suitable peers for placement
			10023: // insufficient resources
			return true
		}
		return apiErr.Code == 503
	}
	return false
}
