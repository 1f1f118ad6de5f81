package natsbase

import (
	"errors"
	"fmt"

	"github.com/syncgate/syncgate/brokers"
)

// ErrAuth: the server refused the node's credential (or the node had
// none). Start fails with it rather than retrying.
var ErrAuth = errors.New("nats: the server refused this node's credential (wrong or missing)")

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
