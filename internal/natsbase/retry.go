package natsbase

import (
	"context"
	"math/rand/v2"
	"time"
)

// Retry calls f until it succeeds or ctx ends, with jittered backoff from
// 50ms to 1s. It returns f's last error when ctx ends first.
func Retry(ctx context.Context, f func(ctx context.Context) error) error {
	wait := 50 * time.Millisecond
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
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
