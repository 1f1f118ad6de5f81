package gateway

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"github.com/syncgate/syncgate/brokers"
)

// handleCommand runs one client command. It is called by the connection's
// single reader, so a client's commands run in the order it sent them.
func (c *conn) handleCommand(s *scratch, cmd *command) {
	c.srv.metrics.commands[cmd.op].Inc()
	if cmd.op == opUnknown {
		c.sendError(cmd.id, codeBadRequest, "unknown op "+strconv.Quote(string(cmd.opName)))
		return
	}
	if !c.connected && cmd.op != opConnect {
		if c.srv.auth != nil || c.srv.proxy.on(hookConnect) {
			c.srv.reject(rejAuth)
			c.sendError(cmd.id, codeUnauthorized, "connect with a token first")
			return
		}
		// Auth is off: the first other command opens an anonymous session.
		if !c.admit(cmd.id, "anon-"+c.id, nil) {
			return
		}
	}
	switch cmd.op {
	case opConnect:
		c.cmdConnect(s, cmd)
	case opRefresh:
		c.cmdRefresh(s, cmd)
	case opSub:
		c.cmdSub(s, cmd)
	case opUnsub:
		c.cmdUnsub(s, cmd)
	case opPub:
		c.cmdPub(s, cmd)
	case opPresence:
		c.cmdPresence(s, cmd)
	case opSnap:
		c.cmdSnap(s, cmd)
	case opPing:
		c.sendJSON(s, "pong", appendSimple(s.enc[:0], "pong", cmd.id, "", false))
	}
}

const maxUserLen = 255

func (c *conn) cmdConnect(s *scratch, cmd *command) {
	if c.connected {
		c.sendError(cmd.id, codeBadRequest, "already connected: connect must be the first command and is sent once")
		return
	}
	var id *identity
	user := "anon-" + c.id
	switch {
	case c.srv.proxy.on(hookConnect) && c.useConnectProxy(cmd):
		// No JWT: the application's backend decides (cookie sessions).
		ans := c.askProxy(cmd.id, hookConnect, "", nil)
		if ans == nil {
			return
		}
		if ans.user == "" {
			c.srv.proxy.errs.WithLabelValues(hookNames[hookConnect], pxErrBadJSON).Inc()
			c.sendError(cmd.id, codeUnavailable, "connect proxy unavailable, try again")
			return
		}
		id = proxyIdentity(ans)
		user = id.user
	case c.srv.auth != nil:
		token := string(cmd.token)
		if token == "" {
			token = c.urlToken
		}
		var err error
		ctx, cancel := context.WithTimeout(c.srv.ctx, c.srv.brokerTimeout)
		id, err = c.srv.auth.verify(ctx, token)
		cancel()
		if err == nil && c.srv.revoked(id) {
			err = errTokenRevoked
		}
		if err != nil {
			c.srv.reject(rejAuth)
			c.sendError(cmd.id, codeUnauthorized, err.Error())
			return
		}
		user = id.user
	case len(cmd.user) > maxUserLen:
		c.sendError(cmd.id, codeBadRequest, "user must be at most 255 bytes")
		return
	case len(cmd.user) > 0:
		user = string(cmd.user)
	}
	if !c.admit(cmd.id, user, id) {
		return
	}
	c.binary = cmd.binary && c.sse == nil
	b := append(s.enc[:0], `{"op":"connected"`...)
	b = appendID(b, cmd.id)
	b = append(b, `,"client":`...)
	b = appendString(b, c.id)
	b = append(b, `,"user":`...)
	b = appendString(b, c.user)
	b = append(b, `,"ping":`...)
	b = appendUint(b, uint64(c.srv.cfg.Client.PingInterval.Seconds()))
	if id != nil && !id.expires.IsZero() {
		b = append(b, `,"exp":`...)
		b = appendUint(b, uint64(id.expires.Unix()))
	}
	b = append(b, '}')
	c.sendJSON(s, "connected", b)
}

// admit makes the connection a session of user, within the per-user
// connection limit. It answers and closes the connection itself on refusal.
func (c *conn) admit(id uint64, user string, ident *identity) bool {
	// An anonymous id is unique to its connection: nothing to count.
	anonymous := ident == nil && user == "anon-"+c.id
	if !anonymous && !c.srv.takeUserSlot(user) {
		c.srv.reject(rejUserConnections)
		msg := "too many connections for this user: client.max_connections_per_user is " + itoa(c.srv.cfg.Client.MaxConnectionsPerUser)
		c.sendError(id, codeForbidden, msg)
		c.closeWith("too_many_connections", msg, false, ws.StatusPolicyViolation, false)
		return false
	}
	c.userSlot = !anonymous
	c.user = user
	c.ident.Store(ident)
	c.urlToken = ""
	if ident != nil && !ident.expires.IsZero() {
		c.expires.Store(ident.expires.Unix())
	}
	if ident != nil && ident.proxied && c.px != nil {
		c.px.proxied.Store(true)
		if c.srv.proxy.on(hookRefresh) {
			c.expires.Store(time.Now().Add(c.srv.cfg.Proxy.RefreshInterval).Unix())
		}
	}
	c.connected = true
	c.authed.Store(true)
	return true
}

// cmdRefresh renews an authenticated connection's token before it expires
// (extension op): {"op":"refresh","id":N,"token":"<jwt>"} ->
// {"op":"refreshed","id":N,"exp":<unix seconds>}. The new token must name
// the same user; its channel permissions replace the old ones for later
// commands.
func (c *conn) cmdRefresh(s *scratch, cmd *command) {
	if c.srv.auth == nil {
		c.sendError(cmd.id, codeBadRequest, "refresh needs auth to be on")
		return
	}
	if c.px != nil && c.px.proxied.Load() {
		c.sendError(cmd.id, codeBadRequest, "this connection was admitted by the connect proxy, which the server refreshes itself")
		return
	}
	ctx, cancel := context.WithTimeout(c.srv.ctx, c.srv.brokerTimeout)
	id, err := c.srv.auth.verify(ctx, string(cmd.token))
	cancel()
	if err == nil && c.srv.revoked(id) {
		err = errTokenRevoked
	}
	if err != nil {
		c.srv.reject(rejAuth)
		c.sendError(cmd.id, codeUnauthorized, err.Error())
		return
	}
	if id.user != c.user {
		c.srv.reject(rejAuth)
		c.sendError(cmd.id, codeUnauthorized, "the new token is for another user")
		return
	}
	c.ident.Store(id)
	c.expires.Store(id.expires.Unix())
	b := append(s.enc[:0], `{"op":"refreshed"`...)
	b = appendID(b, cmd.id)
	b = append(b, `,"exp":`...)
	b = appendUint(b, uint64(id.expires.Unix()))
	c.sendJSON(s, "refreshed", append(b, '}'))
}

// canSubscribe says whether the identity may subscribe to ch and see its
// presence: always with auth off and no identity (a connect hook may give
// one); otherwise by the identity's sub patterns (from the token, or from
// the event proxy's connect or refresh answer) or a public namespace. A
// WebSocket sub and presence, GET /sse and GET /presence all ask it.
func (s *Server) canSubscribe(id *identity, ch string) bool {
	if s.auth == nil && id == nil {
		return true
	}
	if id != nil && matchAny(id.sub, ch) {
		return true
	}
	if ns, _, ok := strings.Cut(ch, ":"); ok {
		for _, p := range s.cfg.Auth.PublicNamespaces {
			if p == ns {
				return true
			}
		}
	}
	return false
}

// canPublish says whether the identity may publish to ch, by the rules of
// canSubscribe with the pub patterns: a WebSocket pub and POST /pub both
// ask it.
func (s *Server) canPublish(id *identity, ch string) bool {
	return (s.auth == nil && id == nil) || (id != nil && matchAny(id.pub, ch))
}

func (c *conn) forbidden(id uint64, what, ch string) {
	c.srv.reject(rejForbidden)
	c.sendError(id, codeForbidden, "not allowed to "+what+" "+ch)
}

// channelArg validates the "ch" of a command, answering bad_request itself.
func (c *conn) channelArg(cmd *command) (string, bool) {
	if len(cmd.ch) == 0 && cmd.ch == nil {
		c.sendError(cmd.id, codeBadRequest, `missing "ch"`)
		return "", false
	}
	if !validChannel(cmd.ch) {
		c.sendError(cmd.id, codeBadRequest, errChannelName.Error())
		return "", false
	}
	return string(cmd.ch), true
}

func (c *conn) cmdSub(s *scratch, cmd *command) {
	ch, ok := c.channelArg(cmd)
	if !ok {
		return
	}
	c.smu.Lock()
	dup := c.findSub(ch) >= 0
	n := len(c.subs)
	c.smu.Unlock()
	if dup {
		c.sendError(cmd.id, codeBadRequest, "already subscribed to "+ch)
		return
	}
	if !c.srv.canSubscribe(c.identity(), ch) {
		c.forbidden(cmd.id, "subscribe to", ch)
		return
	}
	if n >= c.srv.cfg.Client.MaxSubscriptions {
		c.srv.reject(rejSubscriptions)
		c.sendError(cmd.id, codeBadRequest, "too many subscriptions: client.max_subscriptions is "+itoa(c.srv.cfg.Client.MaxSubscriptions))
		return
	}
	if c.srv.proxy.on(hookSubscribe) && c.askProxy(cmd.id, hookSubscribe, ch, nil) == nil {
		return
	}
	sb := &sub{c: c, ch: ch, inflight: true, binary: c.binary}
	c.smu.Lock()
	if c.cleaned {
		c.smu.Unlock()
		return // the connection is gone
	}
	c.subs = append(c.subs, sb)
	c.smu.Unlock()

	ctx, cancel := context.WithTimeout(c.srv.ctx, c.srv.brokerTimeout)
	defer cancel()
	if err := c.srv.catchUp(ctx, s, sb, cmd); err != nil {
		c.srv.hub.remove(sb)
		c.smu.Lock()
		c.dropSub(ch)
		c.smu.Unlock()
		c.sendBrokerError(cmd.id, "subscribe", err)
		return
	}
	if cmd.stream && cmd.hasSince && c.srv.history != nil {
		return // the streamed catch-up's goroutine joins and settles (catchup.go)
	}
	c.settle(ctx, sb)
	// The connection may have closed while we talked to the broker; its
	// cleanup has taken sb out already, but it may have run before the
	// join above. Leave again so no presence entry outlives the client.
	if c.finished.Load() {
		c.srv.hub.remove(sb)
		c.srv.presenceLeave(ctx, sb)
	}
}

// settle ends sb's in-flight state once its `sub` has joined presence and
// sent `subscribed`. A server-side unsubscribe that landed while it was in
// flight (unsubscribeLocal) is carried out now, so it cannot overtake the
// sub: the client gets `unsubscribed` after `subscribed`, and no presence
// entry is left. (A sub that fails instead answers with its error and
// leaves on its own.)
func (c *conn) settle(ctx context.Context, sb *sub) {
	c.smu.Lock()
	sb.inflight = false
	ask := sb.unsubAsked
	if ask {
		if i := c.findSub(sb.ch); i >= 0 && c.subs[i] == sb {
			c.dropSub(sb.ch)
		}
	}
	c.smu.Unlock()
	if !ask {
		return
	}
	c.srv.hub.remove(sb)
	c.sendFrame(event{op: "unsubscribed"}, textFrame(appendSimple(nil, "unsubscribed", 0, sb.ch, true)))
	c.srv.presenceLeave(ctx, sb)
}

func (c *conn) cmdUnsub(s *scratch, cmd *command) {
	ch, ok := c.channelArg(cmd)
	if !ok {
		return
	}
	c.smu.Lock()
	sb := c.dropSub(ch)
	c.smu.Unlock()
	if sb == nil {
		c.sendError(cmd.id, codeBadRequest, "not subscribed to "+ch)
		return
	}
	// The reply is queued as sb is taken out of the hub: no msg for ch
	// follows it, and the error of a streamed catch-up it cuts short
	// (streamCatchUp) comes after it.
	c.srv.hub.removeThen(sb, func() {
		c.sendJSON(s, "unsubscribed", appendSimple(s.enc[:0], "unsubscribed", cmd.id, ch, true))
	})
	ctx, cancel := context.WithTimeout(c.srv.ctx, c.srv.brokerTimeout)
	defer cancel()
	c.srv.presenceLeave(ctx, sb)
}

func (c *conn) cmdPub(s *scratch, cmd *command) {
	ch, ok := c.channelArg(cmd)
	if !ok {
		return
	}
	if cmd.data == nil && !cmd.hasBin {
		c.sendError(cmd.id, codeBadRequest, `missing "data" (or "bin")`)
		return
	}
	if !c.srv.canPublish(c.identity(), ch) {
		c.forbidden(cmd.id, "publish to", ch)
		return
	}
	if r := c.srv.cfg.Client.PublishRate; r > 0 {
		if c.pubBucket == nil {
			c.pubBucket = rate.NewLimiter(rate.Limit(r), c.srv.cfg.Client.PublishBurst)
		}
		if !c.pubBucket.Allow() {
			c.srv.reject(rejPublishRate)
			c.sendError(cmd.id, codeRateLimited, "publish rate over client.publish_rate ("+itoa(r)+"/s); slow down")
			return
		}
	}
	data := cmd.data
	if c.srv.proxy.on(hookPublish) {
		if cmd.hasBin {
			c.sendError(cmd.id, codeBadRequest, "binary data cannot be published through the event proxy's publish hook; send JSON data")
			return
		}
		ans := c.askProxy(cmd.id, hookPublish, ch, cmd.data)
		if ans == nil {
			return
		}
		if ans.data != nil {
			data = ans.data // the backend's replacement, validated and compact
		}
	}
	// The broker copies data, so the worker's scratch buffer can hold it.
	if raw, ok := cmd.binaryData(); ok {
		s.enc = appendPubBin(s.enc[:0], c.user, raw)
	} else {
		s.enc = appendPubData(s.enc[:0], c.user, data)
	}
	ctx, cancel := context.WithTimeout(c.srv.ctx, c.srv.brokerTimeout)
	start := time.Now()
	pos, err := c.srv.broker.Publish(ctx, ch, s.enc)
	cancel()
	if err != nil {
		c.sendBrokerError(cmd.id, "publish", err)
		return
	}
	c.srv.metrics.publishDur.Observe(time.Since(start).Seconds())
	c.srv.metrics.published.Inc()
	c.sendJSON(s, "ack", appendAck(s.enc[:0], cmd.id, ch, pos.Seq, pos.Epoch))
}

func (c *conn) cmdPresence(s *scratch, cmd *command) {
	ch, ok := c.channelArg(cmd)
	if !ok {
		return
	}
	if !c.srv.canSubscribe(c.identity(), ch) {
		c.forbidden(cmd.id, "see the presence of", ch)
		return
	}
	if c.srv.presence == nil {
		c.sendError(cmd.id, codeUnavailable, "this broker keeps no presence")
		return
	}
	ctx, cancel := context.WithTimeout(c.srv.ctx, c.srv.brokerTimeout)
	members, err := c.srv.presence.Members(ctx, ch)
	cancel()
	if err != nil {
		c.sendBrokerError(cmd.id, "presence", err)
		return
	}
	members = c.srv.brokerMembers(ch, members)
	c.sendJSON(s, "presence", appendPresence(s.enc[:0], cmd.id, ch, members))
}

// sendBrokerError maps a broker failure onto the protocol's codes.
func (c *conn) sendBrokerError(id uint64, what string, err error) {
	switch {
	case errors.Is(err, errTooManyChannels):
		c.srv.reject(rejChannels)
		c.sendError(id, codeUnavailable, what+": this node serves server.max_channels ("+itoa(c.srv.cfg.Server.MaxChannels)+") channels already; try again later")
	case errors.Is(err, errRecoveryOverflow), errors.Is(err, errReadsBusy):
		c.sendError(id, codeUnavailable, what+": "+err.Error())
	case errors.Is(err, brokers.ErrUnavailable), errors.Is(err, brokers.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		c.sendError(id, codeUnavailable, what+": broker unavailable, try again")
	default:
		c.srv.log.Error("broker call failed", "op", what, "client", c.id, "user", c.user, "err", err)
		c.sendError(id, codeInternal, what+" failed")
	}
}

// findSub returns the index of ch in c.subs, or -1. Caller holds smu.
func (c *conn) findSub(ch string) int {
	for i, sb := range c.subs {
		if sb.ch == ch {
			return i
		}
	}
	return -1
}

// dropSub removes and returns the subscription to ch. Caller holds smu.
func (c *conn) dropSub(ch string) *sub {
	i := c.findSub(ch)
	if i < 0 {
		return nil
	}
	sb := c.subs[i]
	last := len(c.subs) - 1
	c.subs[i] = c.subs[last]
	c.subs[last] = nil
	c.subs = c.subs[:last]
	if len(c.subs) == 0 {
		c.subs = nil
	}
	return sb
}
