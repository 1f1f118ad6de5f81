package nats

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
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/natsbase"
)

// EmbeddedConfig configures the in-process server a Broker starts when
// Config.URL is empty.
type EmbeddedConfig = natsbase.ServerConfig

// Defaults for the zero Config.
const (
	DefaultPrefix     = "sg"
	DefaultOutboxSize = 10000
	DefaultShards     = 8
	DefaultQueueSize  = 16384
	// setupTimeout bounds how long Start waits for JetStream (a cluster
	// electing its meta leader) to create the presence stream.
	setupTimeout = 30 * time.Second
)

// Config configures a Broker. The zero value connects to nothing: set URL,
// or Embedded for an in-process server.
type Config struct {
	// URL lists the NATS servers, comma-separated ("nats://a:4222,nats://b:4222").
	// Empty starts an embedded server from Embedded and connects to it
	// in-process; Close shuts it down.
	URL string
	// Embedded configures the embedded server (used only when URL is empty).
	Embedded EmbeddedConfig
	// Prefix starts every subject: <prefix>.c.<channel> carries
	// publications, <prefix>.pres / <prefix>.pe presence. Default "sg".
	Prefix string
	// OutboxSize bounds the publishes held while the server is unreachable;
	// past it Publish fails with brokers.ErrUnavailable. 0 means
	// DefaultOutboxSize; negative means no outbox (fail at once).
	OutboxSize int
	// PresenceStorage and PresenceReplicas configure the JetStream stream
	// that holds presence (when the server has JetStream). Defaults file, 1.
	PresenceStorage  jetstream.StorageType
	PresenceReplicas int
	// Shards is the number of delivery goroutines; QueueSize the messages
	// each buffers before the client library drops (and counts) them.
	// Defaults DefaultShards, DefaultQueueSize.
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

// Header that marks a publication flushed from a node's outbox: that node
// delivered it locally when it was accepted and skips it when it comes back.
const hdrLocal = "Sg-Local"

// Broker is the core NATS backend. Create it with New.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	nodeID string
	pubPre string // <prefix>.c.

	lifeMu  sync.Mutex
	state   atomic.Int32
	handler brokers.Handler
	srv     *server.Server // embedded, owned; nil with URL
	nc      *natsbase.Conn
	pres    *natsbase.Presence // nil without JetStream
	ctx     context.Context    // cancelled by Close
	cancel  context.CancelFunc
	shards  *natsbase.Shards
	kick    chan struct{} // the connection changed: the flusher looks
	wg      sync.WaitGroup

	// deliverMu: local deliveries (Publish during an outage) hold it for
	// reading; Close takes it for writing, so none runs after Close.
	deliverMu sync.RWMutex
	inflight  natsbase.Inflight // requests to end when the connection drops

	chansMu sync.Mutex
	chans   map[string]*channel

	outbox *natsbase.Outbox[outboxEntry]
}

type outboxEntry struct {
	ch   string
	data []byte
}

// channel is one subscribed channel.
type channel struct {
	mu     sync.Mutex
	name   string
	active bool
	subs   []*natsgo.Subscription
	filter natsbase.EventFilter
}

var (
	_ brokers.Broker   = (*Broker)(nil)
	_ brokers.Presence = (*Broker)(nil)
	_ brokers.Pinger   = (*Broker)(nil)
)

// New returns a Broker configured by cfg. It does nothing until Start.
func New(cfg Config) *Broker {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
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
	if cfg.PresenceStorage != jetstream.MemoryStorage {
		cfg.PresenceStorage = jetstream.FileStorage
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Broker{
		cfg:    cfg,
		log:    log,
		nodeID: randomID(),
		pubPre: cfg.Prefix + ".c.",
		chans:  make(map[string]*channel),
		outbox: natsbase.NewOutbox[outboxEntry](cfg.OutboxSize),
		kick:   make(chan struct{}, 1),
	}
}

// Start connects (starting the embedded server first when URL is empty),
// sets up presence when the server has JetStream, and starts delivery.
func (b *Broker) Start(ctx context.Context, h brokers.Handler) error {
	if h == nil {
		return errors.New("nats: start: nil handler")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nats: start: %w", err)
	}
	if !natsbase.ValidPrefix(b.cfg.Prefix) {
		return fmt.Errorf("nats: start: bad subject prefix %q", b.cfg.Prefix)
	}
	b.lifeMu.Lock()
	defer b.lifeMu.Unlock()
	switch b.state.Load() {
	case stateRunning:
		return errors.New("nats: start: already started")
	case stateClosed:
		return fmt.Errorf("nats: start: %w", brokers.ErrClosed)
	}
	if b.cfg.URL == "" {
		srv, err := natsbase.StartServer(b.cfg.Embedded)
		if err != nil {
			return fmt.Errorf("nats: start: %w", err)
		}
		b.srv = srv
	}
	nc, err := natsbase.Connect(ctx, natsbase.ConnConfig{
		URL: b.cfg.URL, Server: b.srv, Name: "syncgate-" + b.nodeID, Log: b.log,
		Notify: func(connected bool) {
			if !connected {
				b.inflight.CancelAll()
			}
			select {
			case b.kick <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		b.stopServer()
		return err
	}
	b.nc = nc
	if err := b.setupPresence(ctx); err != nil {
		nc.Close()
		b.stopServer()
		return err
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.handler = h
	b.shards = natsbase.NewShards(b.cfg.Shards, b.cfg.QueueSize, b.handle)
	b.wg.Go(b.flusher)
	b.state.Store(stateRunning)
	return nil
}

// setupPresence creates the presence stream when the server has JetStream;
// without it presence stays off (its calls fail with ErrUnavailable).
func (b *Broker) setupPresence(ctx context.Context) error {
	js, err := jetstream.New(b.nc.Conn)
	if err != nil {
		return fmt.Errorf("nats: start: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	if _, err := js.AccountInfo(ctx); errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		b.log.Warn("nats: the server has no JetStream: presence is off")
		return nil
	}
	pres := natsbase.NewPresence(b.nc.Conn, natsbase.PresenceConfig{
		Prefix:   b.cfg.Prefix,
		Stream:   natsbase.StreamName(b.cfg.Prefix, "PRESENCE"),
		Storage:  b.cfg.PresenceStorage,
		Replicas: b.cfg.PresenceReplicas,
	})
	err = natsbase.Retry(ctx, func(ctx context.Context) error {
		// Requests sent before a cluster has its meta leader go
		// unanswered: bound each attempt.
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := pres.Ensure(ctx, js)
		if err != nil {
			b.log.Info("nats: waiting for JetStream", "err", err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("nats: start: %w", err)
	}
	b.pres = pres
	return nil
}

// Close stops delivery, closes the connection and shuts the embedded
// server down. Publishes still in the outbox are lost; their number is
// logged.
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
		b.log.Warn("nats: closing with publishes still in the outbox; they are lost", "count", n)
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

// ClientURL is the client URL of the embedded server ("" with URL set), so
// a second node can connect to it.
func (b *Broker) ClientURL() string {
	if b.srv == nil {
		return ""
	}
	return b.srv.ClientURL()
}

// Ping implements brokers.Pinger: a round trip to the server.
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("nats: ping: %w", err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("nats: ping: %w: %w", brokers.ErrUnavailable, err)
	}
	return nil
}

// check returns brokers.ErrClosed when the broker is not running, else
// ctx's error.
func (b *Broker) check(ctx context.Context) error {
	if b.state.Load() != stateRunning {
		return brokers.ErrClosed
	}
	return ctx.Err()
}

// opCtx bounds ctx by the broker's lifetime, so Close cuts calls short,
// and gives it a deadline when it has none.
func (b *Broker) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, done := b.inflight.Context(ctx, b.ctx)
	return ctx, context.CancelFunc(done)
}

func randomID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var raw [10]byte
	_, _ = rand.Read(raw[:])
	var b strings.Builder
	for _, c := range raw {
		b.WriteByte(alphabet[int(c)%len(alphabet)])
	}
	return b.String()
}
