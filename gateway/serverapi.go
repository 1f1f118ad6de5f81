package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/syncgate/syncgate/brokers"
)

// What the server API (package gateway/serverapi) does through a node. The
// input rules are the client protocol's: channel names (validChannel),
// client.max_message_size, data valid JSON re-encoded compactly
// (appendPubData), so what the API publishes reaches clients exactly as a
// client's publish would.

// Errors of the server API hooks; compare with errors.Is.
var (
	// ErrBadInput: a channel name, user, data or limit the client
	// protocol would refuse too. The message says which.
	ErrBadInput = errors.New("gateway: bad input")
	// ErrTooLarge: data over client.max_message_size.
	ErrTooLarge = errors.New("gateway: data too large")
	// ErrNotSupported: the broker keeps no history or no presence.
	ErrNotSupported = errors.New("gateway: not supported by this broker")
	// ErrUnavailable: the broker could not serve the call (down, timeout).
	ErrUnavailable = errors.New("gateway: broker unavailable")
	// ErrControlOff: api.cluster_secret is not set, so nothing can be sent
	// to the other nodes.
	ErrControlOff = errors.New("gateway: api.cluster_secret not set; other nodes not reached")
	// ErrRevokedFull: the node holds the most revocations it keeps
	// (100000 users revoked within 7 days); nothing was revoked.
	ErrRevokedFull = errors.New("gateway: too many revoked users (100000 within 7 days)")
)

// maxHistoryLimit bounds one history call of the server API.
const maxHistoryLimit = 1000

func badInput(msg string) error { return fmt.Errorf("%w: %s", ErrBadInput, msg) }

// brokerErr maps a broker failure onto ErrUnavailable (or passes it on).
func brokerErr(what string, err error) error {
	switch {
	case errors.Is(err, brokers.ErrUnavailable), errors.Is(err, brokers.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
	}
	return fmt.Errorf("gateway: %s: %w", what, err)
}

// checkChannel applies the client protocol's channel rule.
func checkChannel(ch string) error {
	if !validChannel([]byte(ch)) {
		return badInput(errChannelName.Error())
	}
	return nil
}

// PublishFromServer publishes data on ch as from (the publisher identity
// subscribers see in "from"; may be empty), under the rules of a client's
// publish: a valid channel name, data one JSON value of at most
// client.max_message_size bytes (UTF-8, nested at most 64 deep), sent
// re-encoded compactly.
func (s *Server) PublishFromServer(ctx context.Context, ch, from string, data []byte) (brokers.Position, error) {
	if err := s.CheckPublish(ch, from, data); err != nil {
		return brokers.Position{}, err
	}
	return s.publishPayload(ctx, ch, appendPubData(make([]byte, 0, len(from)+len(data)+32), from, data))
}

// PublishBinaryFromServer publishes raw bytes on ch as from: a binary
// publication (docs/protocol.md "Binary data"), under PublishFromServer's
// rules except that data is any bytes (at most client.max_message_size).
func (s *Server) PublishBinaryFromServer(ctx context.Context, ch, from string, data []byte) (brokers.Position, error) {
	if err := s.CheckPublishBinary(ch, from, data); err != nil {
		return brokers.Position{}, err
	}
	return s.publishPayload(ctx, ch, appendPubBin(make([]byte, 0, len(from)+b64.EncodedLen(len(data))+32), from, data))
}

// CheckPublishBinary applies PublishBinaryFromServer's input rules.
func (s *Server) CheckPublishBinary(ch, from string, data []byte) error {
	if err := s.checkPublisher(ch, from); err != nil {
		return err
	}
	if len(data) > s.cfg.Client.MaxMessageSize {
		return fmt.Errorf("%w: data is %d bytes; client.max_message_size is %d", ErrTooLarge, len(data), s.cfg.Client.MaxMessageSize)
	}
	return nil
}

func (s *Server) publishPayload(ctx context.Context, ch string, payload []byte) (brokers.Position, error) {
	ctx, cancel := context.WithTimeout(ctx, s.brokerTimeout)
	defer cancel()
	start := time.Now()
	pos, err := s.broker.Publish(ctx, ch, payload)
	if err != nil {
		return brokers.Position{}, brokerErr("publish", err)
	}
	s.metrics.publishDur.Observe(time.Since(start).Seconds())
	s.metrics.published.Inc()
	return pos, nil
}

// CheckPublish applies PublishFromServer's input rules without
// publishing; the error wraps ErrBadInput or ErrTooLarge.
func (s *Server) CheckPublish(ch, from string, data []byte) error {
	if err := s.checkPublisher(ch, from); err != nil {
		return err
	}
	if len(data) > s.cfg.Client.MaxMessageSize {
		return fmt.Errorf("%w: data is %d bytes; client.max_message_size is %d", ErrTooLarge, len(data), s.cfg.Client.MaxMessageSize)
	}
	if len(data) == 0 || !validData(data) {
		return badInput(`"data" must be one JSON value in UTF-8, nested at most 64 deep`)
	}
	return nil
}

func (s *Server) checkPublisher(ch, from string) error {
	if err := checkChannel(ch); err != nil {
		return err
	}
	if len(from) > maxUserLen || !utf8.ValidString(from) {
		return badInput(`"from" must be at most 255 bytes of UTF-8`)
	}
	return nil
}

// StoreSnapshotFromServer stores data as ch's snapshot covering the
// messages up to at, under the rules of the `snap` op (docs/protocol.md
// "Snapshots"): data one JSON value (binary false; stored compacted) or
// any bytes (binary true) of at most history.snapshot_max_bytes
// (ErrTooLarge), at a position the channel has reached in its current
// epoch (ErrBadInput); a snapshot replaces the kept one only at a higher
// seq (or a newer epoch). It reports whether it was kept and the position
// of the snapshot the channel has now.
func (s *Server) StoreSnapshotFromServer(ctx context.Context, ch string, at brokers.Position, data []byte, binary bool) (kept bool, now brokers.Position, err error) {
	if err := checkChannel(ch); err != nil {
		return false, now, err
	}
	if at.Seq == 0 || at.Epoch == "" {
		return false, now, badInput(`"at" must name the position the snapshot covers: seq at least 1 and the channel's epoch`)
	}
	if s.snaps == nil || s.history == nil {
		return false, now, fmt.Errorf("%w: snapshots", ErrNotSupported)
	}
	var stored []byte
	if binary {
		stored = append([]byte{binSnapMark}, data...)
	} else {
		if len(data) == 0 || !validData(data) {
			return false, now, badInput(`"data" must be one JSON value in UTF-8, nested at most 64 deep`)
		}
		stored = appendCompactJSON(make([]byte, 0, len(data)), data)
	}
	kept, now, err = s.storeSnapshot(ctx, ch, at, stored)
	var rule *snapRuleError
	switch {
	case errors.As(err, &rule) && rule.code == codeTooLarge:
		return false, now, fmt.Errorf("%w: %s", ErrTooLarge, rule.msg)
	case errors.As(err, &rule):
		return false, now, badInput(rule.msg)
	case err != nil:
		return false, now, brokerErr("snapshot", err)
	}
	return kept, now, nil
}

// SnapshotFromServer returns ch's snapshot: its position and data
// (compact JSON, or the bytes when binary). found is false when the
// channel has none, or the one the broker holds fails validation (as for
// clients, it is then ignored and counted).
func (s *Server) SnapshotFromServer(ctx context.Context, ch string) (pos brokers.Position, data []byte, binary, found bool, err error) {
	if err := checkChannel(ch); err != nil {
		return pos, nil, false, false, err
	}
	if s.snaps == nil {
		return pos, nil, false, false, fmt.Errorf("%w: snapshots", ErrNotSupported)
	}
	ctx, cancel := context.WithTimeout(ctx, s.brokerTimeout)
	defer cancel()
	snap, ok, err := s.snaps.LoadSnapshot(ctx, ch)
	if err != nil {
		return pos, nil, false, false, brokerErr("snapshot", err)
	}
	if !ok {
		return pos, nil, false, false, nil
	}
	data, binary, valid := s.snapshotData(snap)
	if !valid {
		s.metrics.brokerRejected.WithLabelValues(payloadKindSnapshot).Inc()
		s.log.Warn("malformed snapshot from the broker ignored", "channel", ch, "bytes", len(snap.Data))
		return pos, nil, false, false, nil
	}
	return brokers.Position{Seq: snap.Seq, Epoch: snap.Epoch}, data, binary, true, nil
}

// HistoryFromServer returns up to limit (at most 1000) publications of ch
// after since, oldest first, each encoded as the client protocol's msg
// object, and the channel's latest position. A publication from the
// broker that fails validation is left out, as for clients.
func (s *Server) HistoryFromServer(ctx context.Context, ch string, since uint64, limit int) ([][]byte, brokers.Position, error) {
	if err := checkChannel(ch); err != nil {
		return nil, brokers.Position{}, err
	}
	if limit < 0 || limit > maxHistoryLimit {
		return nil, brokers.Position{}, badInput("limit must be 0 to 1000")
	}
	if s.history == nil {
		return nil, brokers.Position{}, fmt.Errorf("%w: history", ErrNotSupported)
	}
	ctx, cancel := context.WithTimeout(ctx, s.brokerTimeout)
	defer cancel()
	pubs, pos, err := s.history.Since(ctx, ch, since, limit)
	if err != nil {
		return nil, brokers.Position{}, brokerErr("history", err)
	}
	if !validEpoch(pos.Epoch) {
		return nil, brokers.Position{}, fmt.Errorf("gateway: history: the broker returned a malformed epoch")
	}
	out := make([][]byte, 0, len(pubs))
	for i := range pubs {
		data, ok := s.brokerPubData(ch, &pubs[i], payloadKindHistory)
		if !ok {
			continue
		}
		out = append(out, appendMsg(nil, ch, pubs[i].Seq, pubs[i].Epoch, pubs[i].Was, data))
	}
	return out, pos, nil
}

// PresenceFromServer lists ch's presence members (invalid ones from the
// broker left out).
func (s *Server) PresenceFromServer(ctx context.Context, ch string) ([]brokers.Member, error) {
	if err := checkChannel(ch); err != nil {
		return nil, err
	}
	if s.presence == nil {
		return nil, fmt.Errorf("%w: presence", ErrNotSupported)
	}
	ctx, cancel := context.WithTimeout(ctx, s.brokerTimeout)
	defer cancel()
	ms, err := s.presence.Members(ctx, ch)
	if err != nil {
		return nil, brokerErr("presence", err)
	}
	return s.brokerMembers(ch, ms), nil
}

// DisconnectUser closes user's connections on this node now and sends the
// same order to every other node through the broker. It returns how many
// connections this node closed; err wraps ErrControlOff or ErrUnavailable
// when the other nodes could not be told (this node acted anyway).
func (s *Server) DisconnectUser(ctx context.Context, user string, reconnect bool) (int, error) {
	if !validUser(user) {
		return 0, badInput(`"user" must be 1 to 255 bytes of UTF-8`)
	}
	n := s.disconnectLocal(user, reconnect)
	return n, s.broadcastControl(ctx, &controlMsg{Op: ctlDisconnect, User: user, Reconnect: reconnect})
}

// UnsubscribeUser ends user's subscriptions to ch on this node now and on
// every other node through the broker (see DisconnectUser).
func (s *Server) UnsubscribeUser(ctx context.Context, user, ch string) (int, error) {
	if !validUser(user) {
		return 0, badInput(`"user" must be 1 to 255 bytes of UTF-8`)
	}
	if err := checkChannel(ch); err != nil {
		return 0, err
	}
	n := s.unsubscribeLocal(user, ch)
	return n, s.broadcastControl(ctx, &controlMsg{Op: ctlUnsubscribe, User: user, Ch: ch})
}

// RevokeUser makes every node refuse user's tokens issued (JWT iat) before
// before, and close the connections that hold one: this node now, the
// others through the broker (see DisconnectUser). Revocations are kept in
// each node's memory for 7 days; a node that starts later gets them from
// the running nodes (control.go, hello).
func (s *Server) RevokeUser(ctx context.Context, user string, before time.Time) (int, error) {
	if !validUser(user) {
		return 0, badInput(`"user" must be 1 to 255 bytes of UTF-8`)
	}
	if before.Unix() <= 0 {
		return 0, badInput(`"before" must be a time after 1970`)
	}
	n, err := s.revokeLocal(user, before.Unix())
	if err != nil {
		return 0, err
	}
	return n, s.broadcastControl(ctx, &controlMsg{Op: ctlRevoke, User: user, Before: before.Unix()})
}

func (s *Server) broadcastControl(ctx context.Context, m *controlMsg) error {
	err := s.sendControl(ctx, m)
	if err == nil || errors.Is(err, ErrControlOff) {
		return err
	}
	return brokerErr("control", err)
}

// MetricsRegisterer is the node's Prometheus registry (served on
// metrics.listen), for the server API's metrics.
func (s *Server) MetricsRegisterer() prometheus.Registerer { return s.metrics.reg }
