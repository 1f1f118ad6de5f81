package nats

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
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
	// Auth is the credential and TLS used with URL (the embedded server's
	// credential is in Embedded; without one a random token is made for
	// a loopback-only server).
	Auth ClientAuth
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

// Header that marks a publication flushed from a node's outbox: that node
// delivered it locally when it was accepted and skips it when it comes back.
const hdrLocal = "Sg-Local"

// Broker is the core NATS backend. Create it with New.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	nodeID string
	pubPre string // <prefix>.c.

	// n holds the lifecycle, connection, channels and outbox (shared with
	// the jetstream backend).
	n                                      *natsbase.Node[*channel, outboxEntry]
	natsbase.Public[*channel, outboxEntry]                     // Close, Ping, ClientURL, OutboxLen, presence
	js                                     jetstream.JetStream // set with n.Pres
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

// Deactivate implements natsbase.Channel.
func (c *channel) Deactivate() {
	c.mu.Lock()
	c.active = false
	c.mu.Unlock()
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
	b := &Broker{
		cfg:    cfg,
		nodeID: randomID(),
		pubPre: cfg.Prefix + ".c.",
	}
	b.n = natsbase.NewNode[*channel, outboxEntry]("nats", cfg.Log, cfg.OutboxSize)
	b.Public = natsbase.PublicOf(b.n)
	return b
}

// Start connects (starting the embedded server first when URL is empty),
// sets up presence when the server has JetStream, and starts delivery.
func (b *Broker) Start(ctx context.Context, h brokers.Handler) error {
	return b.n.Start(ctx, h, natsbase.StartConfig{
		URL: b.cfg.URL, Auth: b.cfg.Auth, Embedded: b.cfg.Embedded, Prefix: b.cfg.Prefix,
		ClientName: "syncgate-" + b.nodeID,
		Shards:     b.cfg.Shards, QueueSize: b.cfg.QueueSize, Handle: b.handle,
		Setup: b.setupPresence, Run: b.flusher,
	})
}

// setupPresence creates the presence stream when the server has JetStream;
// without it presence stays off (its calls fail with ErrUnavailable).
func (b *Broker) setupPresence(ctx context.Context, nc *natsbase.Conn) error {
	js, err := jetstream.New(nc.Conn)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	if _, err := js.AccountInfo(ctx); errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		b.n.Log().Warn("nats: the server has no JetStream: presence is off")
		return nil
	}
	pres := natsbase.NewPresence(nc.Conn, natsbase.PresenceConfig{
		Prefix:   b.cfg.Prefix,
		Stream:   natsname.StreamName(b.cfg.Prefix, "PRESENCE"),
		Storage:  b.cfg.PresenceStorage,
		Replicas: b.cfg.PresenceReplicas,
	})
	if err := b.n.SetupRetry(ctx, func(ctx context.Context) error { return pres.Ensure(ctx, js) }); err != nil {
		return err
	}
	b.n.SetPresence(pres)
	b.js = js
	return nil
}

// presenceCheckEvery is how often the flusher checks that the presence
// stream still exists (it may be deleted under a running node, or lost
// with a restarted server's memory) and re-creates it.
const presenceCheckEvery = 2 * time.Second

// checkPresence re-creates the presence stream when it is gone. The
// members it listed are lost: clients show up again when they resubscribe.
func (b *Broker) checkPresence() {
	if b.n.Presence() == nil {
		return
	}
	ctx, cancel := b.n.BgCtx(5 * time.Second)
	defer cancel()
	err := b.n.Presence().Check(ctx, b.js)
	if !natsbase.IsStreamNotFound(err) {
		return
	}
	b.n.Log().Warn("nats: the presence stream is gone; creating it again", "err", err)
	if err := b.n.Presence().Ensure(ctx, b.js); err != nil {
		b.n.Log().Warn("nats: re-creating the presence stream", "err", err)
	}
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
