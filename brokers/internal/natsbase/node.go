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

// Lifecycle states of a Node: new -> opening (Open) -> running (Run) ->
// closed (Close). Abort takes an opening node back to new; Close from
// opening closes what Open opened.
const (
	stateNew int32 = iota
	stateOpening
	stateRunning
	stateClosed
)

// Channel is what a Node needs of a backend's subscribed channel.
type Channel interface {
	comparable
	// Deactivate stops every delivery for the channel. Close calls it,
	// with no Node lock held, after the delivery shards have stopped:
	// it must not call back into the Node.
	Deactivate()
}

// Node is a NATS backend's connection to the server and what hangs on it:
// lifecycle, embedded server, connection, requests in flight, delivery
// shards, subscribed channels and presence. A backend's Broker holds one
// and calls it. Apart from the functions given to Register and
// DeliverLocal, which run before those calls return, the Node calls the
// backend only through Channel.Deactivate, and the shards through the
// function the backend gave NewShards. Name ("nats", "jetstream")
// prefixes errors and logs.
//
// A backend starts it in steps, with its own setup in the middle:
//
//	nc, err := n.Open(ctx, h, cfg)  // embedded server, connection
//	err = setup(ctx, nc)            // the backend's streams and subscriptions
//	if err != nil { n.Abort() }     // closes what Open opened
//	err = n.Run(shards, presence)   // running: Subscribe, Publish... may use it
//	n.Go(flusher)                   // a goroutine Close waits for
//
// Lock rules, all kept in this file: lifeMu serializes Open, Abort, Run,
// Go and Close. What Open and Run set (the connection, handler, shards,
// presence, lifetime context) is written under lifeMu before the state
// becomes running and never again, so the accessors read it without a
// lock; they are for a running node (or, for Conn, the opening node's
// setup). chansMu guards the channel map; the only call out made under it
// is Register's constructor. deliverMu is held for reading by DeliverLocal and for writing by
// Close, so no local delivery runs after Close.
type Node[C Channel] struct {
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

	deliverMu sync.RWMutex
	inflight  Inflight // requests to end when the connection drops

	chansMu sync.Mutex
	chans   map[string]C
}

// NewNode returns a Node that is not open yet.
func NewNode[C Channel](name string, log *slog.Logger) *Node[C] {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Node[C]{
		name:  name,
		log:   log,
		chans: make(map[string]C),
		kick:  make(chan struct{}, 1),
	}
}

// OpenConfig is what Open needs to reach a server.
type OpenConfig struct {
	URL        string                  // the server to connect to; "" starts Embedded
	Auth       ClientAuth              // the credential and TLS used with URL
	Embedded   natsserver.ServerConfig // the embedded server's settings
	Prefix     string                  // the subject prefix (checked)
	ClientName string                  // the connection's name on the server
}

// Open starts the embedded server when the URL is empty and connects. The
// connection it returns is the backend's to set up (streams,
// subscriptions) before Run; until then the node serves nothing. h is the
// handler DeliverLocal and Handler give the backend once the node runs. A
// second Open fails; so does one after Close.
func (n *Node[C]) Open(ctx context.Context, h brokers.Handler, cfg OpenConfig) (*Conn, error) {
	if h == nil {
		return nil, fmt.Errorf("%s: start: nil handler", n.name)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: start: %w", n.name, err)
	}
	if !natsname.ValidPrefix(cfg.Prefix) {
		return nil, fmt.Errorf("%s: start: bad subject prefix %q", n.name, cfg.Prefix)
	}
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	switch n.state.Load() {
	case stateOpening, stateRunning:
		return nil, fmt.Errorf("%s: start: already started", n.name)
	case stateClosed:
		return nil, fmt.Errorf("%s: start: %w", n.name, brokers.ErrClosed)
	}
	auth := cfg.Auth
	if risky := auth.plaintextRisk(cfg.URL); cfg.URL != "" && len(risky) > 0 {
		n.log.Warn(n.name+": the NATS credential may go to servers off this host in plain text (nats:// URL, no CA): use tls:// URLs and nats.tls.ca_file", "servers", risky)
	}
	if cfg.URL == "" {
		emb := cfg.Embedded
		if !emb.HasCredential() {
			if emb.Exposed() {
				return nil, fmt.Errorf("%s: start: %w: the embedded server listens on %q or has a cluster, so it needs a credential", n.name, natsserver.ErrNoCredential, emb.Listen)
			}
			// Loopback only and nobody else configured: this process is
			// the server's only intended client. The server still asks
			// for a credential; a random one, held only in memory, keeps
			// every other local process out.
			emb.Token = natsserver.RandomToken()
		}
		srv, err := natsserver.StartServer(emb)
		if err != nil {
			return nil, fmt.Errorf("%s: start: %w", n.name, err)
		}
		n.srv = srv
		auth = serverAuth(emb)
	}
	nc, err := Connect(ctx, ConnConfig{URL: cfg.URL, Server: n.srv, Auth: auth, Name: cfg.ClientName, Log: n.log, Notify: n.notify})
	if err != nil {
		n.stopServer()
		return nil, fmt.Errorf("%s: start: %w", n.name, err)
	}
	n.nc, n.handler = nc, h
	n.state.Store(stateOpening)
	return nc, nil
}

// Abort undoes Open after the backend's setup failed: it closes the
// connection and the embedded server, and the node may be opened again.
// It does nothing unless the node is opening.
func (n *Node[C]) Abort() {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.state.Load() != stateOpening {
		return
	}
	n.closeConn()
	n.state.Store(stateNew)
}

// Run starts delivery: once it returns nil the node is running and
// DeliverLocal hands the handler given to Open to the backend. shards are
// the backend's delivery goroutines (NewShards); pres is the presence
// store it set up, nil for none (presence calls then fail with
// brokers.ErrUnavailable). The node owns shards from then on and stops
// them in Close; when Run fails (the node was closed meanwhile) it stops
// them itself.
func (n *Node[C]) Run(shards *Shards, pres *Presence) error {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.state.Load() != stateOpening {
		shards.Stop()
		return fmt.Errorf("%s: start: %w", n.name, brokers.ErrClosed)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.shards, n.pres = shards, pres
	n.state.Store(stateRunning)
	return nil
}

// Go runs f on a goroutine Close waits for; f returns when Done is closed.
// It reports false, not running f, when the node is not running.
func (n *Node[C]) Go(f func()) bool {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.state.Load() != stateRunning {
		return false
	}
	n.wg.Go(f)
	return true
}

// Close stops delivery and the goroutines started with Go, closes the
// connection and shuts the embedded server down. An opening node's
// connection and server are closed too (its backend's setup then fails,
// and so does Run).
func (n *Node[C]) Close() error {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	switch n.state.Swap(stateClosed) {
	case stateOpening:
		n.closeConn()
		return nil
	case stateRunning:
	default:
		return nil
	}
	n.cancel()
	n.deliverMu.Lock()
	//lint:ignore SA2001 waiting for the readers is the point
	n.deliverMu.Unlock()
	n.wg.Wait()
	n.nc.Close()
	n.shards.Stop()
	n.chansMu.Lock()
	chans := make([]C, 0, len(n.chans))
	for _, c := range n.chans {
		chans = append(chans, c)
	}
	clear(n.chans)
	n.chansMu.Unlock()
	for _, c := range chans {
		c.Deactivate()
	}
	n.stopServer()
	return nil
}

// closeConn closes the connection and the embedded server (lifeMu held).
func (n *Node[C]) closeConn() {
	n.nc.Close()
	n.stopServer()
}

// stopServer shuts the embedded server down, if there is one.
func (n *Node[C]) stopServer() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

// ClientURL is the client URL of the embedded server ("" with a URL set),
// so a second node can connect to it.
func (n *Node[C]) ClientURL() string {
	if n.srv == nil {
		return ""
	}
	return n.srv.ClientURL()
}

// Flush is a round trip to the server, for a backend's Ping.
func (n *Node[C]) Flush(ctx context.Context) error {
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	if err := n.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("%w: %w", brokers.ErrUnavailable, err)
	}
	return nil
}

// Pending is the delivery half of brokers.PendingReporter: the deliveries
// waiting in the shard queues, their capacity, and the embedded server's
// limit on bytes pending to a connection (natsserver.ServerMaxPending;
// unknown for an external server).
func (n *Node[C]) Pending() brokers.PendingStats {
	var st brokers.PendingStats
	if n.state.Load() != stateRunning && n.state.Load() != stateClosed {
		return st
	}
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
func (n *Node[C]) Check(ctx context.Context) error {
	if n.state.Load() != stateRunning {
		return brokers.ErrClosed
	}
	return ctx.Err()
}

// OpCtx bounds a call's context by the node's lifetime and the connection:
// Close and a lost connection end it (see Inflight).
func (n *Node[C]) OpCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, done := n.inflight.Context(ctx, n.ctx)
	return ctx, context.CancelFunc(done)
}

// BgCtx is OpCtx for the node's own work, bounded by d.
func (n *Node[C]) BgCtx(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(n.ctx, d)
	ctx, done := n.inflight.Context(ctx, n.ctx)
	return ctx, func() { done(); cancel() }
}

// notify is the connection's event callback: a lost connection ends the
// requests in flight; every event wakes the flusher.
func (n *Node[C]) notify(e ConnEvent) {
	if e == ConnLost {
		n.inflight.CancelAll()
	}
	n.Poke()
}

// Poke wakes the flusher.
func (n *Node[C]) Poke() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Log is the node's logger.
func (n *Node[C]) Log() *slog.Logger { return n.log }

// Conn is the connection (once opened).
func (n *Node[C]) Conn() *Conn { return n.nc }

// Handler is the handler given to Run.
func (n *Node[C]) Handler() brokers.Handler { return n.handler }

// Presence is the presence store given to Run (nil without one).
func (n *Node[C]) Presence() *Presence { return n.pres }

// Queue is the delivery shard queue for channel ch.
func (n *Node[C]) Queue(ch string) chan *nats.Msg { return n.shards.Queue(ch) }

// Running reports whether the node is running (Run returned, no Close).
func (n *Node[C]) Running() bool { return n.state.Load() == stateRunning }

// Done is closed when Close begins.
func (n *Node[C]) Done() <-chan struct{} { return n.ctx.Done() }

// Closing reports whether Close has begun.
func (n *Node[C]) Closing() bool { return n.ctx.Err() != nil }

// Kicked receives when Poke was called, the connection was lost or came
// back, or a subscription dropped messages (the flusher waits on it).
func (n *Node[C]) Kicked() <-chan struct{} { return n.kick }

// Register returns the subscribed channel ch, or, when there is none,
// registers newC() under ch and returns it with fresh true. newC runs under
// the channel-map lock, so it must not call back into the Node; a backend
// may lock the new channel there, so no one who finds it sees it
// half-built.
func (n *Node[C]) Register(ch string, newC func() C) (c C, fresh bool) {
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
func (n *Node[C]) DeliverLocal(ch string, deliver func(c C, h brokers.Handler)) {
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
func (n *Node[C]) Channel(ch string) C {
	n.chansMu.Lock()
	defer n.chansMu.Unlock()
	return n.chans[ch]
}

// Channels returns the subscribed channels.
func (n *Node[C]) Channels() []C {
	n.chansMu.Lock()
	defer n.chansMu.Unlock()
	cs := make([]C, 0, len(n.chans))
	for _, c := range n.chans {
		cs = append(cs, c)
	}
	return cs
}

// Lookup returns the subscribed channel named by a subject token.
func (n *Node[C]) Lookup(tok string) C {
	name, ok := natsname.ParseToken(tok)
	if !ok {
		var none C
		return none
	}
	return n.Channel(name)
}

// Forget removes c from the subscribed channels if it is still the one
// registered under name.
func (n *Node[C]) Forget(name string, c C) {
	n.chansMu.Lock()
	if n.chans[name] == c {
		delete(n.chans, name)
	}
	n.chansMu.Unlock()
}

// errNoPresence: the server has no JetStream to keep presence in.
var errNoPresence = fmt.Errorf("%w: presence needs JetStream on the NATS server", brokers.ErrUnavailable)

func (n *Node[C]) presenceCheck(ctx context.Context, op, ch string) error {
	if err := n.Check(ctx); err != nil {
		return fmt.Errorf("%s: %s %s: %w", n.name, op, ch, err)
	}
	if n.pres == nil {
		return fmt.Errorf("%s: %s %s: %w", n.name, op, ch, errNoPresence)
	}
	return nil
}

// Join implements brokers.Presence.
func (n *Node[C]) Join(ctx context.Context, ch string, m brokers.Member, ttl time.Duration) error {
	if err := n.presenceCheck(ctx, "join", ch); err != nil {
		return err
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	return Wrap(n.name, "join", ch, n.pres.Join(ctx, ch, m, ttl))
}

// Leave implements brokers.Presence.
func (n *Node[C]) Leave(ctx context.Context, ch string, m brokers.Member) error {
	if err := n.presenceCheck(ctx, "leave", ch); err != nil {
		return err
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	return Wrap(n.name, "leave", ch, n.pres.Leave(ctx, ch, m))
}

// Refresh implements brokers.Presence.
func (n *Node[C]) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if err := n.presenceCheck(ctx, "refresh", ch); err != nil {
		return err
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	return Wrap(n.name, "refresh", ch, n.pres.Refresh(ctx, ch, ms, ttl))
}

// Members implements brokers.Presence.
func (n *Node[C]) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	if err := n.presenceCheck(ctx, "members", ch); err != nil {
		return nil, err
	}
	ctx, cancel := n.OpCtx(ctx)
	defer cancel()
	ms, err := n.pres.Members(ctx, ch)
	return ms, Wrap(n.name, "members", ch, err)
}

// SetupRetry runs f until it succeeds or ctx ends, each attempt bounded
// (requests sent before a cluster has its meta leader go unanswered),
// logging the failures.
func (n *Node[C]) SetupRetry(ctx context.Context, f func(ctx context.Context) error) error {
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
