// Package brokers defines the contract between the gateway and a message
// broker backend. Each backend lives in its own subpackage (memory, redis,
// nats, jetstream, redisstream) and is checked by the shared conformance suite
// in brokertest.
//
// A backend always implements Broker. History and Presence are optional
// capabilities, found by type assertion; a backend that lacks one simply does
// not implement it, and declares so in brokertest.Features.
package brokers

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Backends wrap them with %w and context
// ("redis: publish doc:1: %w"); callers compare with errors.Is.
var (
	// ErrUnavailable: the broker cannot serve the call right now (down,
	// reconnecting, outbox full). The gateway answers `unavailable`.
	ErrUnavailable = errors.New("brokers: unavailable")
	// ErrClosed: the broker was closed or not started.
	ErrClosed = errors.New("brokers: closed")
)

// Position is a place in a channel's history. Seq is 1-based and gap-free
// within one Epoch. Seq 0 means "before the first message". A backend that
// keeps no history reports an empty Epoch.
type Position struct {
	Seq   uint64
	Epoch string
}

// Publication is one message on a channel as the broker delivers it.
// Data is opaque to the broker: the gateway encodes into it what it needs
// (publisher id and the client's JSON) and gets the same bytes back.
type Publication struct {
	Seq   uint64
	Epoch string
	Data  []byte
	// Was is set on a publication that a node first delivered under a
	// provisional position (a provisional epoch, see ProvisionalEpoch)
	// while its broker was unreachable, and that now has its real
	// position: Was is that provisional position. Subscribers that got it
	// under Was already must not apply it twice. Zero otherwise. History
	// returns it too.
	Was Position
}

// Member is one client on a channel's presence list.
type Member struct {
	User   string
	Client string
}

// PresenceEventType tells a join from a leave.
type PresenceEventType uint8

const (
	Join PresenceEventType = iota + 1
	Leave
)

// Handler receives what the broker delivers to this node. Calls for one
// channel never overlap and publications arrive in seq order per channel.
// Methods must not block and must not call back into the broker; byte slices
// are valid only until the method returns (the gateway copies what it keeps).
// No call happens after Close returns.
//
// How the gateway treats what it is handed (so a backend knows what it may
// rely on): per subscriber it drops a publication whose Seq is at or below
// the last one delivered (redeliveries are harmless); Seq 0 is never
// deduplicated (a backend without order numbers); a new Epoch resets the
// watermark. A backend that detects a gap in what it received (reconnect,
// lost pub/sub message) fills it from its history before handing on later
// seqs, so the handler sees each channel contiguously.
type Handler interface {
	HandlePublication(ch string, p Publication)
	HandlePresence(ch string, t PresenceEventType, m Member)
}

// Broker moves publications between nodes.
//
// Lifecycle: New (per backend) -> Start -> calls -> Close. Calls before Start
// or after Close fail with an error wrapping ErrClosed (Start after Close
// too). Close may be called more than once, and without Start.
type Broker interface {
	// Start begins delivery to h. It is called once, before any other method,
	// and returns once the broker is ready to take calls.
	Start(ctx context.Context, h Handler) error
	// Publish gives data the next seq of ch, appends it to the channel's
	// history (when the backend keeps one) and fans it out to every node
	// subscribed to ch, in one atomic step per channel. The returned
	// Position is the one the message got.
	Publish(ctx context.Context, ch string, data []byte) (Position, error)
	// Subscribe makes this node receive ch's publications. The gateway calls
	// it once per channel per node, however many local clients it has.
	// When Subscribe returns, every publication that gets a seq after this
	// point is delivered.
	Subscribe(ctx context.Context, ch string) error
	// Unsubscribe stops delivery of ch to this node.
	Unsubscribe(ctx context.Context, ch string) error
	// Close stops the broker; all its goroutines have exited on return.
	Close() error
}

// History is implemented by backends that keep per-channel history.
type History interface {
	// Since returns the publications of ch with seq > since, oldest first,
	// at most limit of them (limit 0: none, only the position), and the
	// channel's latest Position. A channel with no messages yet has Seq 0
	// and a valid Epoch; while the node is subscribed to the channel that
	// epoch stays the same, and the first publication from this node keeps
	// it. Reading an empty channel must not store anything in the broker
	// (a subscriber to a channel nobody publishes on costs it nothing):
	// a backend may keep that epoch on the node and give the same channel
	// another one elsewhere, in which case a client resuming from it is
	// told to resync. The caller detects truncation by comparing the
	// first returned seq with since+1 and the count with latest.Seq-since.
	Since(ctx context.Context, ch string, since uint64, limit int) ([]Publication, Position, error)
}

// Presence is implemented by backends that keep presence lists shared
// between nodes. Members are keyed by Member.Client. Entries expire after the
// TTL unless refreshed; an entry that expires produces a Leave event like a
// removal does, on every node (so a crashed node's members leave within the
// TTL). Events go to every node subscribed to the channel. ttl <= 0 is an
// error.
type Presence interface {
	// Join adds m to ch and announces Join to every node; re-joining a
	// listed member only refreshes it, announcing nothing.
	Join(ctx context.Context, ch string, m Member, ttl time.Duration) error
	// Leave removes m from ch and announces Leave to every node, only if
	// m was listed.
	Leave(ctx context.Context, ch string, m Member) error
	// Refresh extends the TTL of members this node owns. It announces
	// nothing; members that already expired (and were announced as left)
	// are not brought back.
	Refresh(ctx context.Context, ch string, ms []Member, ttl time.Duration) error
	// Members lists ch's unexpired members.
	Members(ctx context.Context, ch string) ([]Member, error)
}

// Pinger is implemented by backends that can tell whether they can serve
// Subscribe and Publish through their server now: not only whether it
// answers, but whether what the backend relies on there is in place (its
// streams, a server that takes writes) and nothing holds its publishes
// back. /readyz and syncgate_broker_up use it; a backend that notices its
// server-side state gone (deleted under it) repairs it by itself and
// fails Ping meanwhile.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Outboxer is implemented by backends that hold accepted publishes while
// their server is unreachable; the gateway exports the length as a metric.
type Outboxer interface {
	OutboxLen() int
}

// PendingReporter is implemented by backends that buffer what their
// server delivers to this node; the gateway exports it as metrics, so an
// operator sees a node falling behind before its server cuts it off.
type PendingReporter interface {
	Pending() PendingStats
}

// PendingStats is the delivery backlog between a backend's server and
// this node, with the limits set on it.
type PendingStats struct {
	// Msgs is how many deliveries were received and not yet handed on.
	Msgs int
	// MsgLimit is where the client library starts dropping deliveries
	// (a slow consumer; the backend fills the gap from history).
	MsgLimit int
	// ServerBytesLimit is how many bytes the server lets wait for this
	// node's connection before it closes it as a slow consumer; 0 when
	// it is not known (an external server's own setting).
	ServerBytesLimit int64
}

// ProvisionalPrefix starts every provisional epoch.
const ProvisionalPrefix = "~"

// ProvisionalEpoch names a provisional epoch: the positions a node hands
// out (and delivers to its own subscribers) for publications it accepted
// while its broker was unreachable, before they have real ones. id must be
// unique and contain no '.'; base is the last real position this node
// delivered on the channel before the outage (zero when it knows none). A
// client that resubscribes with a provisional `since` resumes from base:
// the gateway reads it back with ProvisionalBase.
//
// The form is "~<id>" or "~<id>.<base seq>.<base epoch>".
func ProvisionalEpoch(id string, base Position) string {
	if base.Epoch == "" || IsProvisional(base.Epoch) {
		return ProvisionalPrefix + id
	}
	return ProvisionalPrefix + id + "." + strconv.FormatUint(base.Seq, 10) + "." + base.Epoch
}

// IsProvisional reports whether epoch is a provisional epoch.
func IsProvisional(epoch string) bool { return strings.HasPrefix(epoch, ProvisionalPrefix) }

// ProvisionalBase returns the real position a provisional epoch was
// opened after, if it names one.
func ProvisionalBase(epoch string) (Position, bool) {
	rest, ok := strings.CutPrefix(epoch, ProvisionalPrefix)
	if !ok {
		return Position{}, false
	}
	_, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return Position{}, false
	}
	num, base, ok := strings.Cut(rest, ".")
	if !ok || base == "" || IsProvisional(base) {
		return Position{}, false
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return Position{}, false
	}
	return Position{Seq: seq, Epoch: base}, true
}
