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
	StateNew int32 = iota
	StateRunning
	StateClosed
)

// Channel is what a Node needs of a backend's subscribed channel.
type Channel interface {
	comparable
	// Deactivate stops every delivery for the channel (at Close).
	Deactivate()
}

// Node is the state and the plumbing both NATS backends share: lifecycle,
// connection, embedded server, delivery shards, subscribed channels, outbox
// and presence. A backend holds one and sets the fields in its Start; Name
// ("nats", "jetstream") prefixes errors and logs.
type Node[C Channel, E any] struct {
	Name string
	Log  *slog.Logger

	LifeMu  sync.Mutex
	State   atomic.Int32
	Handler brokers.Handler
	Srv     *server.Server // embedded, owned; nil when connecting to a URL
	NC      *Conn
	Pres    *Presence       // nil without JetStream (core NATS)
	Ctx     context.Context // cancelled by Close
	Cancel  context.CancelFunc
	Shards  *Shards
	Kick    chan struct{} // wakes the backend's flusher
	WG      sync.WaitGroup

	// DeliverMu: local deliveries (publishes during an outage) hold it for
	// reading; Close takes it for writing, so none runs after Close.
	DeliverMu sync.RWMutex
	Inflight  Inflight // requests to end when the connection drops

	ChansMu sync.Mutex
	Chans   map[string]C

	Outbox *Outbox[E]
}

// NewNode returns a Node with its maps and channels made.
func NewNode[C Channel, E any](name string, log *slog.Logger, outboxSize int) *Node[C, E] {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Node[C, E]{
		Name:   name,
		Log:    log,
		Chans:  make(map[string]C),
		Outbox: NewOutbox[E](outboxSize),
		Kick:   make(chan struct{}, 1),
	}
}

// Close stops delivery and the backend's goroutines (those in WG), closes
// the connection and shuts the embedded server down. Publishes still in the
// outbox are lost; their number is logged.
func (n *Node[C, E]) Close() error {
	n.LifeMu.Lock()
	defer n.LifeMu.Unlock()
	if n.State.Swap(StateClosed) != StateRunning {
		return nil
	}
	n.Cancel()
	n.DeliverMu.Lock()
	//lint:ignore SA2001 waiting for the readers is the point
	n.DeliverMu.Unlock()
	n.WG.Wait()
	if k := n.Outbox.Len(); k > 0 {
		n.Log.Warn(n.Name+": closing with publishes still in the outbox; they are lost", "count", k)
	}
	n.NC.Close()
	n.Shards.Stop()
	n.ChansMu.Lock()
	for _, c := range n.Chans {
		c.Deactivate()
	}
	clear(n.Chans)
	n.ChansMu.Unlock()
	n.StopServer()
	return nil
}

// StopServer shuts the embedded server down, if there is one.
func (n *Node[C, E]) StopServer() {
	if n.Srv != nil {
		n.Srv.Shutdown()
		n.Srv.WaitForShutdown()
	}
}

// ClientURL is the client URL of the embedded server ("" with a URL set),
// so a second node can connect to it.
func (n *Node[C, E]) ClientURL() string {
	if n.Srv == nil {
		return ""
	}
	return n.Srv.ClientURL()
}

// Ping implements brokers.Pinger: a round trip to the server, with no
// publish waiting in the outbox (while one does, publishes do not reach
// the other nodes).
func (n *Node[C, E]) Ping(ctx context.Context) error {
	if err := n.Check(ctx); err != nil {
		return fmt.Errorf("%s: ping: %w", n.Name, err)
	}
	if k := n.Outbox.Len(); k > 0 {
		return fmt.Errorf("%s: ping: %w: %d publishes waiting in the outbox", n.Name, brokers.ErrUnavailable, k)
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	if err := n.NC.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("%s: ping: %w: %w", n.Name, brokers.ErrUnavailable, err)
	}
	return nil
}

// OutboxLen is the number of publishes waiting for the server (a metric).
func (n *Node[C, E]) OutboxLen() int { return n.Outbox.Len() }

// Pending implements brokers.PendingReporter: the deliveries waiting in
// the shard queues, their capacity, and the embedded server's limit on
// bytes pending to a connection (natsserver.ServerMaxPending; unknown for an external
// server).
func (n *Node[C, E]) Pending() brokers.PendingStats {
	var st brokers.PendingStats
	if sh := n.Shards; sh != nil {
		st.Msgs, st.MsgLimit = sh.Len(), sh.Cap()
	}
	if n.Srv != nil {
		st.ServerBytesLimit = natsserver.ServerMaxPending
	}
	return st
}

// Check returns brokers.ErrClosed when the node is not running, else ctx's
// error.
func (n *Node[C, E]) Check(ctx context.Context) error {
	if n.State.Load() != StateRunning {
		return brokers.ErrClosed
	}
	return ctx.Err()
}

// OpCtx bounds a call's context by the node's lifetime and the connection:
// Close and a lost connection end it (see Inflight).
func (n *Node[C, E]) OpCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, done := n.Inflight.Context(ctx, n.Ctx)
	return ctx, context.CancelFunc(done)
}

// BgCtx is OpCtx for the node's own work, bounded by d.
func (n *Node[C, E]) BgCtx(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(n.Ctx, d)
	ctx, done := n.Inflight.Context(ctx, n.Ctx)
	return ctx, func() { done(); cancel() }
}

// Notify is the connection's state callback: a lost connection ends the
// requests in flight; any change wakes the flusher.
func (n *Node[C, E]) Notify(connected bool) {
	if !connected {
		n.Inflight.CancelAll()
	}
	n.Poke()
}

// Poke wakes the flusher.
func (n *Node[C, E]) Poke() {
	select {
	case n.Kick <- struct{}{}:
	default:
	}
}

// Channel returns the subscribed channel ch (the zero C when none).
func (n *Node[C, E]) Channel(ch string) C {
	n.ChansMu.Lock()
	defer n.ChansMu.Unlock()
	return n.Chans[ch]
}

// Channels returns the subscribed channels.
func (n *Node[C, E]) Channels() []C {
	n.ChansMu.Lock()
	defer n.ChansMu.Unlock()
	cs := make([]C, 0, len(n.Chans))
	for _, c := range n.Chans {
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
	n.ChansMu.Lock()
	if n.Chans[name] == c {
		delete(n.Chans, name)
	}
	n.ChansMu.Unlock()
}

// Unsubscribe ends the node's subscription to ch: drop ends the channel's
// own subscriptions (after it is forgotten, so nothing new finds it).
func (n *Node[C, E]) Unsubscribe(ctx context.Context, ch string, drop func(C)) error {
	if err := n.Check(ctx); err != nil {
		return fmt.Errorf("%s: unsubscribe %s: %w", n.Name, ch, err)
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
		return fmt.Errorf("%s: %s %s: %w", n.Name, op, ch, err)
	}
	if n.Pres == nil {
		return fmt.Errorf("%s: %s %s: %w", n.Name, op, ch, errNoPresence)
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
	return Wrap(n.Name, "join", ch, n.Pres.Join(ctx, ch, m, ttl))
}

// Leave implements brokers.Presence.
func (n *Node[C, E]) Leave(ctx context.Context, ch string, m brokers.Member) error {
	if err := n.presenceCheck(ctx, "leave", ch); err != nil {
		return err
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	return Wrap(n.Name, "leave", ch, n.Pres.Leave(ctx, ch, m))
}

// Refresh implements brokers.Presence.
func (n *Node[C, E]) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if err := n.presenceCheck(ctx, "refresh", ch); err != nil {
		return err
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	return Wrap(n.Name, "refresh", ch, n.Pres.Refresh(ctx, ch, ms, ttl))
}

// Members implements brokers.Presence.
func (n *Node[C, E]) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	if err := n.presenceCheck(ctx, "members", ch); err != nil {
		return nil, err
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	ms, err := n.Pres.Members(ctx, ch)
	return ms, Wrap(n.Name, "members", ch, err)
}

// Public is what a backend's Broker exports of its Node: the Broker embeds
// it, so Close, Ping, ClientURL, OutboxLen and the brokers.Presence methods
// are the Node's, while the Node's fields stay out of the Broker's API.
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
	// Setup runs once connected (streams, presence, subscriptions); its
	// error ends Start, closing what was opened.
	Setup func(ctx context.Context, nc *Conn) error
	// Run, when set, runs in WG while the node runs (the flusher); it
	// returns when Ctx is done.
	Run func()
	// SlowConsumer: see ConnConfig.
	SlowConsumer func(subject string)
}

// Start starts the embedded server when the URL is empty, connects,
// runs the backend's setup and starts delivery to h.
func (n *Node[C, E]) Start(ctx context.Context, h brokers.Handler, sc StartConfig) error {
	if h == nil {
		return fmt.Errorf("%s: start: nil handler", n.Name)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: start: %w", n.Name, err)
	}
	if !natsname.ValidPrefix(sc.Prefix) {
		return fmt.Errorf("%s: start: bad subject prefix %q", n.Name, sc.Prefix)
	}
	n.LifeMu.Lock()
	defer n.LifeMu.Unlock()
	switch n.State.Load() {
	case StateRunning:
		return fmt.Errorf("%s: start: already started", n.Name)
	case StateClosed:
		return fmt.Errorf("%s: start: %w", n.Name, brokers.ErrClosed)
	}
	auth := sc.Auth
	if risky := auth.plaintextRisk(sc.URL); sc.URL != "" && len(risky) > 0 {
		n.Log.Warn(n.Name+": the NATS credential may go to servers off this host in plain text (nats:// URL, no CA): use tls:// URLs and nats.tls.ca_file", "servers", risky)
	}
	if sc.URL == "" {
		emb := sc.Embedded
		if !emb.HasCredential() {
			if emb.Exposed() {
				return fmt.Errorf("%s: start: %w: the embedded server listens on %q or has a cluster, so it needs a credential", n.Name, natsserver.ErrNoCredential, emb.Listen)
			}
			// Loopback only and nobody else configured: this process is
			// the server's only intended client. The server still asks
			// for a credential; a random one, held only in memory, keeps
			// every other local process out.
			emb.Token = natsserver.RandomToken()
		}
		srv, err := natsserver.StartServer(emb)
		if err != nil {
			return fmt.Errorf("%s: start: %w", n.Name, err)
		}
		n.Srv = srv
		auth = serverAuth(emb)
	}
	nc, err := Connect(ctx, ConnConfig{URL: sc.URL, Server: n.Srv, Auth: auth, Name: sc.ClientName, Log: n.Log, Notify: n.Notify, SlowConsumer: sc.SlowConsumer})
	if err != nil {
		n.StopServer()
		return fmt.Errorf("%s: start: %w", n.Name, err)
	}
	n.NC = nc
	if err := sc.Setup(ctx, nc); err != nil {
		nc.Close()
		n.StopServer()
		return fmt.Errorf("%s: start: %w", n.Name, err)
	}
	n.Ctx, n.Cancel = context.WithCancel(context.Background())
	n.Handler = h
	n.Shards = NewShards(sc.Shards, sc.QueueSize, sc.Handle)
	if sc.Run != nil {
		n.WG.Go(sc.Run)
	}
	n.State.Store(StateRunning)
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
			n.Log.Info(n.Name+": waiting for JetStream", "err", err)
		}
		return err
	})
}
