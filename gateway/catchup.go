package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/gobwas/ws"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/fault"
)

var (
	errRecoveryOverflow = errors.New("too many messages arrived while catching up; subscribe again")
	errReadsBusy        = errors.New("too many catch-ups in progress on this node (history.max_reads, history.read_wait); try again")
)

// Catch-up.
//
// A `sub` with `since` replays what the client missed, read from history in
// pages of at most history.page_bytes, each read holding one of the node's
// history.max_reads slots (readHistory), so a storm of catch-ups waits its
// turn instead of pulling unbounded bytes over the broker connection.
//
// A client that opted in (`"stream": true` on `sub`, docs/protocol.md) gets
// the first page in `subscribed` (`"more": true`), the other pages as `msg`
// frames, each read and queued only once the connection's queue has room
// for it, one page at a time per connection, and a `caught_up` marker;
// then live messages. All of it runs in a goroutine of its own
// (streamCatchUp), so the connection's reader never waits on the client.
//
// A client that did not opt in gets all missed messages in `subscribed`
// as in v1, when they fit in half of client.max_queue_bytes; otherwise
// `recovered: false` (reload from the source of truth) instead of a reply
// its queue cannot hold.
//
// Gap-free, exactly once: the subscriber is registered (buffering) before
// the first read, so every publication after it reaches sb.buf; pages are
// checked to continue the seq exactly; at the end, the buffer is merged by
// seq against the last seq sent (mergeBuffered). A buffer that overflowed
// (too many live messages meanwhile) is dropped and the catch-up continues
// from history, which holds what it dropped.

// pubOverhead is what a stored publication may add to the client's data
// (the "from" member), for sizing history reads from max_message_size.
const pubOverhead = 2048

// pageMsgs is how many messages one history read may ask for when
// nothing is known of their size: as many of the largest possible message
// as fit in history.page_bytes.
func (srv *Server) pageMsgs() int {
	return max(1, srv.cfg.History.PageBytes/(srv.cfg.Client.MaxMessageSize+pubOverhead))
}

// pageGrowth bounds how far a streamed page can exceed history.page_bytes:
// a page asks for at most pageGrowth * pageMsgs messages, however small
// those read so far, so one read never brings more than pageGrowth *
// page_bytes even when messages grow within a catch-up (docs/operations.md),
// and max_reads reads stay below the broker connection's pending limit.
const pageGrowth = 16

// nextPageMsgs is how many messages the next page of a streamed catch-up
// asks for, once its largest message so far took largest bytes
// (pubBytes): as many of those as fit in history.page_bytes, at least
// pageMsgs, at most pageGrowth * pageMsgs. Sizing every page for
// max_message_size made a catch-up of small messages read 3 a time (the
// defaults) and fall behind a busy channel for good.
func (srv *Server) nextPageMsgs(largest int) int {
	n := srv.pageMsgs()
	if largest > 0 {
		n = max(n, min(srv.cfg.History.PageBytes/largest, pageGrowth*n))
	}
	return n
}

// readHistory is one bounded history read: it waits (at most
// history.read_wait) for one of the node's read slots, then asks for at
// most limit messages after since, within brokerTimeout.
func (srv *Server) readHistory(ctx context.Context, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position, error) {
	if limit > 0 {
		t := time.NewTimer(srv.cfg.History.ReadWait)
		select {
		case srv.reads <- struct{}{}:
			t.Stop()
		case <-t.C:
			srv.metrics.historyReadsBusy.Inc()
			return nil, brokers.Position{}, errReadsBusy
		case <-ctx.Done():
			t.Stop()
			return nil, brokers.Position{}, ctx.Err()
		}
		defer func() { <-srv.reads }()
		srv.metrics.historyReads.Inc()
	}
	ctx, cancel := context.WithTimeout(ctx, srv.brokerTimeout)
	defer cancel()
	pubs, pos, err := srv.history.Since(ctx, ch, since, limit)
	if err == nil && !validEpoch(pos.Epoch) {
		srv.metrics.brokerRejected.WithLabelValues(payloadKindHistory).Inc()
		return nil, brokers.Position{}, fmt.Errorf("gateway: channel %s: the broker holds a malformed epoch %.64q", ch, pos.Epoch)
	}
	return pubs, pos, err
}

// logNotRecovered says at debug level why a catch-up of sb from since in
// epoch was not served from history: what the read brought (the channel's
// position, how many publications, the first and last seq). A client that
// gets `recovered: false` must reload; this line tells an operator whether
// history was gone, in another epoch, or cut short.
func (srv *Server) logNotRecovered(sb *sub, since uint64, epoch string, pubs []brokers.Publication, pos brokers.Position) {
	if !srv.log.Enabled(srv.ctx, slog.LevelDebug) {
		return
	}
	var first, last uint64
	if len(pubs) > 0 {
		first, last = pubs[0].Seq, pubs[len(pubs)-1].Seq
	}
	srv.log.Debug("catch-up not recovered", "client", sb.c.id, "channel", sb.ch, "since", since, "epoch", epoch,
		"seq", pos.Seq, "channel_epoch", pos.Epoch, "read", len(pubs), "read_first", first, "read_last", last)
}

// appendPubs appends pubs as msg objects separated by sep. History is as
// untrusted as live delivery (payload.go): an entry that fails validation
// is dropped (counted), leaving a seq gap.
func (srv *Server) appendPubs(b []byte, ch string, pubs []brokers.Publication, sep byte) []byte {
	n := 0
	for i := range pubs {
		data, ok := srv.brokerPubData(ch, &pubs[i], payloadKindHistory)
		if !ok {
			continue
		}
		if n > 0 {
			b = append(b, sep)
		}
		n++
		p := &pubs[i]
		b = appendMsg(b, ch, p.Seq, p.Epoch, p.Was, data)
	}
	return b
}

// catchUp subscribes sb and sends the `subscribed` reply. For a streamed
// catch-up it starts streamCatchUp and returns; sb is live once that
// goroutine has sent `caught_up`.
func (srv *Server) catchUp(ctx context.Context, s *scratch, sb *sub, cmd *command) (err error) {
	// A provisional since (positions a node gave while its broker was
	// down) resumes from the real position the provisional epoch was
	// opened after; the messages the client got provisionally come again
	// with their real seqs and `was`, and the client skips applying them
	// twice (docs/protocol.md).
	since, sinceEpoch := cmd.sinceSeq, string(cmd.sinceEpoch)
	if base, ok := brokers.ProvisionalBase(sinceEpoch); ok {
		since, sinceEpoch = base.Seq, base.Epoch
	}
	// A sub with "snapshot": true that history cannot serve starts from
	// the channel's snapshot (snapshot.go): a catch-up from its seq,
	// preceded by the snapshot frame once that catch-up recovers.
	var snapFrame snapOut
	if cmd.snapshot {
		if p, f, ok := srv.snapshotStart(sb.ch, cmd.hasSince, since, sinceEpoch, sb.binary); ok {
			since, sinceEpoch = p.Seq, p.Epoch
			snapFrame = snapOut{event{"snapshot", sb.ch, p.Seq, p.Epoch}, f}
			cmd.hasSince = true
		}
	}
	stream := cmd.stream && cmd.hasSince && srv.history != nil
	if stream {
		// Live messages buffered meanwhile are merged in one go at the
		// end; past a page's worth, continue from history instead.
		sb.bufLimit = srv.cfg.History.PageBytes
	}
	if err := srv.hub.add(ctx, sb); err != nil {
		return err
	}
	if !stream {
		// Before the reply: a client holding `subscribed` is on the
		// channel's presence list (a `presence` right after it lists
		// it). A streamed catch-up's goroutine joins when it is done.
		srv.presenceJoin(ctx, sb)
		defer func() {
			if err != nil {
				srv.presenceLeave(ctx, sb)
			}
		}()
	}
	if stream {
		// Everything, `subscribed` included, goes out from a goroutine
		// of its own, paced by the client's reading: the reader never
		// waits on a client that does not read.
		sctx, cancel := context.WithCancel(srv.ctx)
		sb.mu.Lock()
		removed := sb.removed
		sb.stop = cancel
		sb.mu.Unlock()
		if removed {
			cancel()
			return nil
		}
		id := cmd.id
		srv.metrics.catchupStreams.Inc()
		srv.goOwned(func() {
			defer srv.metrics.catchupStreams.Dec()
			defer cancel()
			srv.streamCatchUp(sctx, sb, id, since, sinceEpoch, snapFrame)
		})
		return nil
	}
	var (
		pubs      []brokers.Publication
		pos       brokers.Position
		recovered bool
		more      bool
		bytes     int
	)
	if srv.history != nil {
		limit := 0
		if cmd.hasSince {
			limit = srv.pageMsgs()
		}
		var err error
		// Reads have deadlines of their own (history.read_wait for a
		// slot, then the broker timeout), not what is left of ctx's.
		pubs, pos, err = srv.readHistory(srv.ctx, sb.ch, since, limit)
		if err != nil {
			return err
		}
		bytes = pubsBytes(pubs)
		recovered = cmd.hasSince && continues(since, sinceEpoch, pubs, pos)
		more = recovered && lastSeq(since, pubs) < pos.Seq
		if more {
			// v1 reply: everything in one frame, if it fits.
			budget := srv.cfg.Client.MaxQueueBytes / 2
			largest := largestPub(0, pubs) // as in streamCatchUp
			for more && bytes <= budget {
				last := lastSeq(since, pubs)
				page, p, err := srv.readHistory(srv.ctx, sb.ch, last, srv.nextPageMsgs(largest))
				if err != nil {
					return err
				}
				if !continues(last, sinceEpoch, page, p) {
					recovered, more = false, false
					break
				}
				pubs, pos = append(pubs, page...), p
				bytes += pubsBytes(page)
				largest = largestPub(largest, page)
				more = lastSeq(since, pubs) < pos.Seq
			}
			if recovered && (more || bytes > budget) {
				recovered, more = false, false
				srv.metrics.catchup.WithLabelValues("too_large").Inc()
			}
		}
	}
	if cmd.hasSince {
		if recovered {
			srv.metrics.catchup.WithLabelValues("recovered").Inc()
		} else {
			srv.logNotRecovered(sb, since, sinceEpoch, pubs, pos)
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
			b = srv.appendPubs(b, sb.ch, pubs, ',')
			b = append(b, ']')
		} else {
			b = append(b, `,"recovered":false`...)
		}
	}
	b = append(b, '}')
	s.enc = b[:0]
	reply := textFrame(b)

	last := pos.Seq
	if recovered {
		last = lastSeq(since, pubs)
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.overflow {
		return errRecoveryOverflow
	}
	if recovered && snapFrame.frame != nil {
		sb.c.sendFrame(snapFrame.ev, snapFrame.frame)
	}
	if fault.On(fault.LiveBeforeReply) {
		srv.goLive(sb, pos.Epoch, last)
		sb.c.sendFrame(event{"subscribed", sb.ch, pos.Seq, pos.Epoch}, reply)
		return nil
	}
	sb.c.sendFrame(event{"subscribed", sb.ch, pos.Seq, pos.Epoch}, reply)
	srv.goLive(sb, pos.Epoch, last)
	return nil
}

// goLive queues the buffered publications newer than last in epoch and
// makes sb live. sb.mu is held.
func (srv *Server) goLive(sb *sub, epoch string, last uint64) {
	m := mergeState{epoch: epoch, last: last}
	for _, bp := range mergeBuffered(sb.buf, &m) {
		sb.c.sendFrame(event{"msg", sb.ch, bp.seq, bp.epoch}, bp.frame)
	}
	sb.lastSeq, sb.provSeq = m.last, m.liveProvSeq()
	sb.buf, sb.bufBytes = nil, 0
	sb.live.Store(true)
}

// streamCatchUp runs a streamed catch-up of sb from since in epoch: the
// first page in `subscribed` (with "more": true), the next ones as msg
// frames, each page read and queued only once the client's queue has room
// for it, then the buffered live publications and `caught_up`, and makes
// sb live. id is the sub's id; snapFrame, when set, goes out just before
// the first page (a catch-up from a snapshot, snapshot.go). It stops when sb is removed (unsub,
// disconnect) or ctx ends. When history does not continue from since,
// `subscribed` says recovered: false (and no caught_up follows); when it
// stops continuing later (truncated while the client read slowly, epoch
// changed) it ends with `caught_up` recovered: false. If the first read
// fails the sub gets its error; if a later one fails the connection is
// closed with reconnect, and the client resubscribes from the last seq it
// got.
func (srv *Server) streamCatchUp(ctx context.Context, sb *sub, id uint64, since uint64, epoch string, snapFrame snapOut) {
	c := sb.c
	limit := srv.pageMsgs()
	largest := 0 // bytes of the largest message read so far (pubsBytes)
	first, last := true, since
	jctx, cancel := context.WithTimeout(ctx, srv.brokerTimeout)
	srv.presenceJoin(jctx, sb)
	cancel()
	// settle once `subscribed` is out: a server-side unsubscribe that
	// landed meanwhile is carried out then (commands.go).
	settle := func() {
		lctx, cancel := context.WithTimeout(srv.ctx, srv.brokerTimeout)
		c.settle(lctx, sb)
		cancel()
	}
	// The connection may have closed meanwhile, its cleanup run before
	// the join: leave again so no presence entry outlives the client.
	defer func() {
		if c.finished.Load() {
			lctx, cancel := context.WithTimeout(srv.ctx, srv.brokerTimeout)
			srv.presenceLeave(lctx, sb)
			cancel()
		}
	}()
	for {
		pubs, pos, stop, err := srv.streamPage(ctx, sb, id, first, last, epoch, limit, snapFrame)
		if stop {
			if first && !c.isClosing() && srv.ctx.Err() == nil {
				// Unsubscribed before `subscribed` went out: the sub
				// still gets its answer, after `unsubscribed` (queued
				// under sb.mu as sb was removed, cmdUnsub).
				sb.mu.Lock()
				c.sendError(id, codeBadRequest, "unsubscribed from "+sb.ch+" before the catch-up started")
				sb.mu.Unlock()
			}
			return
		}
		if err != nil {
			srv.metrics.catchup.WithLabelValues("failed").Inc()
			if first {
				srv.hub.remove(sb)
				c.smu.Lock()
				if i := c.findSub(sb.ch); i >= 0 && c.subs[i] == sb {
					c.dropSub(sb.ch)
				}
				c.smu.Unlock()
				c.sendBrokerError(id, "subscribe", err)
				lctx, cancel := context.WithTimeout(srv.ctx, srv.brokerTimeout)
				srv.presenceLeave(lctx, sb)
				cancel()
				return
			}
			srv.log.Warn("catch-up interrupted", "client", c.id, "channel", sb.ch, "err", err)
			c.closeWith("unavailable", "catch-up interrupted: history unavailable; resubscribe from the last seq received", true, statusTryAgainLater, false)
			return
		}
		if !continues(last, epoch, pubs, pos) {
			srv.logNotRecovered(sb, last, epoch, pubs, pos)
			if first {
				// Not recoverable: the v1 reply, then live from pos.
				switch srv.goLiveAfter(sb, event{"subscribed", sb.ch, pos.Seq, pos.Epoch}, srv.subscribedFrame(id, sb.ch, pos, true, false, nil, false), pos.Epoch, pos.Seq) {
				case liveRemoved:
					return
				case liveOverflow:
					continue // read the position again
				}
				srv.metrics.catchup.WithLabelValues("not_recovered").Inc()
				settle()
				return
			}
			srv.finishCatchUp(ctx, sb, pos, false)
			return
		}
		if first {
			srv.metrics.catchup.WithLabelValues("recovered").Inc()
			settle()
		}
		first = false
		if len(pubs) > 0 {
			last = pubs[len(pubs)-1].Seq
		}
		largest = largestPub(largest, pubs)
		limit = srv.nextPageMsgs(largest)
		if last < pos.Seq {
			continue
		}
		// The buffered live messages (at most a page's bytes) go out in
		// one go: wait for room for them first.
		if !c.waitRoom(ctx, srv.cfg.History.PageBytes) {
			return
		}
		if srv.goLiveAfter(sb, event{op: "caught_up"}, caughtUpFrame(sb.ch, pos.Seq, pos.Epoch, true), pos.Epoch, last) == liveOverflow {
			// Live messages came faster than the catch-up: what was
			// dropped is in history; read on from there.
			continue
		}
		return
	}
}

// liveResult is what goLiveAfter did.
type liveResult uint8

const (
	liveOK       liveResult = iota // frame sent, sb live
	liveRemoved                    // sb was taken out of the hub: nothing sent
	liveOverflow                   // sb's live buffer overflowed: cleared, nothing sent
)

// goLiveAfter queues frame (the reply that ends a catch-up) and makes sb
// live after last in epoch, under sb.mu, unless sb was removed or the live
// messages buffered meanwhile overflowed; then the buffer is cleared and
// the caller reads on from history, where what was dropped is.
func (srv *Server) goLiveAfter(sb *sub, ev event, frame []byte, epoch string, last uint64) liveResult {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	switch {
	case sb.removed:
		return liveRemoved
	case sb.overflow:
		sb.buf, sb.bufBytes, sb.overflow = nil, 0, false
		return liveOverflow
	}
	sb.c.sendFrame(ev, frame)
	srv.goLive(sb, epoch, last)
	return liveOK
}

// streamPage reads the page after last and, if it continues from last,
// queues it: as `subscribed` with "more": true for the first page, as msg
// frames after. A connection streams one page at a time however many
// catch-ups it runs, and a page is read only once the queue has room for
// it: a client that stops reading holds no history in memory beyond its
// queue, whatever its subscriptions. stop reports that sb was removed or
// ctx ended.
func (srv *Server) streamPage(ctx context.Context, sb *sub, id uint64, first bool, last uint64, epoch string, limit int, snapFrame snapOut) (pubs []brokers.Publication, pos brokers.Position, stop bool, err error) {
	c := sb.c
	turn := c.pageTurn()
	select {
	case turn <- struct{}{}:
	case <-ctx.Done():
		return nil, pos, true, nil
	}
	defer func() { <-turn }()
	if !c.waitRoom(ctx, srv.cfg.History.PageBytes) {
		return nil, pos, true, nil
	}
	pubs, pos, err = srv.readHistory(ctx, sb.ch, last, limit)
	if ctx.Err() != nil {
		return nil, pos, true, nil
	}
	if err != nil || !continues(last, epoch, pubs, pos) || (!first && len(pubs) == 0) {
		return pubs, pos, false, err
	}
	var frame []byte
	ev := event{"subscribed", sb.ch, pos.Seq, pos.Epoch}
	if first {
		frame = srv.subscribedFrame(id, sb.ch, pos, true, true, pubs, true)
	} else {
		// A page is msg objects, one a line (a stream shows only a page
		// of one: sseState.event drops the others).
		last := pubs[len(pubs)-1]
		ev = event{"msg", sb.ch, last.Seq, last.Epoch}
		fb := newFrameBuilder(pubsBytes(pubs))
		fb.b = srv.appendPubs(fb.b, sb.ch, pubs, '\n')
		if len(fb.b) == maxFrameHeader {
			return pubs, pos, false, nil // every entry was dropped
		}
		frame = fb.finish(ws.OpText)
		// A page of messages larger than the ones before it can exceed
		// the room waited for above (nextPageMsgs): wait for its own.
		if len(frame) > srv.cfg.History.PageBytes && !c.waitRoom(ctx, len(frame)) {
			return nil, pos, true, nil
		}
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.removed {
		return nil, pos, true, nil
	}
	if first && snapFrame.frame != nil {
		c.sendFrame(snapFrame.ev, snapFrame.frame) // the snapshot, then the messages after it
	}
	c.sendFrame(ev, frame)
	if !first {
		srv.metrics.catchupPages.Inc()
	}
	return pubs, pos, false, nil
}

// subscribedFrame encodes a `subscribed` reply.
func (srv *Server) subscribedFrame(id uint64, ch string, pos brokers.Position, hasSince, recovered bool, pubs []brokers.Publication, more bool) []byte {
	fb := newFrameBuilder(128 + len(ch) + pubsBytes(pubs))
	b := append(fb.b, `{"op":"subscribed"`...)
	b = appendID(b, id)
	b = append(b, `,"ch":`...)
	b = appendString(b, ch)
	b = append(b, `,"seq":`...)
	b = appendUint(b, pos.Seq)
	if pos.Epoch != "" {
		b = append(b, `,"epoch":`...)
		b = appendString(b, pos.Epoch)
	}
	if hasSince {
		if recovered {
			b = append(b, `,"recovered":true,"pubs":[`...)
			b = srv.appendPubs(b, ch, pubs, ',')
			b = append(b, ']')
			if more {
				b = append(b, `,"more":true`...)
			}
		} else {
			b = append(b, `,"recovered":false`...)
		}
	}
	fb.b = append(b, '}')
	return fb.finish(ws.OpText)
}

// finishCatchUp ends a streamed catch-up that cannot be completed from
// history: `caught_up` with `recovered: false` at the channel's position
// now, then live from there.
func (srv *Server) finishCatchUp(ctx context.Context, sb *sub, pos brokers.Position, recovered bool) {
	for {
		sb.mu.Lock()
		if sb.removed {
			sb.mu.Unlock()
			return
		}
		if !sb.overflow {
			sb.c.sendFrame(event{op: "caught_up"}, caughtUpFrame(sb.ch, pos.Seq, pos.Epoch, recovered))
			srv.goLive(sb, pos.Epoch, pos.Seq)
			sb.mu.Unlock()
			srv.metrics.catchup.WithLabelValues("not_recovered").Inc()
			return
		}
		sb.buf, sb.bufBytes, sb.overflow = nil, 0, false
		sb.mu.Unlock()
		// Publications dropped from the buffer are at or below the
		// position read now; later ones are buffered again.
		_, p, err := srv.readHistory(ctx, sb.ch, 0, 0)
		if err != nil {
			if ctx.Err() == nil {
				sb.c.closeWith("unavailable", "catch-up interrupted: history unavailable; resubscribe", true, statusTryAgainLater, false)
			}
			return
		}
		pos = p
	}
}

func caughtUpFrame(ch string, seq uint64, epoch string, recovered bool) []byte {
	var buf [512]byte
	b := append(buf[:0], `{"op":"caught_up","ch":`...)
	b = appendString(b, ch)
	b = append(b, `,"seq":`...)
	b = appendUint(b, seq)
	if epoch != "" {
		b = append(b, `,"epoch":`...)
		b = appendString(b, epoch)
	}
	if recovered {
		b = append(b, `,"recovered":true}`...)
	} else {
		b = append(b, `,"recovered":false}`...)
	}
	return textFrame(b)
}

// pubsBytes is about what pubs take encoded as msg objects.
func pubsBytes(pubs []brokers.Publication) int {
	n := 0
	for _, p := range pubs {
		n += pubBytes(p)
	}
	return n
}

// largestPub is the larger of n and the largest pubBytes of pubs.
func largestPub(n int, pubs []brokers.Publication) int {
	for _, p := range pubs {
		n = max(n, pubBytes(p))
	}
	return n
}

// pubBytes is what pubsBytes counts for one publication.
func pubBytes(p brokers.Publication) int {
	return len(p.Data) + len(p.Epoch) + len(p.Was.Epoch) + 128
}

// lastSeq is the seq of the last of pubs, or since when there are none.
func lastSeq(since uint64, pubs []brokers.Publication) uint64 {
	if len(pubs) == 0 {
		return since
	}
	return pubs[len(pubs)-1].Seq
}

// continues reports whether pubs continue exactly from since in the epoch
// the client knew: same epoch, the next seqs without a hole, none beyond
// the channel's position. An empty page continues only when nothing is
// missing.
func continues(since uint64, epoch string, pubs []brokers.Publication, pos brokers.Position) bool {
	if pos.Epoch == "" || epoch != pos.Epoch || since > pos.Seq {
		return false
	}
	if len(pubs) == 0 {
		return since == pos.Seq
	}
	for i, p := range pubs {
		if p.Seq != since+1+uint64(i) || p.Epoch != epoch {
			return false
		}
	}
	return pubs[len(pubs)-1].Seq <= pos.Seq
}

// recoverable reports whether pubs are exactly the messages after since in
// the epoch the client knew: same epoch, nothing truncated, nothing beyond
// the limit left out.
func recoverable(since uint64, epoch string, pubs []brokers.Publication, pos brokers.Position) bool {
	return continues(since, epoch, pubs, pos) && lastSeq(since, pubs) == pos.Seq
}

// mergeState is where a subscriber stands while its buffer is merged: the
// real epoch and last seq, and the provisional epoch and seq.
//
// A subscriber gets a provisional epoch's publications only from its seq
// 1 on, without a hole. The client rule (docs/provisional.md, step 5)
// takes a real publication whose `was` is at or below the last
// provisional seq it applied in that epoch as applied already: a
// subscriber handed seq k of an epoch without the seqs before it (given
// out while it was not subscribed here, e.g. a client resuming on the
// publishing node while its outbox still drains, or dropped from an
// overflowed buffer) would skip their real copies, and lose them. Such an
// epoch is held back from it (provHeld) and reaches it under real
// positions only.
type mergeState struct {
	epoch     string
	last      uint64
	provEpoch string
	provSeq   uint64
	provHeld  bool // provEpoch is held back from this subscriber
}

// liveProvSeq is the provisional watermark a subscriber goes live with
// after its merge: the seq it got last in the epoch it follows from seq 1,
// or, when it follows none, math.MaxUint64: the channel's current
// provisional epoch (if any) is held back, and the next one starts the
// watermark at 0 again (hub.HandlePublication).
func (m *mergeState) liveProvSeq() uint64 {
	if m.provHeld || m.provEpoch == "" {
		return math.MaxUint64
	}
	return m.provSeq
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
				m.provEpoch, m.provSeq, m.provHeld = bp.epoch, 0, false
			}
			switch {
			case m.provHeld, bp.seq <= m.provSeq:
			case bp.seq != m.provSeq+1:
				m.provHeld = true // a hole: see mergeState
			default:
				m.provSeq = bp.seq
				out = append(out, bp)
			}
		case bp.epoch != m.epoch:
			m.epoch, m.last = bp.epoch, bp.seq
			out = append(out, bp)
		case bp.seq > m.last, fault.On(fault.MergeWatermarkOffByOne) && bp.seq == m.last:
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
func (c *conn) cleanup() {
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
