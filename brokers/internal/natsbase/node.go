package natsbase

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/natsname"
	"github.com/syncgate/syncgate/internal/natsserver"
)

// Lifecycle states of a Node.
const (
	stateNew int32 = iota
	stateRunning
	stateClosed
)

// Channel is what a Node needs of a backend's subscribed channel.
type Channel interface {
	comparable
	// Deactivate stops every delivery for the channel (at Close).
	Deactivate()
}

// Node is the state and the plumbing both NATS backends share: lifecycle,
// connection, embedded server, delivery shards, subscribed channels, outbox
// and presence. Its state is its own: a backend holds one, starts it with
// Start and reaches that state only through the methods below, so the lock
// rules (lifeMu for Start and Close, chansMu for the channel map, deliverMu
// between local deliveries and Close) are kept here alone. Name ("nats",
// "jetstream") prefixes errors and logs.
//
// What Start sets (the connection, handler, presence, shards, lifetime
// context) is written once under lifeMu before the state becomes running
// and only read afterwards, so its accessors take no lock; a backend calls
// them only after a successful Start (and its Setup, Handle and Run
// callbacks, which Start orders after what they read).
type Node[C Channel, E any] struct {
	name string
	log  *slog.Logger

	lifeMu  sync.Mutex
	state   atomic.Int32
	handler brokers.Handler
	srv     *server.Server // embedded, owned; nil when connecting to a URL
	nc      *Conn
	pres    *Presence       // nil without JetStream (core NATS)
	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	shards  *Shards
	kick    chan struct{} // wakes the backend's flusher
	wg      sync.WaitGroup

	// deliverMu: local deliveries (publishes during an outage) hold it for
	// reading; Close takes it for writing, so none runs after Close.
	deliverMu sync.RWMutex
	inflight  Inflight // requests to end when the connection drops

	chansMu sync.Mutex
	chans   map[string]C

	outbox *Outbox[E]
}

// NewNode returns a Node with its maps and channels made.
func NewNode[C Channel, E any](name string, log *slog.Logger, outboxSize int) *Node[C, E] {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Node[C, E]{
		name:   name,
		log:    log,
		chans:  make(map[string]C),
		outbox: NewOutbox[E](outboxSize),
		kick:   make(chan struct{}, 1),
	}
}

// Close stops delivery and the backend's goroutines (StartConfig.Run), closes
// the connection and shuts the embedded server down. Publishes still in the
// outbox are lost; their number is logged.
func (n *Node[C, E]) Close() error {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.state.Swap(stateClosed) != stateRunning {
		return nil
	}
	n.cancel()
	n.deliverMu.Lock()
	//lint:ignore SA2001 waiting for the readers is the point
	n.deliverMu.Unlock()
	n.wg.Wait()
	if k := n.outbox.Len(); k > 0 {
		n.log.Warn(n.name+": closing with publishes still in the outbox; they are lost", "count", k)
	}
	n.nc.Close()
	n.shards.Stop()
	n.chansMu.Lock()
	for _, c := range n.chans {
		c.Deactivate()
	}
	clear(n.chans)
	n.chansMu.Unlock()
	n.stopServer()
	return nil
}

// stopServer shuts the embedded server down, if there is one.
func (n *Node[C, E]) stopServer() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

// ClientURL is the client URL of the embedded server ("" with a URL set),
// so a second node can connect to it.
func (n *Node[C, E]) ClientURL() string {
	if n.srv == nil {
		return ""
	}
	return n.srv.ClientURL()
}

// Ping implements brokers.Pinger: a round trip to the server, with no
// publish waiting in the outbox (while one does, publishes do not reach
// the other nodes).
func (n *Node[C, E]) Ping(ctx context.Context) error {
	if err := n.Check(ctx); err != nil {
		return fmt.Errorf("%s: ping: %w", n.name, err)
	}
	if k := n.outbox.Len(); k > 0 {
		return fmt.Errorf("%s: ping: %w: %d publishes waiting in the outbox", n.name, brokers.ErrUnavailable, k)
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	if err := n.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("%s: ping: %w: %w", n.name, brokers.ErrUnavailable, err)
	}
	return nil
}

// OutboxLen is the number of publishes waiting for the server (a metric).
func (n *Node[C, E]) OutboxLen() int { return n.outbox.Len() }

// Pending implements brokers.PendingReporter: the deliveries waiting in
// the shard queues, their capacity, and the embedded server's limit on
// bytes pending to a connection (natsserver.ServerMaxPending; unknown for an external
// server).
func (n *Node[C, E]) Pending() brokers.PendingStats {
	var st brokers.PendingStats
	if sh := n.shards; sh != nil {
		st.Msgs, st.MsgLimit = sh.Len(), sh.Cap()
	}
	if n.srv != nil {
		st.ServerBytesLimit = natsserver.ServerMaxPending
	}
	return st
}

// Check returns brokers.ErrClosed when the node is not running, else ctx's
// error.
func (n *Node[C, E]) Check(ctx context.Context) error {
	if n.state.Load() != stateRunning {
		return brokers.ErrClosed
	}
	return ctx.Err()
}

// OpCtx bounds a call's context by the node's lifetime and the connection:
// Close and a lost connection end it (see Inflight).
func (n *Node[C, E]) OpCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, done := n.inflight.Context(ctx, n.ctx)
	return ctx, context.CancelFunc(done)
}

// BgCtx is OpCtx for the node's own work, bounded by d.
func (n *Node[C, E]) BgCtx(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(n.ctx, d)
	ctx, done := n.inflight.Context(ctx, n.ctx)
	return ctx, func() { done(); cancel() }
}

// notify is the connection's state callback: a lost connection ends the
// requests in flight; any change wakes the flusher.
func (n *Node[C, E]) notify(connected bool) {
	if !connected {
		n.inflight.CancelAll()
	}
	n.Poke()
}

// Poke wakes the flusher.
func (n *Node[C, E]) Poke() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Log is the node's logger.
func (n *Node[C, E]) Log() *slog.Logger { return n.log }

// Conn is the connection (after Start).
func (n *Node[C, E]) Conn() *Conn { return n.nc }

// Handler is the handler given to Start.
func (n *Node[C, E]) Handler() brokers.Handler { return n.handler }

// Presence is the presence store set by SetPresence (nil without one).
func (n *Node[C, E]) Presence() *Presence { return n.pres }

// SetPresence sets the presence store; only StartConfig.Setup calls it
// (Start holds lifeMu and publishes it with the running state).
func (n *Node[C, E]) SetPresence(p *Presence) { n.pres = p }

// Outbox is the queue of publishes waiting for the server.
func (n *Node[C, E]) Outbox() *Outbox[E] { return n.outbox }

// Queue is the delivery shard queue for channel ch.
func (n *Node[C, E]) Queue(ch string) chan *nats.Msg { return n.shards.Queue(ch) }

// Running reports whether the node is started and not closed.
func (n *Node[C, E]) Running() bool { return n.state.Load() == stateRunning }

// Done is closed when Close begins.
func (n *Node[C, E]) Done() <-chan struct{} { return n.ctx.Done() }

// Closing reports whether Close has begun.
func (n *Node[C, E]) Closing() bool { return n.ctx.Err() != nil }

// Kicked receives when Poke was called (the flusher waits on it).
func (n *Node[C, E]) Kicked() <-chan struct{} { return n.kick }

// Register returns the subscribed channel ch, or, when there is none,
// registers newC() under ch and returns it with fresh true. newC runs under
// the channel-map lock, so it must not call back into the Node; a backend
// may lock the new channel there, so no one who finds it sees it
// half-built.
func (n *Node[C, E]) Register(ch string, newC func() C) (c C, fresh bool) {
	n.chansMu.Lock()
	defer n.chansMu.Unlock()
	if c, ok := n.chans[ch]; ok {
		return c, false
	}
	c = newC()
	n.chans[ch] = c
	return c, true
}

// DeliverLocal runs deliver with the subscribed channel ch and the handler,
// if the node is running and serves ch; Close waits for it, so nothing is
// delivered after Close returns.
func (n *Node[C, E]) DeliverLocal(ch string, deliver func(c C, h brokers.Handler)) {
	n.deliverMu.RLock()
	defer n.deliverMu.RUnlock()
	if !n.Running() {
		return
	}
	var none C
	if c := n.Channel(ch); c != none {
		deliver(c, n.handler)
	}
}

// Channel returns the subscribed channel ch (the zero C when none).
func (n *Node[C, E]) Channel(ch string) C {
	n.chansMu.Lock()
	defer n.chansMu.Unlock()
	return n.chans[ch]
}

// Channels returns the subscribed channels.
func (n *Node[C, E]) Channels() []C {
	n.chansMu.Lock()
	defer n.chansMu.Unlock()
	cs := make([]C, 0, len(n.chans))
	for _, c := range n.chans {
		cs = append(cs, c)
	}
	return cs
}

// Lookup returns the subscribed channel named by a subject token.
func (n *Node[C, E]) Lookup(tok string) C {
	name, ok := natsname.ParseToken(tok)
	if !ok {
		var none C
		return none
	}
	return n.Channel(name)
}

// Forget removes c from the subscribed channels if it is still the one
// registered under name.
func (n *Node[C, E]) Forget(name string, c C) {
	n.chansMu.Lock()
	if n.chans[name] == c {
		delete(n.chans, name)
	}
	n.chansMu.Unlock()
}

// Unsubscribe ends the node's subscription to ch: drop ends the channel's
// own subscriptions (after it is forgotten, so nothing new finds it).
func (n *Node[C, E]) Unsubscribe(ctx context.Context, ch string, drop func(C)) error {
	if err := n.Check(ctx); err != nil {
		return fmt.Errorf("%s: unsubscribe %s: %w", n.name, ch, err)
	}
	var none C
	if c := n.Channel(ch); c != none {
		drop(c)
	}
	return nil
}

// errNoPresence: the server has no JetStream to keep presence in.
var errNoPresence = fmt.Errorf("%w: presence needs JetStream on the NATS server", brokers.ErrUnavailable)

func (n *Node[C, E]) presenceCheck(ctx context.Context, op, ch string) error {
	if err := n.Check(ctx); err != nil {
		return fmt.Errorf("%s: %s %s: %w", n.name, op, ch, err)
	}
	if n.pres == nil {
		return fmt.Errorf("%s: %s %s: %w", n.name, op, ch, errNoPresence)
	}
	return nil
}

// Join implements brokers.Presence.
func (n *Node[C, E]) Join(ctx context.Context, ch string, m brokers.Member, ttl time.Duration) error {
	if err := n.presenceCheck(ctx, "join", ch); err != nil {
		return err
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	return Wrap(n.name, "join", ch, n.pres.Join(ctx, ch, m, ttl))
}

// Leave implements brokers.Presence.
func (n *Node[C, E]) Leave(ctx context.Context, ch string, m brokers.Member) error {
	if err := n.presenceCheck(ctx, "leave", ch); err != nil {
		return err
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	return Wrap(n.name, "leave", ch, n.pres.Leave(ctx, ch, m))
}

// Refresh implements brokers.Presence.
func (n *Node[C, E]) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if err := n.presenceCheck(ctx, "refresh", ch); err != nil {
		return err
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	return Wrap(n.name, "refresh", ch, n.pres.Refresh(ctx, ch, ms, ttl))
}

// Members implements brokers.Presence.
func (n *Node[C, E]) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	if err := n.presenceCheck(ctx, "members", ch); err != nil {
		return nil, err
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	ms, err := n.pres.Members(ctx, ch)
	return ms, Wrap(n.name, "members", ch, err)
}

// Public is what a backend's Broker exports of its Node: the Broker embeds
// it, so Close, Ping, ClientURL, OutboxLen, Pending and the
// brokers.Presence methods are the Node's, while the methods only a
// backend calls (Start, Register, DeliverLocal, ...) stay out of the
// Broker's API.
type Public[C Channel, E any] struct{ n *Node[C, E] }

// PublicOf returns n's exported methods.
func PublicOf[C Channel, E any](n *Node[C, E]) Public[C, E] { return Public[C, E]{n} }

// Close: see Node.Close.
func (p Public[C, E]) Close() error { return p.n.Close() }

// Ping implements brokers.Pinger.
func (p Public[C, E]) Ping(ctx context.Context) error { return p.n.Ping(ctx) }

// ClientURL is the client URL of the embedded server ("" with a URL set).
func (p Public[C, E]) ClientURL() string { return p.n.ClientURL() }

// OutboxLen is the number of publishes waiting for the server (a metric).
func (p Public[C, E]) OutboxLen() int { return p.n.OutboxLen() }

// Pending implements brokers.PendingReporter.
func (p Public[C, E]) Pending() brokers.PendingStats { return p.n.Pending() }

// Join implements brokers.Presence.
func (p Public[C, E]) Join(ctx context.Context, ch string, m brokers.Member, ttl time.Duration) error {
	return p.n.Join(ctx, ch, m, ttl)
}

// Leave implements brokers.Presence.
func (p Public[C, E]) Leave(ctx context.Context, ch string, m brokers.Member) error {
	return p.n.Leave(ctx, ch, m)
}

// Refresh implements brokers.Presence.
func (p Public[C, E]) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	return p.n.Refresh(ctx, ch, ms, ttl)
}

// Members implements brokers.Presence.
func (p Public[C, E]) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	return p.n.Members(ctx, ch)
}

// StartConfig is what Node.Start needs of a backend.
type StartConfig struct {
	URL        string                  // the server to connect to; "" starts Embedded
	Auth       ClientAuth              // the credential and TLS used with URL
	Embedded   natsserver.ServerConfig // the embedded server's settings
	Prefix     string                  // the subject prefix (checked)
	ClientName string                  // the connection's name on the server
	Shards     int                     // delivery shards
	QueueSize  int                     // per shard
	// Handle runs on a delivery shard for each message received.
	Handle func(*nats.Msg)
	// Setup runs once connected (streams, presence via SetPresence,
	// subscriptions); its error ends Start, closing what was opened.
	Setup func(ctx context.Context, nc *Conn) error
	// Run, when set, runs while the node runs (the flusher); it returns
	// when Done is closed. Close waits for it.
	Run func()
	// SlowConsumer: see ConnConfig.
	SlowConsumer func(subject string)
}

// Start starts the embedded server when the URL is empty, connects,
// runs the backend's setup and starts delivery to h.
func (n *Node[C, E]) Start(ctx context.Context, h brokers.Handler, sc StartConfig) error {
	if h == nil {
		return fmt.Errorf("%s: start: nil handler", n.name)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: start: %w", n.name, err)
	}
	if !natsname.ValidPrefix(sc.Prefix) {
		return fmt.Errorf("%s: start: bad subject prefix %q", n.name, sc.Prefix)
	}
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	switch n.state.Load() {
	case stateRunning:
		return fmt.Errorf("%s: start: already started", n.name)
	case stateClosed:
		return fmt.Errorf("%s: start: %w", n.name, brokers.ErrClosed)
	}
	auth := sc.Auth
	if risky := auth.plaintextRisk(sc.URL); sc.URL != "" && len(risky) > 0 {
		n.log.Warn(n.name+": the NATS credential may go to servers off this host in plain text (nats:// URL, no CA): use tls:// URLs and nats.tls.ca_file", "servers", risky)
	}
	if sc.URL == "" {
		emb := sc.Embedded
		if !emb.HasCredential() {
			if emb.Exposed() {
				return fmt.Errorf("%s: start: %w: the embedded server listens on %q or has a cluster, so it needs a credential", n.name, natsserver.ErrNoCredential, emb.Listen)
			}
			// Loopback only and nobody else configured: this process is
			// the server's only intended client. The server still asks
			// for a credential; a random one, held only in memory, keeps
			// every other local process out.
			emb.Token = natsserver.RandomToken()
		}
		srv, err := natsserver.StartServer(emb)
		if err != nil {
			return fmt.Errorf("%s: start: %w", n.name, err)
		}
		n.srv = srv
		auth = serverAuth(emb)
	}
	nc, err := Connect(ctx, ConnConfig{URL: sc.URL, Server: n.srv, Auth: auth, Name: sc.ClientName, Log: n.log, Notify: n.notify, SlowConsumer: sc.SlowConsumer})
	if err != nil {
		n.stopServer()
		return fmt.Errorf("%s: start: %w", n.name, err)
	}
	n.nc = nc
	if err := sc.Setup(ctx, nc); err != nil {
		nc.Close()
		n.stopServer()
		return fmt.Errorf("%s: start: %w", n.name, err)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.handler = h
	n.shards = NewShards(sc.Shards, sc.QueueSize, sc.Handle)
	if sc.Run != nil {
		n.wg.Go(sc.Run)
	}
	n.state.Store(stateRunning)
	return nil
}

// SetupRetry runs f until it succeeds or ctx ends, each attempt bounded
// (requests sent before a cluster has its meta leader go unanswered),
// logging the failures.
func (n *Node[C, E]) SetupRetry(ctx context.Context, f func(ctx context.Context) error) error {
	return Retry(ctx, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := f(ctx)
		if err != nil {
			n.log.Info(n.name+": waiting for JetStream", "err", err)
		}
		return err
	})
}
