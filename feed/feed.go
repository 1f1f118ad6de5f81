package feed

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/syncgate/syncgate/brokers"
)

// Errors. Wrapped with context; compare with errors.Is.
var (
	// ErrConfig: the configuration cannot work (the message names the field).
	ErrConfig = errors.New("feed: bad configuration")
	// ErrToken: a resume token this feed did not write.
	ErrToken = errors.New("feed: bad resume token")
	// ErrClosed: Next after Close.
	ErrClosed = errors.New("feed: closed")
)

// Publication is one accepted publication, as the log holds it.
type Publication struct {
	// Ch is the channel; Seq and Epoch its position there (Seq 1-based,
	// gap-free within Epoch).
	Ch    string
	Seq   uint64
	Epoch string
	// Was is the provisional position a node first delivered it under
	// while its broker was unreachable (brokers.Publication.Was); zero
	// otherwise. Clients that saw it under Was do not apply it twice; the
	// feed delivers it once, under Seq/Epoch.
	Was brokers.Position
	// From is the publisher's user ("" for anonymous or server-side
	// publications); Data the publication's JSON, compact, owned by the
	// caller, or, when Binary is set, its bytes (a binary publication,
	// docs/protocol.md "Binary data").
	From   string
	Data   []byte
	Binary bool
	// Token is where the feed resumes after this publication (see
	// Resume.After). Empty on feeds that resume per channel.
	Token string
}

// Resume is where a feed starts. The zero Resume starts at the oldest
// publication the log still holds.
type Resume struct {
	// After is the Token of the last publication the backend persisted
	// (JetStream): the feed starts right after it.
	After string
	// Channel returns the last position the backend persisted for ch,
	// ok false when it has none (Redis Streams, which resume per
	// channel). A feed may call it from its own goroutine, at any time
	// before Close returns.
	Channel func(ch string) (p brokers.Position, ok bool)
}

// Reader is what every feed implements.
type Reader interface {
	// Next blocks until the next publication of a matching channel or
	// until ctx ends. Publications of one channel come in seq order;
	// channels interleave. An error other than ctx's is fatal: Close and
	// open again from the last persisted position.
	Next(ctx context.Context) (Publication, error)
	// Rejected is the number of entries dropped as malformed (see the
	// package documentation).
	Rejected() uint64
	// Close stops the feed; its goroutines have exited on return.
	Close() error
}

// Match reports whether ch matches pattern: '*' stands for any run of
// characters (none included), every other character for itself. "doc:*"
// matches "doc:1" and "doc:", not "docs:1".
func Match(pattern, ch string) bool {
	for {
		star := strings.IndexByte(pattern, '*')
		if star < 0 {
			return pattern == ch
		}
		if !strings.HasPrefix(ch, pattern[:star]) {
			return false
		}
		ch, pattern = ch[star:], pattern[star+1:]
		if pattern == "" {
			return true
		}
		// Try every place the rest can start (patterns are short).
		for i := 0; i <= len(ch); i++ {
			if Match(pattern, ch[i:]) {
				return true
			}
		}
		return false
	}
}

// maxPattern bounds a pattern (a channel name is at most 255 bytes).
const maxPattern = 255

func checkPattern(p string) error {
	if p == "" || len(p) > maxPattern {
		return fmt.Errorf("%w: Pattern must be 1..%d bytes (a channel name, '*' for any run of characters), got %d", ErrConfig, maxPattern, len(p))
	}
	if strings.Count(p, "*") > 4 {
		return fmt.Errorf("%w: Pattern %q: at most 4 '*'", ErrConfig, p)
	}
	return nil
}
