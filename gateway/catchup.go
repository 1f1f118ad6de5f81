package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/syncgate/syncgate/brokers"
)

var errRecoveryOverflow = errors.New("too many messages arrived while catching up; subscribe again")

// catchUp subscribes sb and sends the `subscribed` reply, gap-free:
//
//  1. register sb (buffering) in the hub, which subscribes the node on the
//     broker; from here on every new publication reaches sb.buf;
//  2. read the channel's position and, for `since`, the missed history;
//  3. under sb.mu: queue `subscribed` (with pubs when recovered), then the
//     buffered publications newer than what history covered, then go live.
//
// A publication can show up both in history and in the buffer (published
// between steps 1 and 2); deduplication by seq delivers it once. Live
// publications continue from the last seq the client got, with no gap.
func (srv *Server) catchUp(ctx context.Context, s *scratch, sb *sub, cmd *command) error {
	if err := srv.hub.add(ctx, sb); err != nil {
		return err
	}
	var (
		pubs []brokers.Publication
		pos  brokers.Position
	)
	// A provisional since (positions a node gave while its broker was
	// down) resumes from the real position the provisional epoch was
	// opened after; the messages the client got provisionally come again
	// with their real seqs and `was`, and the client skips applying them
	// twice (docs/protocol.md).
	since, sinceEpoch := cmd.sinceSeq, string(cmd.sinceEpoch)
	if base, ok := brokers.ProvisionalBase(sinceEpoch); ok {
		since, sinceEpoch = base.Seq, base.Epoch
	}
	if srv.history != nil {
		limit := 0
		if cmd.hasSince {
			limit = srv.cfg.History.Size
		}
		var err error
		pubs, pos, err = srv.history.Since(ctx, sb.ch, since, limit)
		if err != nil {
			return err
		}
		if !validEpoch(pos.Epoch) {
			srv.metrics.brokerRejected.WithLabelValues(payloadKindHistory).Inc()
			return fmt.Errorf("gateway: channel %s: the broker holds a malformed epoch %.64q", sb.ch, pos.Epoch)
		}
	}
	recovered := cmd.hasSince && srv.history != nil && recoverable(since, sinceEpoch, pubs, pos)
	if cmd.hasSince {
		if recovered {
			srv.metrics.catchup.WithLabelValues("recovered").Inc()
		} else {
			srv.metrics.catchup.WithLabelValues("not_recovered").Inc()
		}
	}

	b := append(s.enc[:0], `{"op":"subscribed"`...)
	b = appendID(b, cmd.id)
	b = append(b, `,"ch":`...)
	b = appendString(b, sb.ch)
	b = append(b, `,"seq":`...)
	b = appendUint(b, pos.Seq)
	if pos.Epoch != "" {
		b = append(b, `,"epoch":`...)
		b = appendString(b, pos.Epoch)
	}
	if cmd.hasSince {
		if recovered {
			b = append(b, `,"recovered":true,"pubs":[`...)
			n := 0
			for i := range pubs {
				// History is as untrusted as live delivery (payload.go);
				// a dropped entry leaves a seq gap in pubs.
				data, ok := srv.brokerPubData(sb.ch, &pubs[i], payloadKindHistory)
				if !ok {
					continue
				}
				if n > 0 {
					b = append(b, ',')
				}
				n++
				p := &pubs[i]
				b = appendMsg(b, sb.ch, p.Seq, p.Epoch, p.Was, data)
			}
			b = append(b, ']')
		} else {
			b = append(b, `,"recovered":false`...)
		}
	}
	b = append(b, '}')
	s.enc = b[:0]
	reply := textFrame(b)

	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.overflow {
		return errRecoveryOverflow
	}
	sb.c.sendFrame(reply)
	m := mergeState{epoch: pos.Epoch, last: pos.Seq}
	for _, bp := range mergeBuffered(sb.buf, &m) {
		sb.c.sendFrame(bp.frame)
	}
	sb.lastSeq, sb.provSeq = m.last, m.provSeq
	sb.buf = nil
	sb.live.Store(true)
	return nil
}

// recoverable reports whether pubs are exactly the messages after since in
// the epoch the client knew: same epoch, nothing truncated, nothing beyond
// the limit left out.
func recoverable(since uint64, epoch string, pubs []brokers.Publication, pos brokers.Position) bool {
	if pos.Epoch == "" || epoch != pos.Epoch || since > pos.Seq {
		return false
	}
	if uint64(len(pubs)) != pos.Seq-since {
		return false
	}
	for i, p := range pubs {
		if p.Seq != since+1+uint64(i) {
			return false
		}
	}
	return true
}

// mergeState is where a subscriber stands while its buffer is merged: the
// real epoch and last seq, and the provisional epoch and seq.
type mergeState struct {
	epoch     string
	last      uint64
	provEpoch string
	provSeq   uint64
}

// mergeBuffered returns, in order, the buffered publications a subscriber
// at m (history read up to m.last in m.epoch) has not seen, and moves m
// past them. It filters in place. Publications without seq (backends
// without history) all pass; one from another real epoch (history
// restarted meanwhile) passes and moves the watermark to its epoch's
// numbering. Provisional publications (a node's own, during a broker
// outage) have their own watermark and leave the real one alone.
func mergeBuffered(buf []bufferedPub, m *mergeState) []bufferedPub {
	out := buf[:0]
	for _, bp := range buf {
		switch {
		case bp.seq == 0:
			out = append(out, bp)
		case brokers.IsProvisional(bp.epoch):
			if bp.epoch != m.provEpoch {
				m.provEpoch, m.provSeq = bp.epoch, 0
			}
			if bp.seq > m.provSeq {
				m.provSeq = bp.seq
				out = append(out, bp)
			}
		case bp.epoch != m.epoch:
			m.epoch, m.last = bp.epoch, bp.seq
			out = append(out, bp)
		case bp.seq > m.last:
			m.last = bp.seq
			out = append(out, bp)
		}
	}
	return out
}

func (srv *Server) presenceJoin(ctx context.Context, sb *sub) {
	if srv.presence == nil {
		return
	}
	m := brokers.Member{User: sb.c.user, Client: sb.c.id}
	if err := srv.presence.Join(ctx, sb.ch, m, srv.cfg.Presence.TTL); err != nil {
		srv.log.Warn("presence join failed", "client", sb.c.id, "user", sb.c.user, "channel", sb.ch, "err", err)
	}
}

func (srv *Server) presenceLeave(ctx context.Context, sb *sub) {
	if srv.presence == nil {
		return
	}
	m := brokers.Member{User: sb.c.user, Client: sb.c.id}
	if err := srv.presence.Leave(ctx, sb.ch, m); err != nil {
		srv.log.Warn("presence leave failed", "client", sb.c.id, "user", sb.c.user, "channel", sb.ch, "err", err)
	}
}

// cleanup runs once after the socket is closed: unsubscribe everything and
// leave presence, so other subscribers see `leave`.
func (c *Conn) cleanup() {
	c.smu.Lock()
	subs := c.subs
	c.subs = nil
	c.cleaned = true
	c.smu.Unlock()
	ctx, cancel := context.WithTimeout(c.srv.ctx, c.srv.brokerTimeout)
	defer cancel()
	for _, sb := range subs {
		c.srv.hub.remove(sb)
		c.srv.presenceLeave(ctx, sb)
	}
	if c.userSlot {
		c.srv.giveUserSlot(c.user)
	}
	c.releasePartial()
	c.srv.unregister(c)
}
