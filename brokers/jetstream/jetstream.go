package jetstream

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/natsbase"
	"github.com/syncgate/syncgate/internal/natsname"
	"github.com/syncgate/syncgate/internal/natsserver"
)

// EmbeddedConfig configures the in-process server a Broker starts when
// Config.URL is empty.
type EmbeddedConfig = natsserver.ServerConfig

// ClientAuth is the credential and TLS a Broker uses with Config.URL.
type ClientAuth = natsbase.ClientAuth

// ErrAuth: the server refused the Broker's credential (wrong or missing);
// Start's error wraps it.
var ErrAuth = natsbase.ErrAuth

// StorageType is where the stream keeps its messages.
type StorageType = jetstream.StorageType

// Storage types.
const (
	FileStorage   = jetstream.FileStorage
	MemoryStorage = jetstream.MemoryStorage
)

// Defaults for the zero Config.
const (
	DefaultPrefix      = "sg"
	DefaultHistorySize = 1000
	DefaultHistoryTTL  = 10 * time.Minute
	DefaultOutboxSize  = 10000
	DefaultShards      = 8
	DefaultQueueSize   = 16384
	DefaultCheckEvery  = 2 * time.Second
	setupTimeout       = 30 * time.Second
)

// Config configures a Broker. The zero value connects to nothing: set URL,
// or Embedded for an in-process server.
type Config struct {
	// URL lists the NATS servers, comma-separated. Empty starts an embedded
	// server from Embedded and connects to it in-process; Close shuts it
	// down.
	URL string
	// Embedded configures the embedded server (used only when URL is empty).
	Embedded EmbeddedConfig
	// Auth is the credential and TLS used with URL (the embedded server's
	// credential is in Embedded; without one a random token is made for
	// a loopback-only server).
	Auth ClientAuth
	// Prefix starts every subject: <prefix>.h.<channel> is a channel's
	// history, <prefix>.r.<channel> its live copy (the stream republishes
	// each stored message there), <prefix>.pres / <prefix>.pe presence.
	// Default "sg".
	Prefix string
	// Stream names the history stream; default <PREFIX>_HISTORY.
	Stream string
	// Storage of the history and presence streams; default FileStorage.
	Storage StorageType
	// Replicas of the streams (1, 3 or 5 in a cluster); default 1.
	Replicas int
	// HistorySize is the number of publications kept per channel (the
	// stream's MaxMsgsPerSubject). 0 means DefaultHistorySize; negative
	// keeps only the last (which carries the seq) and Since returns none.
	HistorySize int
	// HistoryTTL is how long a publication stays (the stream's MaxAge). 0
	// means DefaultHistoryTTL. A channel silent for longer loses its
	// history: its next publication starts a new epoch at seq 1.
	HistoryTTL time.Duration
	// OutboxSize bounds the publishes held while the server is
	// unreachable; past it Publish fails with brokers.ErrUnavailable. 0
	// means DefaultOutboxSize; negative means no outbox.
	OutboxSize int
	// Shards is the number of delivery goroutines; QueueSize the messages
	// each buffers before the client library drops them (a drop is a gap,
	// filled from the stream). Defaults DefaultShards, DefaultQueueSize.
	Shards, QueueSize int
	// CheckEvery is how often the node asks the server whether its streams
	// are still there (and the same ones), to re-create what was deleted
	// under it without waiting for a reconnect. A request that finds a
	// stream missing, and Ping, trigger the same check at once. 0 means
	// DefaultCheckEvery.
	CheckEvery time.Duration
	// Log gets connection changes and errors; nil discards them.
	Log *slog.Logger
}

// Headers of a stored publication.
const (
	hdrSeq    = "Sg-Seq"   // the channel seq; 0 on an epoch marker
	hdrEpoch  = "Sg-Epoch" // the channel's epoch
	hdrID     = "Sg-Id"    // the publication's id (node id + counter), the same in each of its attempts
	hdrWas    = "Sg-Was"   // <seq>:<epoch>: the provisional position a node delivered it under first
	hdrExpect = "Nats-Expected-Last-Subject-Sequence"
	hdrMsgID  = "Nats-Msg-Id"        // = Sg-Id: the stream stores an id once within dupWindow
	hdrSSeq   = "Nats-Sequence"      // stream seq (republished copy, direct get)
	hdrPrev   = "Nats-Last-Sequence" // stream seq of the subject's previous message (republished copy)
)

// Broker is the JetStream backend. Create it with New.
type Broker struct {
	cfg      Config
	nodeID   string
	histPre  string // <prefix>.h.
	livePre  string // <prefix>.r.
	emptyPre string // <prefix>.ee.: nodes ask each other for an empty channel's epoch
	histSize int    // messages Since may return
	idSeq    atomic.Uint64

	// n holds the lifecycle, connection, subscribed channels, delivery
	// shards and presence; its lock rules are its own (natsbase.Node).
	n *natsbase.Node[*channel]
	// Presence is the node's: Join, Leave, Refresh and Members
	// (natsbase.Node, backed by natsbase.Presence).
	brokers.Presence
	// js is set by Start before the node runs; read-only afterwards.
	js jetstream.JetStream

	snapMu sync.Mutex
	snapKV jetstream.KeyValue // the snapshot bucket, once created (snapshot.go)

	created    atomic.Int64 // the history stream's creation time (unix ns)
	reconnects uint64       // flusher only: the library's count at the last recovery
	dropped    uint64       // flusher only: the connection's slow-consumer count last seen
	checkFails int          // flusher only: stream checks failed in a row (checkCtx)
	// elected: a stream elected a leader since the last check began;
	// waitStop ends the flusher's wait in progress, if any (flusherCtx).
	elected  atomic.Bool
	waitStop atomic.Pointer[func()]
	// election ends when the history stream elects a leader (writes
	// waiting for their ack then resolve them: errAckLost).
	election atomic.Pointer[election]
	// sweepFillFault, when set (tests only, before Start), is asked
	// before each fill of a sweep; an error fails that fill.
	sweepFillFault func() error

	pubMu sync.Mutex
	pubs  map[string]*pubState

	// Outage state. jsDown: a publish failed for want of the server or
	// stream; cleared when the outbox is flushed. entering counts the
	// publishes on their way into the outbox (Broker.enter).
	jsDown   atomic.Bool
	entering atomic.Int32
	// needSweep: check every subscribed channel against the stream (see
	// flusher).
	needSweep atomic.Bool
	// needRepair: a request found a stream missing (or a publish found
	// nothing to store it): the flusher checks the streams and re-creates
	// them. Ping reports the node unready while it is set.
	needRepair atomic.Bool

	// outbox holds the publishes accepted during an outage. outMu
	// serializes enqueue (an outage position handed out, the entry
	// pushed and delivered here, in one step) against the flusher's
	// "outbox empty: the outage is over" (which clears local); it also
	// guards local.
	outMu  sync.Mutex
	outbox *natsbase.Outbox[outboxEntry]
	local  map[string]*brokers.Position // outage positions handed out per channel
	// inflight: the outage positions of publications whose first write
	// (without Sg-Was) may be stored, delivered here under them.
	inflight inflightWas
}

var (
	_ brokers.Broker          = (*Broker)(nil)
	_ brokers.History         = (*Broker)(nil)
	_ brokers.Presence        = (*Broker)(nil)
	_ brokers.Pinger          = (*Broker)(nil)
	_ brokers.Outboxer        = (*Broker)(nil)
	_ brokers.PendingReporter = (*Broker)(nil)
)

// New returns a Broker configured by cfg. It does nothing until Start.
func New(cfg Config) *Broker {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Stream == "" {
		cfg.Stream = natsname.StreamName(cfg.Prefix, "HISTORY")
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.HistorySize == 0 {
		cfg.HistorySize = DefaultHistorySize
	}
	if cfg.HistoryTTL <= 0 {
		cfg.HistoryTTL = DefaultHistoryTTL
	}
	if cfg.OutboxSize == 0 {
		cfg.OutboxSize = DefaultOutboxSize
	}
	if cfg.Shards <= 0 {
		cfg.Shards = DefaultShards
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = DefaultCheckEvery
	}
	b := &Broker{
		cfg:      cfg,
		nodeID:   randomID(10),
		histPre:  cfg.Prefix + ".h.",
		livePre:  cfg.Prefix + ".r.",
		emptyPre: cfg.Prefix + ".ee.",
		histSize: max(cfg.HistorySize, 0),
		pubs:     make(map[string]*pubState),
		local:    make(map[string]*brokers.Position),
		n:        natsbase.NewNode[*channel]("jetstream", cfg.Log),
		outbox:   natsbase.NewOutbox[outboxEntry](cfg.OutboxSize),
	}
	b.Presence = b.n
	b.election.Store(newElection())
	return b
}

// streamConfig is the history stream: one subject per channel, at most
// HistorySize messages and HistoryTTL of age per subject, every stored
// message republished for live delivery.
func (b *Broker) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              b.cfg.Stream,
		Description:       "syncgate channel history: one subject per channel",
		Subjects:          []string{b.cfg.Prefix + ".h.>"},
		Storage:           b.cfg.Storage,
		Replicas:          b.cfg.Replicas,
		MaxMsgsPerSubject: int64(max(b.cfg.HistorySize, 1)),
		MaxAge:            b.cfg.HistoryTTL,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
		Duplicates:        dupWindowOf(b.cfg.HistoryTTL),
		RePublish:         &jetstream.RePublish{Source: b.cfg.Prefix + ".h.>", Destination: b.cfg.Prefix + ".r.>"},
	}
}

// Start connects (starting the embedded server first when URL is empty),
// creates or updates the streams and starts delivery and the flusher.
func (b *Broker) Start(ctx context.Context, h brokers.Handler) error {
	nc, err := b.n.Open(ctx, h, natsbase.OpenConfig{
		URL: b.cfg.URL, Auth: b.cfg.Auth, Embedded: b.cfg.Embedded, Prefix: b.cfg.Prefix,
		ClientName: "syncgate-" + b.nodeID,
	})
	if err != nil {
		return err
	}
	pres, err := b.setup(ctx, nc)
	if err != nil {
		b.n.Abort()
		return fmt.Errorf("jetstream: start: %w", err)
	}
	if err := b.n.Run(natsbase.NewShards(b.cfg.Shards, b.cfg.QueueSize, b.handle), pres); err != nil {
		return err
	}
	b.n.Go(b.flusher)
	return nil
}

// setup makes the streams, watches the history stream's leader and
// returns the presence store.
func (b *Broker) setup(ctx context.Context, nc *natsbase.Conn) (*natsbase.Presence, error) {
	b.reconnects, b.dropped = nc.Stats().Reconnects, nc.Dropped()
	js, err := jetstream.New(nc.Conn)
	if err != nil {
		return nil, err
	}
	b.js = js
	pres := natsbase.NewPresence(nc.Conn, natsbase.PresenceConfig{
		Prefix:   b.cfg.Prefix,
		Stream:   natsname.StreamName(b.cfg.Prefix, "PRESENCE"),
		Storage:  b.cfg.Storage,
		Replicas: b.cfg.Replicas,
	})
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	err = b.n.SetupRetry(sctx, func(ctx context.Context) error {
		if _, err := b.ensureHistory(ctx); err != nil {
			return err
		}
		return pres.Ensure(ctx, js)
	})
	cancel()
	if err != nil {
		return nil, err
	}
	// A new stream leader may not republish what its predecessor stored
	// last: sweep after each election. And what waits for an answer that
	// will never come (asked of the old leader, or while there was none)
	// need not wait any longer (errAckLost, flusherCtx).
	const elected = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."
	_, err = nc.Subscribe(elected+b.cfg.Stream, func(*nats.Msg) {
		b.needSweep.Store(true)
		b.election.Swap(newElection()).end(errAckLost)
		b.leaderElected()
	})
	if err != nil {
		return nil, err
	}
	if _, err = nc.Subscribe(elected+natsname.StreamName(b.cfg.Prefix, "PRESENCE"), func(*nats.Msg) { b.leaderElected() }); err != nil {
		return nil, err
	}
	return pres, nil
}

// Close stops delivery and the flusher, closes the connection and shuts
// the embedded server down; no Handler call runs after it returns.
// Publishes still in the outbox are lost; their number is logged.
func (b *Broker) Close() error {
	err := b.n.Close()
	if k := b.outbox.Len(); k > 0 {
		b.n.Log().Warn("jetstream: closed with publishes still in the outbox; they are lost", "count", k)
	}
	return err
}

// ClientURL is the client URL of the embedded server ("" with a URL set),
// so a second node can connect to it.
func (b *Broker) ClientURL() string { return b.n.ClientURL() }

// OutboxLen is the number of publishes waiting for the server (a metric).
func (b *Broker) OutboxLen() int { return b.outbox.Len() }

// Pending implements brokers.PendingReporter (see natsbase.Node.Pending).
func (b *Broker) Pending() brokers.PendingStats { return b.n.Pending() }

// ensureHistory creates or updates the history stream and records its
// creation time. It reports whether that time changed (the stream was
// created anew: its history, and every stream seq, started over).
func (b *Broker) ensureHistory(ctx context.Context) (changed bool, err error) {
	s, err := b.js.CreateOrUpdateStream(ctx, b.streamConfig())
	if err != nil {
		return false, fmt.Errorf("history stream %s: %w", b.cfg.Stream, err)
	}
	created := s.CachedInfo().Created.UnixNano()
	old := b.created.Swap(created)
	return old != 0 && old != created, nil
}

// offline reports whether publishes must go through the outbox.
func (b *Broker) offline() bool {
	return !b.n.Conn().IsConnected() || b.jsDown.Load()
}

func randomID(n int) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuv"
	raw := make([]byte, n)
	_, _ = rand.Read(raw)
	var s strings.Builder
	for _, c := range raw {
		s.WriteByte(alphabet[c&31])
	}
	return s.String()
}

// newEpoch names a new history of a channel: 8 random base32 characters.
func newEpoch() string { return randomID(8) }
