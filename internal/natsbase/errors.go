package natsbase

import (
	"fmt"

	"github.com/syncgate/syncgate/brokers"
)

// Wrap names the backend, operation and channel in err, and marks
// connection trouble and a missing stream (IsOutage) as
// brokers.ErrUnavailable. nil stays nil.
func Wrap(backend, op, ch string, err error) error {
	if err == nil {
		return nil
	}
	if IsOutage(err) {
		return fmt.Errorf("%s: %s %s: %w: %w", backend, op, ch, brokers.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %s %s: %w", backend, op, ch, err)
}
