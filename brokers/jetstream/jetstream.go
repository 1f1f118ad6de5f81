package jetstream

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/natsbase"
)

// EmbeddedConfig configures the in-process server a Broker starts when
// Config.URL is empty.
type EmbeddedConfig = natsbase.ServerConfig

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
	// Log gets connection changes and errors; nil discards them.
	Log *slog.Logger
}

// Lifecycle states.
const (
	stateNew int32 = iota
	stateRunning
	stateClosed
)

// Headers of a stored publication.
const (
	hdrSeq    = "Sg-Seq"   // the channel seq; 0 on an epoch marker
	hdrEpoch  = "Sg-Epoch" // the channel's epoch
	hdrID     = "Sg-Id"    // the publish attempt's id (node id + counter)
	hdrWas    = "Sg-Was"   // <seq>:<epoch>: the provisional position a node delivered it under first
	hdrExpect = "Nats-Expected-Last-Subject-Sequence"
	hdrSSeq   = "Nats-Sequence"      // stream seq (republished copy, direct get)
	hdrPrev   = "Nats-Last-Sequence" // stream seq of the subject's previous message (republished copy)
)

// Broker is the JetStream backend. Create it with New.
type Broker struct {
	cfg      Config
	log      *slog.Logger
	nodeID   string
	histPre  string // <prefix>.h.
	livePre  string // <prefix>.r.
	histSize int    // messages Since may return
	idSeq    atomic.Uint64

	lifeMu  sync.Mutex
	state   atomic.Int32
	handler brokers.Handler
	srv     *server.Server
	nc      *natsbase.Conn
	js      jetstream.JetStream
	pres    *natsbase.Presence
	ctx     context.Context
	cancel  context.CancelFunc
	shards  *natsbase.Shards
	kick    chan struct{}
	wg      sync.WaitGroup

	created    atomic.Int64 // the history stream's creation time (unix ns)
	reconnects uint64       // flusher only: the library's count at the last recovery

	deliverMu sync.RWMutex
	inflight  natsbase.Inflight // requests to end when the connection drops

	chansMu sync.Mutex
	chans   map[string]*channel

	pubMu sync.Mutex
	pubs  map[string]*pubState

	// Outage state. jsDown: a publish failed for want of the server or
	// stream; cleared when the outbox is flushed.
	jsDown atomic.Bool
	// needSweep: check every subscribed channel against the stream (see
	// flusher).
	needSweep atomic.Bool
	outbox    *natsbase.Outbox[outboxEntry]
	local     map[string]*brokers.Position // outbox lock: outage positions handed out per channel
}

var (
	_ brokers.Broker   = (*Broker)(nil)
	_ brokers.History  = (*Broker)(nil)
	_ brokers.Presence = (*Broker)(nil)
	_ brokers.Pinger   = (*Broker)(nil)
)

// New returns a Broker configured by cfg. It does nothing until Start.
func New(cfg Config) *Broker {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Stream == "" {
		cfg.Stream = natsbase.StreamName(cfg.Prefix, "HISTORY")
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
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Broker{
		cfg:      cfg,
		log:      log,
		nodeID:   randomID(10),
		histPre:  cfg.Prefix + ".h.",
		livePre:  cfg.Prefix + ".r.",
		histSize: max(cfg.HistorySize, 0),
		chans:    make(map[string]*channel),
		pubs:     make(map[string]*pubState),
		outbox:   natsbase.NewOutbox[outboxEntry](cfg.OutboxSize),
		local:    make(map[string]*brokers.Position),
		kick:     make(chan struct{}, 1),
	}
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
		RePublish:         &jetstream.RePublish{Source: b.cfg.Prefix + ".h.>", Destination: b.cfg.Prefix + ".r.>"},
	}
}

// Start connects (starting the embedded server first when URL is empty),
// creates or updates the streams and starts delivery.
func (b *Broker) Start(ctx context.Context, h brokers.Handler) error {
	if h == nil {
		return errors.New("jetstream: start: nil handler")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("jetstream: start: %w", err)
	}
	if !natsbase.ValidPrefix(b.cfg.Prefix) {
		return fmt.Errorf("jetstream: start: bad subject prefix %q", b.cfg.Prefix)
	}
	b.lifeMu.Lock()
	defer b.lifeMu.Unlock()
	switch b.state.Load() {
	case stateRunning:
		return errors.New("jetstream: start: already started")
	case stateClosed:
		return fmt.Errorf("jetstream: start: %w", brokers.ErrClosed)
	}
	if b.cfg.URL == "" {
		srv, err := natsbase.StartServer(b.cfg.Embedded)
		if err != nil {
			return fmt.Errorf("jetstream: start: %w", err)
		}
		b.srv = srv
	}
	nc, err := natsbase.Connect(ctx, natsbase.ConnConfig{
		URL: b.cfg.URL, Server: b.srv, Name: "syncgate-" + b.nodeID, Log: b.log,
		Notify: b.notify,
	})
	if err != nil {
		b.stopServer()
		return fmt.Errorf("jetstream: start: %w", err)
	}
	b.nc = nc
	b.reconnects = nc.Stats().Reconnects
	js, err := jetstream.New(nc.Conn)
	if err != nil {
		nc.Close()
		b.stopServer()
		return fmt.Errorf("jetstream: start: %w", err)
	}
	b.js = js
	b.pres = natsbase.NewPresence(nc.Conn, natsbase.PresenceConfig{
		Prefix:   b.cfg.Prefix,
		Stream:   natsbase.StreamName(b.cfg.Prefix, "PRESENCE"),
		Storage:  b.cfg.Storage,
		Replicas: b.cfg.Replicas,
	})
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	err = natsbase.Retry(sctx, func(ctx context.Context) error {
		// Requests sent before a cluster has its meta leader go
		// unanswered: bound each attempt.
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := b.ensureStreams(ctx)
		if err != nil {
			b.log.Info("jetstream: waiting for JetStream", "err", err)
		}
		return err
	})
	cancel()
	if err != nil {
		nc.Close()
		b.stopServer()
		return fmt.Errorf("jetstream: start: %w", err)
	}
	// A new stream leader may not republish what its predecessor stored
	// last: sweep after each election.
	if _, err := nc.Subscribe("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."+b.cfg.Stream, func(*nats.Msg) {
		b.needSweep.Store(true)
		b.poke()
	}); err != nil {
		nc.Close()
		b.stopServer()
		return fmt.Errorf("jetstream: start: %w", err)
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.handler = h
	b.shards = natsbase.NewShards(b.cfg.Shards, b.cfg.QueueSize, b.handle)
	b.wg.Go(b.flusher)
	b.state.Store(stateRunning)
	return nil
}

// ensureStreams creates or updates both streams and records the history
// stream's creation time. It reports whether that time changed (the stream
// was created anew: its history, and every stream seq, started over).
func (b *Broker) ensureStreams(ctx context.Context) error {
	_, err := b.ensureHistory(ctx)
	if err != nil {
		return err
	}
	return b.pres.Ensure(ctx, b.js)
}

func (b *Broker) ensureHistory(ctx context.Context) (changed bool, err error) {
	s, err := b.js.CreateOrUpdateStream(ctx, b.streamConfig())
	if err != nil {
		return false, fmt.Errorf("history stream %s: %w", b.cfg.Stream, err)
	}
	created := s.CachedInfo().Created.UnixNano()
	old := b.created.Swap(created)
	return old != 0 && old != created, nil
}

// Close stops delivery and the flusher, closes the connection and shuts the
// embedded server down. Publishes still in the outbox are lost; their
// number is logged.
func (b *Broker) Close() error {
	b.lifeMu.Lock()
	defer b.lifeMu.Unlock()
	if b.state.Swap(stateClosed) != stateRunning {
		return nil
	}
	b.cancel()
	b.deliverMu.Lock()
	//lint:ignore SA2001 waiting for the readers is the point
	b.deliverMu.Unlock()
	b.wg.Wait()
	if n := b.outbox.Len(); n > 0 {
		b.log.Warn("jetstream: closing with publishes still in the outbox; they are lost", "count", n)
	}
	b.nc.Close()
	b.shards.Stop()
	b.chansMu.Lock()
	for _, c := range b.chans {
		c.mu.Lock()
		c.active = false
		c.mu.Unlock()
	}
	clear(b.chans)
	b.chansMu.Unlock()
	b.stopServer()
	return nil
}

func (b *Broker) stopServer() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

// ClientURL is the client URL of the embedded server ("" with URL set).
func (b *Broker) ClientURL() string {
	if b.srv == nil {
		return ""
	}
	return b.srv.ClientURL()
}

// Ping implements brokers.Pinger: a round trip to the server.
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("jetstream: ping: %w", err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("jetstream: ping: %w: %w", brokers.ErrUnavailable, err)
	}
	return nil
}

// OutboxLen is the number of publishes waiting for the server (a metric).
func (b *Broker) OutboxLen() int { return b.outbox.Len() }

func (b *Broker) check(ctx context.Context) error {
	if b.state.Load() != stateRunning {
		return brokers.ErrClosed
	}
	return ctx.Err()
}

// opCtx bounds a call's context by the broker's lifetime and the
// connection: Close and a lost connection end it (see natsbase.Inflight).
func (b *Broker) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, done := b.inflight.Context(ctx, b.ctx)
	return ctx, context.CancelFunc(done)
}

// bgCtx is opCtx for the broker's own work, bounded by d.
func (b *Broker) bgCtx(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(b.ctx, d)
	ctx, done := b.inflight.Context(ctx, b.ctx)
	return ctx, func() { done(); cancel() }
}

// notify is the connection's state callback.
func (b *Broker) notify(connected bool) {
	if !connected {
		b.inflight.CancelAll()
	}
	b.poke()
}

// poke wakes the flusher.
func (b *Broker) poke() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// offline reports whether publishes must go through the outbox.
func (b *Broker) offline() bool {
	return !b.nc.IsConnected() || b.jsDown.Load()
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
