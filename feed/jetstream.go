package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/internal/natsname"
)

// JetStreamConfig configures a feed over the jetstream broker's history
// stream. Prefix and Stream must be the nodes' (broker.jetstream.prefix,
// broker.jetstream.stream).
type JetStreamConfig struct {
	// Conn is a connection to the NATS servers the nodes use, with a
	// credential allowed to read the stream and create consumers on it.
	// The feed does not close it.
	Conn *nats.Conn
	// Prefix starts the nodes' subjects; default "sg".
	Prefix string
	// Stream is the history stream; default <PREFIX>_HISTORY.
	Stream string
	// Pattern selects channels (see Match). Without '*' the consumer
	// filters on the one channel's subject; with '*' it reads every
	// channel's messages and drops the others here.
	Pattern string
	// MaxMessageSize is the nodes' client.max_message_size; larger
	// payloads are rejected as no node writes them. Default 65536.
	MaxMessageSize int
	// BufferBytes bounds what the consumer pulls ahead, in bytes; it must
	// exceed the servers' max_payload (1 MiB by default) or a message that
	// large stalls the feed. Default 16 MiB.
	BufferBytes int
	// Log gets dropped entries; nil discards.
	Log *slog.Logger
}

// JetStream is a feed over the history stream: an ordered consumer (no
// state on the server, nothing to clean up) reading the stream in stream
// order, which is each channel's seq order.
type JetStream struct {
	cfg      JetStreamConfig
	created  int64 // the stream's creation time, in tokens
	msgs     jetstream.MessagesContext
	rejected atomic.Uint64
	closed   atomic.Bool
}

var _ Reader = (*JetStream)(nil)

// tokenPrefix starts a JetStream token: js.<stream created unix ns>.<stream seq>.
const tokenPrefix = "js."

// OpenJetStream starts a feed after r.After (r.Channel is not used), or
// at the oldest message the stream holds. A token from a stream that has
// since been created anew (its history lost) starts at the new stream's
// oldest message: the channels' epochs differ from the persisted ones.
func OpenJetStream(ctx context.Context, cfg JetStreamConfig, r Resume) (*JetStream, error) {
	if cfg.Conn == nil {
		return nil, fmt.Errorf("%w: Conn is nil", ErrConfig)
	}
	if err := checkPattern(cfg.Pattern); err != nil {
		return nil, err
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sg"
	}
	if !natsname.ValidPrefix(cfg.Prefix) {
		return nil, fmt.Errorf("%w: Prefix %q is not a subject prefix", ErrConfig, cfg.Prefix)
	}
	if cfg.Stream == "" {
		cfg.Stream = natsname.StreamName(cfg.Prefix, "HISTORY")
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = 16 << 20
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	var created, after uint64
	if r.After != "" {
		var err error
		created, after, err = parseToken(r.After)
		if err != nil {
			return nil, err
		}
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("feed: jetstream: %w", err)
	}
	s, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("feed: stream %s: %w", cfg.Stream, err)
	}
	f := &JetStream{cfg: cfg, created: s.CachedInfo().Created.UnixNano()}
	occ := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{cfg.Prefix + ".h.*"},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if !strings.Contains(cfg.Pattern, "*") {
		occ.FilterSubjects = []string{cfg.Prefix + ".h." + natsname.Token(cfg.Pattern)}
	}
	switch {
	case r.After == "":
	case int64(created) != f.created:
		cfg.Log.Warn("feed: the history stream was created anew since the token was written: starting at its oldest message",
			"stream", cfg.Stream)
	default:
		occ.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		occ.OptStartSeq = after + 1
	}
	c, err := s.OrderedConsumer(ctx, occ)
	if err != nil {
		return nil, fmt.Errorf("feed: consumer on %s: %w", cfg.Stream, err)
	}
	f.msgs, err = c.Messages(jetstream.PullMaxBytes(cfg.BufferBytes))
	if err != nil {
		return nil, fmt.Errorf("feed: consumer on %s: %w", cfg.Stream, err)
	}
	return f, nil
}

// Next implements Reader.
func (f *JetStream) Next(ctx context.Context) (Publication, error) {
	for {
		if f.closed.Load() {
			return Publication{}, ErrClosed
		}
		m, err := f.msgs.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return Publication{}, ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return Publication{}, ErrClosed
			}
			return Publication{}, fmt.Errorf("feed: %s: %w", f.cfg.Stream, err)
		}
		if p, ok := f.decode(m); ok {
			return p, nil
		}
	}
}

// decode turns a stored message into a Publication, or drops it: another
// channel (pattern), an epoch marker, or malformed (counted, logged).
func (f *JetStream) decode(m jetstream.Msg) (Publication, bool) {
	md, err := m.Metadata()
	if err != nil {
		f.reject("no metadata", m.Subject(), 0)
		return Publication{}, false
	}
	tok, ok := strings.CutPrefix(m.Subject(), f.cfg.Prefix+".h.")
	ch, ok2 := natsname.ParseToken(tok)
	if !ok || !ok2 || !gateway.ValidChannel(ch) {
		f.reject("subject", m.Subject(), md.Sequence.Stream)
		return Publication{}, false
	}
	if !Match(f.cfg.Pattern, ch) {
		return Publication{}, false
	}
	h := m.Headers()
	seq, err := strconv.ParseUint(h.Get("Sg-Seq"), 10, 64)
	if err != nil {
		f.reject("seq header", ch, md.Sequence.Stream)
		return Publication{}, false
	}
	if seq == 0 {
		return Publication{}, false // an epoch marker older versions stored
	}
	bp := brokers.Publication{Seq: seq, Epoch: h.Get("Sg-Epoch"), Data: m.Data()}
	if was := h.Get("Sg-Was"); was != "" {
		n, e, found := strings.Cut(was, ":")
		ws, err := strconv.ParseUint(n, 10, 64)
		if !found || err != nil {
			f.reject("was header", ch, md.Sequence.Stream)
			return Publication{}, false
		}
		bp.Was = brokers.Position{Seq: ws, Epoch: e}
	}
	if bp.Epoch == "" {
		f.reject("epoch header", ch, md.Sequence.Stream)
		return Publication{}, false
	}
	from, data, bin, err := gateway.DecodePublication(bp, f.cfg.MaxMessageSize)
	if err != nil {
		f.reject("payload", ch, md.Sequence.Stream)
		return Publication{}, false
	}
	return Publication{
		Ch: ch, Seq: seq, Epoch: bp.Epoch, Was: bp.Was,
		From: from, Data: append([]byte(nil), data...), Binary: bin,
		Token: tokenPrefix + strconv.FormatInt(f.created, 10) + "." + strconv.FormatUint(md.Sequence.Stream, 10),
	}, true
}

func (f *JetStream) reject(what, where string, sseq uint64) {
	f.rejected.Add(1)
	f.cfg.Log.Warn("feed: dropped a malformed entry of the history stream (someone with write access to it, or a bug)",
		"what", what, "at", where, "stream_seq", sseq)
}

// Rejected implements Reader.
func (f *JetStream) Rejected() uint64 { return f.rejected.Load() }

// Close implements Reader.
func (f *JetStream) Close() error {
	if f.closed.CompareAndSwap(false, true) {
		f.msgs.Stop()
	}
	return nil
}

func parseToken(t string) (created, seq uint64, err error) {
	rest, ok := strings.CutPrefix(t, tokenPrefix)
	c, s, ok2 := strings.Cut(rest, ".")
	if ok && ok2 {
		created, err1 := strconv.ParseUint(c, 10, 63)
		seq, err2 := strconv.ParseUint(s, 10, 64)
		if err1 == nil && err2 == nil {
			return created, seq, nil
		}
	}
	return 0, 0, fmt.Errorf("%w: %.40q", ErrToken, t)
}
