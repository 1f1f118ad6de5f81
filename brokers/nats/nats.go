package nats

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
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
	nodeID string
	pubPre string // <prefix>.c.

	// n holds the lifecycle, connection, subscribed channels, delivery
	// shards and presence; its lock rules are its own (natsbase.Node).
	n *natsbase.Node[*channel]
	// Presence is the node's: Join, Leave, Refresh and Members
	// (natsbase.Node, backed by natsbase.Presence).
	brokers.Presence
	// js is set by Start before the node runs, with presence (nil without
	// JetStream); read-only afterwards.
	js jetstream.JetStream

	// outbox holds the publishes accepted while the server was
	// unreachable. outMu serializes enqueue: a publication enters the
	// outbox and reaches this node's subscribers in one step, so local
	// delivery follows the outbox's order.
	outMu  sync.Mutex
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

// Deactivate implements natsbase.Channel.
func (c *channel) Deactivate() {
	c.mu.Lock()
	c.active = false
	c.mu.Unlock()
}

var (
	_ brokers.Broker          = (*Broker)(nil)
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
		n:      natsbase.NewNode[*channel]("nats", cfg.Log),
		outbox: natsbase.NewOutbox[outboxEntry](cfg.OutboxSize),
	}
	b.Presence = b.n
	return b
}

// Start connects (starting the embedded server first when URL is empty),
// sets up presence when the server has JetStream, and starts delivery and
// the outbox flusher.
func (b *Broker) Start(ctx context.Context, h brokers.Handler) error {
	nc, err := b.n.Open(ctx, h, natsbase.OpenConfig{
		URL: b.cfg.URL, Auth: b.cfg.Auth, Embedded: b.cfg.Embedded, Prefix: b.cfg.Prefix,
		ClientName: "syncgate-" + b.nodeID,
	})
	if err != nil {
		return err
	}
	pres, err := b.setupPresence(ctx, nc)
	if err != nil {
		b.n.Abort()
		return fmt.Errorf("nats: start: %w", err)
	}
	if err := b.n.Run(natsbase.NewShards(b.cfg.Shards, b.cfg.QueueSize, b.handle), pres); err != nil {
		return err
	}
	b.n.Go(b.flusher)
	return nil
}

// setupPresence creates the presence stream when the server has JetStream
// and returns it; without JetStream it returns nil and presence stays off
// (its calls fail with ErrUnavailable).
func (b *Broker) setupPresence(ctx context.Context, nc *natsbase.Conn) (*natsbase.Presence, error) {
	js, err := jetstream.New(nc.Conn)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	if _, err := js.AccountInfo(ctx); errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		b.n.Log().Warn("nats: the server has no JetStream: presence is off")
		return nil, nil
	}
	pres := natsbase.NewPresence(nc.Conn, natsbase.PresenceConfig{
		Prefix:   b.cfg.Prefix,
		Stream:   natsname.StreamName(b.cfg.Prefix, "PRESENCE"),
		Storage:  b.cfg.PresenceStorage,
		Replicas: b.cfg.PresenceReplicas,
	})
	if err := b.n.SetupRetry(ctx, func(ctx context.Context) error { return pres.Ensure(ctx, js) }); err != nil {
		return nil, err
	}
	b.js = js
	return pres, nil
}

// Close stops delivery and the flusher, closes the connection and shuts
// the embedded server down; no Handler call runs after it returns.
// Publishes still in the outbox are lost; their number is logged.
func (b *Broker) Close() error {
	err := b.n.Close()
	if k := b.outbox.Len(); k > 0 {
		b.n.Log().Warn("nats: closed with publishes still in the outbox; they are lost", "count", k)
	}
	return err
}

// Ping implements brokers.Pinger: a round trip to the server, with no
// publish waiting in the outbox (while one does, publishes do not reach
// the other nodes).
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.n.Check(ctx); err != nil {
		return fmt.Errorf("nats: ping: %w", err)
	}
	if k := b.outbox.Len(); k > 0 {
		return fmt.Errorf("nats: ping: %w: %d publishes waiting in the outbox", brokers.ErrUnavailable, k)
	}
	if err := b.n.Flush(ctx); err != nil {
		return fmt.Errorf("nats: ping: %w", err)
	}
	return nil
}

// ClientURL is the client URL of the embedded server ("" with a URL set),
// so a second node can connect to it.
func (b *Broker) ClientURL() string { return b.n.ClientURL() }

// OutboxLen is the number of publishes waiting for the server (a metric).
func (b *Broker) OutboxLen() int { return b.outbox.Len() }

// Pending implements brokers.PendingReporter (see natsbase.Node.Pending).
func (b *Broker) Pending() brokers.PendingStats { return b.n.Pending() }

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
