package gateway

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// The control plane: what the server API does to users on every node
// (disconnect, unsubscribe, revoke), what each node tells the others about
// itself (a summary: connections, channels, version, every summaryEvery),
// and the revocations a starting node asks for (hello -> revocations)
// travel as publications on one internal channel of the broker,
// ControlChannel.
//
// ControlChannel contains '$', which no client channel name may
// (validChannel), so no client and no server API call can subscribe or
// publish there. Anyone with write access to the broker can, though, so
// every control message is signed: HMAC-SHA256 with api.cluster_secret
// over the body, hex, then the body (JSON). A message that is not signed
// with the secret, is larger than maxControlBytes, has an unknown field or
// a bad value, is more than controlSkew away from this node's clock, or
// repeats a nonce seen within that window is dropped and counted
// (syncgate_control_rejected_total). Without a secret the node neither
// sends nor accepts control messages: server API actions reach this node
// only.
//
// Messages are handled off the broker's delivery goroutine, by one worker
// fed through a queue bounded in count and bytes (a flood is dropped and
// counted, never blocks delivery of other channels).

// ControlChannel is the broker channel nodes exchange control messages on.
const ControlChannel = "$syncgate:control"

const (
	// maxControlBytes bounds one control message: a summary of
	// maxSummaryChannels channels of 255-byte names fits (about 290 KiB).
	maxControlBytes = 512 << 10
	controlSkew     = 30 * time.Second
	controlQueue    = 1024
	// maxControlQueued bounds the bytes waiting in the control queue.
	maxControlQueued = 16 << 20
	// summaryEvery is how often each node publishes its summary; the
	// cluster view (Nodes, Channels) drops a node not heard from for
	// 3 x summaryEvery.
	summaryEvery = 2 * time.Second
	// maxSummaryChannels and maxSummaryBytes bound the channels one
	// summary lists (the busiest first; Truncated says when there were
	// more): summaries are stored in the control channel's history on the
	// log backends, every summaryEvery from every node.
	maxSummaryChannels = 1000
	maxSummaryBytes    = 96 << 10
	maxNodes           = 1000
	// revokeKeep is how long a revocation is kept; tokens issued before
	// it and still valid later than that are accepted again.
	revokeKeep  = 7 * 24 * time.Hour
	maxRevoked  = 100000
	macHexBytes = 2 * sha256.Size
)

// Control message ops.
const (
	ctlDisconnect  = "disconnect"
	ctlUnsubscribe = "unsubscribe"
	ctlRevoke      = "revoke"
	ctlSummary     = "summary"
	// A node that (re)subscribes says hello; the others answer with their
	// revocations, in messages of at most maxRevokedPerMsg.
	ctlHello       = "hello"
	ctlRevocations = "revocations"
)

const maxRevokedPerMsg = 1000

// revocation is one entry of a revocations message.
type revocation struct {
	User   string `json:"user"`
	Before int64  `json:"before"` // unix seconds
}

// controlMsg is the body of a control message.
type controlMsg struct {
	Op        string       `json:"op"`
	Node      string       `json:"node"`
	TS        int64        `json:"ts"` // unix milliseconds when sent
	Nonce     string       `json:"nonce"`
	User      string       `json:"user,omitempty"`
	Ch        string       `json:"ch,omitempty"`
	Reconnect bool         `json:"reconnect,omitempty"`
	Before    int64        `json:"before,omitempty"` // unix seconds
	Summary   *NodeSummary `json:"summary,omitempty"`
	Revoked   []revocation `json:"revoked,omitempty"`
}

// NodeSummary is one node's view of itself, as the server API's info and
// channels methods report it.
type NodeSummary struct {
	Node        string           `json:"node"`
	Version     string           `json:"version"`
	Connections int              `json:"connections"`
	Channels    []ChannelSummary `json:"channels"`
	Truncated   bool             `json:"truncated,omitempty"`
	// Updated is when the summary was made (unix milliseconds).
	Updated int64 `json:"updated"`
}

// ChannelSummary is a channel with this node's subscribers of it.
type ChannelSummary struct {
	Ch          string `json:"ch"`
	Subscribers int    `json:"subscribers"`
}

// control is a node's control-plane state.
type control struct {
	secret []byte // nil: off
	queue  chan []byte
	queued atomic.Int64 // bytes in queue

	mu     sync.Mutex
	nonces map[string]int64 // nonce -> unix ms it may be forgotten
	nodes  map[string]nodeEntry

	rmu     sync.Mutex
	revoked map[string]int64 // user -> tokens issued before (unix seconds) are refused
}

type nodeEntry struct {
	sum  NodeSummary
	seen time.Time
}

func newControl(secret string) *control {
	c := &control{
		nonces:  make(map[string]int64),
		nodes:   make(map[string]nodeEntry),
		revoked: make(map[string]int64),
	}
	if secret != "" {
		c.secret = []byte(secret)
		c.queue = make(chan []byte, controlQueue)
	}
	return c
}

// sign returns the wire form of m: hex HMAC, then the JSON body.
func (c *control) sign(m *controlMsg) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return c.signBody(body)
}

// signBody returns the wire form of a JSON body.
func (c *control) signBody(body []byte) ([]byte, error) {
	mac := hmac.New(sha256.New, c.secret)
	mac.Write(body)
	out := make([]byte, 0, macHexBytes+len(body))
	out = hex.AppendEncode(out, mac.Sum(nil))
	return append(out, body...), nil
}

// Reasons a control message is dropped (label "reason" of
// syncgate_control_rejected_total).
const (
	ctlRejSize      = "size"
	ctlRejSignature = "signature"
	ctlRejDecode    = "decode"
	ctlRejStale     = "stale"
	ctlRejReplay    = "replay"
	ctlRejQueue     = "queue_full"
)

// verify checks a control message's signature, shape and freshness, and
// returns its body or the reason it was dropped.
func (c *control) verify(p []byte, now time.Time) (*controlMsg, string) {
	if len(p) > maxControlBytes || len(p) < macHexBytes {
		return nil, ctlRejSize
	}
	var got [sha256.Size]byte
	if _, err := hex.Decode(got[:], p[:macHexBytes]); err != nil {
		return nil, ctlRejSignature
	}
	body := p[macHexBytes:]
	mac := hmac.New(sha256.New, c.secret)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), got[:]) {
		return nil, ctlRejSignature
	}
	var m controlMsg
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil || dec.More() || !m.valid() {
		return nil, ctlRejDecode
	}
	ms := now.UnixMilli()
	if d := ms - m.TS; d > controlSkew.Milliseconds() || d < -controlSkew.Milliseconds() {
		return nil, ctlRejStale
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, seen := c.nonces[m.Nonce]; seen {
		return nil, ctlRejReplay
	}
	if len(c.nonces) >= 4*controlQueue {
		for n, until := range c.nonces {
			if until < ms {
				delete(c.nonces, n)
			}
		}
	}
	c.nonces[m.Nonce] = ms + 2*controlSkew.Milliseconds()
	return &m, ""
}

func validUser(u string) bool { return u != "" && len(u) <= maxUserLen && utf8.ValidString(u) }

// valid checks the fields an op needs; the signature says who sent it,
// this keeps a bug on the sender from doing damage here.
func (m *controlMsg) valid() bool {
	if m.Node == "" || len(m.Node) > 64 || m.Nonce == "" || len(m.Nonce) > 64 {
		return false
	}
	switch m.Op {
	case ctlDisconnect:
		return validUser(m.User)
	case ctlUnsubscribe:
		return validUser(m.User) && validChannel([]byte(m.Ch))
	case ctlRevoke:
		return validUser(m.User) && m.Before > 0
	case ctlHello:
		return true
	case ctlRevocations:
		if len(m.Revoked) == 0 || len(m.Revoked) > maxRevokedPerMsg {
			return false
		}
		for _, r := range m.Revoked {
			if !validUser(r.User) || r.Before <= 0 {
				return false
			}
		}
		return true
	case ctlSummary:
		s := m.Summary
		if s == nil || s.Node != m.Node || len(s.Version) > 255 || s.Connections < 0 || len(s.Channels) > maxSummaryChannels {
			return false
		}
		for _, ch := range s.Channels {
			if !validChannel([]byte(ch.Ch)) || ch.Subscribers < 0 {
				return false
			}
		}
		return true
	}
	return false
}

// controlOn reports whether this node sends and accepts control messages.
func (s *Server) controlOn() bool { return s.ctl.secret != nil }

// handleControl takes a publication on ControlChannel from the broker's
// delivery goroutine: it never blocks.
func (s *Server) handleControl(data []byte) {
	if !s.controlOn() {
		return
	}
	if len(data) > maxControlBytes {
		s.metrics.controlRejected.WithLabelValues(ctlRejSize).Inc()
		return
	}
	if s.ctl.queued.Add(int64(len(data))) > maxControlQueued {
		s.ctl.queued.Add(-int64(len(data)))
		s.metrics.controlRejected.WithLabelValues(ctlRejQueue).Inc()
		return
	}
	select {
	case s.ctl.queue <- bytes.Clone(data):
	default:
		s.ctl.queued.Add(-int64(len(data)))
		s.metrics.controlRejected.WithLabelValues(ctlRejQueue).Inc()
	}
}

// controlLoop subscribes this node to ControlChannel (retrying while the
// broker is down), handles what arrives there, and publishes this node's
// summary every summaryEvery.
func (s *Server) controlLoop() {
	if !s.controlOn() {
		return
	}
	t := time.NewTicker(summaryEvery)
	defer t.Stop()
	subscribed := false
	for {
		if !subscribed {
			ctx, cancel := context.WithTimeout(s.ctx, s.brokerTimeout)
			err := s.broker.Subscribe(ctx, ControlChannel)
			cancel()
			if err == nil {
				subscribed = true
				if err := s.sendControl(s.ctx, &controlMsg{Op: ctlHello}); err != nil && s.ctx.Err() == nil {
					s.log.Warn("control channel: hello not sent; revocations made before this node started are not known to it", "err", err)
				}
				s.publishSummary()
			} else if s.ctx.Err() == nil {
				s.log.Warn("control channel: subscribe failed; retrying", "err", err)
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case p := <-s.ctl.queue:
			s.ctl.queued.Add(-int64(len(p)))
			s.applyControl(p)
		case <-t.C:
			if subscribed {
				s.publishSummary()
			}
		}
	}
}

func (s *Server) applyControl(p []byte) {
	m, why := s.ctl.verify(p, time.Now())
	if m == nil {
		s.metrics.controlRejected.WithLabelValues(why).Inc()
		if s.payloadLog.Allow() {
			s.log.Warn("dropped a control message from the broker (not signed with api.cluster_secret, malformed, stale or replayed)", "reason", why, "bytes", len(p))
		}
		return
	}
	if m.Node == s.nodeID {
		return // acted on already when sent
	}
	s.metrics.controlApplied.WithLabelValues(m.Op).Inc()
	switch m.Op {
	case ctlDisconnect:
		s.disconnectLocal(m.User, m.Reconnect)
	case ctlUnsubscribe:
		s.unsubscribeLocal(m.User, m.Ch)
	case ctlRevoke:
		if _, err := s.revokeLocal(m.User, m.Before); err != nil {
			s.log.Error("revoke from another node not recorded", "user", m.User, "err", err)
		}
	case ctlHello:
		s.sendRevocations()
	case ctlRevocations:
		for _, r := range m.Revoked {
			if _, err := s.revokeLocal(r.User, r.Before); err != nil {
				s.log.Error("revocation from another node not recorded", "user", r.User, "err", err)
				break
			}
		}
	case ctlSummary:
		s.ctl.mu.Lock()
		if _, known := s.ctl.nodes[m.Node]; known || len(s.ctl.nodes) < maxNodes {
			s.ctl.nodes[m.Node] = nodeEntry{sum: *m.Summary, seen: time.Now()}
		}
		s.ctl.mu.Unlock()
	}
}

// sendControl signs m and publishes it on ControlChannel. It returns
// ErrControlOff when api.cluster_secret is not set.
func (s *Server) sendControl(ctx context.Context, m *controlMsg) error {
	if !s.controlOn() {
		return ErrControlOff
	}
	m.Node = s.nodeID
	m.TS = time.Now().UnixMilli()
	m.Nonce = randomID(24)
	p, err := s.ctl.sign(m)
	if err != nil {
		return err
	}
	if len(p) > maxControlBytes {
		return errors.New("gateway: control message too large")
	}
	ctx, cancel := context.WithTimeout(ctx, s.brokerTimeout)
	defer cancel()
	_, err = s.broker.Publish(ctx, ControlChannel, p)
	return err
}

// sendRevocations publishes this node's revocations still in force, for a
// node that just started (hello).
func (s *Server) sendRevocations() {
	cutoff := time.Now().Add(-revokeKeep).Unix()
	var all []revocation
	s.ctl.rmu.Lock()
	for u, b := range s.ctl.revoked {
		if b > cutoff {
			all = append(all, revocation{User: u, Before: b})
		}
	}
	s.ctl.rmu.Unlock()
	for len(all) > 0 && s.ctx.Err() == nil {
		n := min(len(all), maxRevokedPerMsg)
		if err := s.sendControl(s.ctx, &controlMsg{Op: ctlRevocations, Revoked: all[:n]}); err != nil {
			s.log.Warn("control channel: revocations not sent to a new node", "err", err)
			return
		}
		all = all[n:]
	}
}

func (s *Server) publishSummary() {
	sum := s.LocalSummary()
	if err := s.sendControl(s.ctx, &controlMsg{Op: ctlSummary, Summary: &sum}); err != nil && s.ctx.Err() == nil {
		s.log.Debug("control channel: summary not published", "err", err)
	}
}

// LocalSummary is this node's summary now: its connections and its
// channels with local subscribers (the busiest maxSummaryChannels).
func (s *Server) LocalSummary() NodeSummary {
	sum := NodeSummary{Node: s.nodeID, Version: s.version, Connections: s.Connections(), Updated: time.Now().UnixMilli()}
	for i := range s.hub.shards {
		sh := &s.hub.shards[i]
		sh.mu.RLock()
		for name, hc := range sh.chans {
			if len(hc.subs) > 0 {
				sum.Channels = append(sum.Channels, ChannelSummary{Ch: name, Subscribers: len(hc.subs)})
			}
		}
		sh.mu.RUnlock()
	}
	sort.Slice(sum.Channels, func(i, j int) bool {
		a, b := sum.Channels[i], sum.Channels[j]
		return a.Subscribers > b.Subscribers || a.Subscribers == b.Subscribers && a.Ch < b.Ch
	})
	size := 0
	for i, c := range sum.Channels {
		size += len(c.Ch) + 32 // {"ch":"...","subscribers":N},
		if i == maxSummaryChannels || size > maxSummaryBytes {
			sum.Channels, sum.Truncated = sum.Channels[:i], true
			break
		}
	}
	return sum
}

// Nodes is the cluster as this node knows it: itself (now) and every node
// whose summary arrived within the last 3 x summaryEvery (2 s), sorted by
// node id. Without api.cluster_secret, this node only.
func (s *Server) Nodes() []NodeSummary {
	out := []NodeSummary{s.LocalSummary()}
	cutoff := time.Now().Add(-3 * summaryEvery)
	s.ctl.mu.Lock()
	for id, e := range s.ctl.nodes {
		if e.seen.Before(cutoff) {
			delete(s.ctl.nodes, id)
			continue
		}
		out = append(out, e.sum)
	}
	s.ctl.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// disconnectLocal closes this node's connections of user.
func (s *Server) disconnectLocal(user string, reconnect bool) int {
	n := 0
	s.eachConn(func(c *conn) {
		if c.authed.Load() && c.user == user {
			c.closeWith("disconnected", "disconnected by the server", reconnect, ws.StatusPolicyViolation, false)
			n++
		}
	})
	return n
}

// unsubscribeLocal ends the subscriptions of this node's connections of
// user to ch: each gets {"op":"unsubscribed","ch":...} (no id: not a
// reply) and leaves the channel's presence. A subscription whose `sub` is
// still in flight is marked and ended by that sub when it is done
// (conn.settle), so the client never sees `unsubscribed` before
// `subscribed` and no presence entry outlives it.
func (s *Server) unsubscribeLocal(user, ch string) int {
	var subs []*sub
	n := 0
	s.eachConn(func(c *conn) {
		if !c.authed.Load() || c.user != user {
			return
		}
		c.smu.Lock()
		if i := c.findSub(ch); i >= 0 && c.subs[i].inflight {
			// Its sub is still in flight: settle carries this out
			// when it is done, in order (commands.go).
			c.subs[i].unsubAsked = true
			c.smu.Unlock()
			n++
			return
		}
		sb := c.dropSub(ch)
		c.smu.Unlock()
		if sb != nil {
			s.hub.remove(sb)
			c.sendFrame(event{op: "unsubscribed"}, textFrame(appendSimple(nil, "unsubscribed", 0, ch, true)))
			subs = append(subs, sb)
		}
	})
	for _, sb := range subs {
		ctx, cancel := context.WithTimeout(s.ctx, s.brokerTimeout)
		s.presenceLeave(ctx, sb)
		cancel()
	}
	return n + len(subs)
}

// errTokenRevoked: the token was issued before a revocation of its user.
var errTokenRevoked = errors.New("token revoked: get a new token")

// revoked reports whether id's token was issued before a revocation of
// its user (a token without iat counts as issued at 0).
func (s *Server) revoked(id *identity) bool {
	s.ctl.rmu.Lock()
	before, ok := s.ctl.revoked[id.user]
	s.ctl.rmu.Unlock()
	return ok && id.issued < before
}

// revokeLocal records that user's tokens issued before `before` (unix
// seconds) are refused, and disconnects this node's connections that
// hold one.
func (s *Server) revokeLocal(user string, before int64) (int, error) {
	now := time.Now()
	s.ctl.rmu.Lock()
	if len(s.ctl.revoked) >= maxRevoked {
		for u, b := range s.ctl.revoked {
			if time.Unix(b, 0).Add(revokeKeep).Before(now) {
				delete(s.ctl.revoked, u)
			}
		}
	}
	cur, ok := s.ctl.revoked[user]
	if !ok && len(s.ctl.revoked) >= maxRevoked {
		s.ctl.rmu.Unlock()
		return 0, ErrRevokedFull
	}
	if before > cur {
		s.ctl.revoked[user] = before
	}
	s.ctl.rmu.Unlock()
	n := 0
	s.eachConn(func(c *conn) {
		if !c.authed.Load() || c.user != user {
			return
		}
		// A connect-hook identity has no token: disconnect is for those.
		if id := c.identity(); id != nil && !id.proxied && id.issued < before {
			s.reject(rejAuth)
			c.closeWith("token_revoked", "the token was revoked; reconnect with a new token", true, ws.StatusPolicyViolation, false)
			n++
		}
	})
	return n, nil
}
