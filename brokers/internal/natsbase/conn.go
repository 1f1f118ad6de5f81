package natsbase

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
)

// Reconnect policy: forever, every ReconnectWait plus up to ReconnectJitter
// of random delay, so a fleet of nodes does not reconnect in lock step.
const (
	ReconnectWait   = 250 * time.Millisecond
	ReconnectJitter = 500 * time.Millisecond
	// A dead server (no TCP close, say a partition) is noticed after
	// pingInterval * (maxPingsOut + 1) at most.
	pingInterval = 2 * time.Second
	maxPingsOut  = 2
	dialTimeout  = 2 * time.Second
)

// ConnConfig configures Connect.
type ConnConfig struct {
	// URL lists the servers, comma-separated. Ignored when Server is set.
	URL string
	// Server, when set, is an embedded server to connect to in-process.
	Server *server.Server
	// Auth is the credential (and TLS) to use.
	Auth ClientAuth
	// Name names the connection (seen in the server's monitoring).
	Name string
	// Log gets connection state changes and async errors (slow consumer).
	Log *slog.Logger
	// Notify, when set, is called (from the client library's callback
	// goroutine; it must not block) on each ConnEvent.
	Notify func(ConnEvent)
}

// ConnEvent is what a Conn tells its owner (ConnConfig.Notify).
type ConnEvent int

// Connection events.
const (
	ConnLost    ConnEvent = iota // the connection dropped
	ConnBack                     // it is back (the library reconnected)
	ConnDropped                  // a subscription dropped messages: its queue was full (see Dropped)
)

// Conn is a client connection with the reconnect policy the brokers share.
type Conn struct {
	*nats.Conn
	closed  chan struct{} // closed by the library's closed callback
	dropped atomic.Uint64 // slow-consumer reports
}

// Dropped counts the times a subscription dropped messages because its
// queue was full (the library's slow-consumer error). A backend that must
// notice every drop compares it with the count it last saw.
func (c *Conn) Dropped() uint64 { return c.dropped.Load() }

// Connect dials and returns once connected. Publishes while reconnecting
// fail at once (the library's reconnect buffer is off): the brokers keep
// their own outbox, which knows what a publish means.
func Connect(ctx context.Context, cfg ConnConfig) (*Conn, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	notify := cfg.Notify
	if notify == nil {
		notify = func(ConnEvent) {}
	}
	c := &Conn{closed: make(chan struct{})}
	var once sync.Once
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(ReconnectWait),
		nats.ReconnectJitter(ReconnectJitter, ReconnectJitter),
		nats.ReconnectBufSize(-1),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.Timeout(dialTimeout),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() && err == nil {
				// Our own Close, as the node stops: routine.
				log.Debug("nats: connection closed")
			} else {
				log.Warn("nats: disconnected", "err", err)
			}
			notify(ConnLost)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats: reconnected", "server", nc.ConnectedUrlRedacted())
			notify(ConnBack)
		}),
		nats.ClosedHandler(func(*nats.Conn) { once.Do(func() { close(c.closed) }) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("nats: async error", "subject", sub.Subject, "err", err)
				if errors.Is(err, nats.ErrSlowConsumer) {
					c.dropped.Add(1)
					notify(ConnDropped)
				}
				return
			}
			log.Warn("nats: async error", "err", err)
		}),
	}
	authOpts, err := cfg.Auth.options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, authOpts...)
	url := cfg.URL
	if cfg.Server != nil {
		opts = append(opts, nats.InProcessServer(cfg.Server))
		url = ""
	} else if url == "" {
		return nil, errors.New("nats: no server URL")
	}
	shown := RedactURLs(url) // never a password in an error
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(url, opts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			if errors.Is(r.err, nats.ErrAuthorization) || errors.Is(r.err, nats.ErrAuthExpired) || errors.Is(r.err, nats.ErrAuthRevoked) {
				// Not an outage: a wrong credential stays wrong.
				return nil, fmt.Errorf("nats: connect %s: %w: %w", shown, ErrAuth, r.err)
			}
			return nil, fmt.Errorf("nats: connect %s: %w: %w", shown, brokers.ErrUnavailable, r.err)
		}
		c.Conn = r.nc
		return c, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("nats: connect %s: %w", shown, ctx.Err())
	}
}

// Close closes the connection and waits (briefly) until the library has
// run its closed callback, the last thing its callback goroutine does.
func (c *Conn) Close() {
	c.Conn.Close()
	select {
	case <-c.closed:
	case <-time.After(5 * time.Second):
	}
}

// IsConnErr reports whether err says the connection is down or the request
// went unanswered, rather than that the request was refused.
func IsConnErr(err error) bool {
	return errors.Is(err, nats.ErrReconnectBufExceeded) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrNoServers) ||
		errors.Is(err, nats.ErrStaleConnection) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ErrDisconnected)
}

// Shards runs n goroutines, each draining one queue of messages and calling
// handle for each, so messages of one queue are handled one at a time, in
// arrival order. A channel's subscriptions all feed the queue its name
// hashes to.
type Shards struct {
	seed   maphash.Seed
	queues []chan *nats.Msg
	stop   chan struct{}
	wg     sync.WaitGroup
}

// NewShards starts n goroutines with queues of capacity size each.
func NewShards(n, size int, handle func(*nats.Msg)) *Shards {
	s := &Shards{seed: maphash.MakeSeed(), queues: make([]chan *nats.Msg, n), stop: make(chan struct{})}
	for i := range s.queues {
		q := make(chan *nats.Msg, size)
		s.queues[i] = q
		s.wg.Go(func() {
			for {
				select {
				case m := <-q:
					handle(m)
				case <-s.stop:
					return
				}
			}
		})
	}
	return s
}

// Len is the messages waiting in all queues; Cap what they can hold.
func (s *Shards) Len() int {
	n := 0
	for _, q := range s.queues {
		n += len(q)
	}
	return n
}

// Cap is the messages all queues can hold before the client library drops
// deliveries (a slow consumer).
func (s *Shards) Cap() int {
	n := 0
	for _, q := range s.queues {
		n += cap(q)
	}
	return n
}

// Queue returns the queue that ch's subscriptions feed.
func (s *Shards) Queue(ch string) chan *nats.Msg {
	return s.queues[maphash.String(s.seed, ch)%uint64(len(s.queues))]
}

// Stop stops the goroutines and waits for them; no handle call runs after.
// The queues are not closed (the client library may still hold them).
func (s *Shards) Stop() {
	close(s.stop)
	s.wg.Wait()
}
