package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gobwas/ws"

	"github.com/syncgate/syncgate/brokers"
)

// Channel snapshots (extension, docs/protocol.md "Snapshots").
//
// A client allowed to publish on a channel stores the channel's state as
// it sees it with `snap`: `{"op":"snap","ch":C,"at":{"seq":S,"epoch":E},
// "data":V}`, V any JSON value of at most history.snapshot_max_bytes
// (compacted). The gateway checks that the channel has reached S in
// epoch E (its position now, read from history), then the broker keeps
// it under the rule of brokers.Snapshots: higher seq wins, an equal seq
// keeps the first, another epoch replaces. The answer is `snapped` with
// `stored` and the position of the snapshot the channel has now.
//
// A `sub` with `"snapshot": true` that history cannot serve (no `since`,
// or a `since` history no longer continues from) and whose channel has a
// snapshot of its current epoch is served from the snapshot: a
// `snapshot` frame (ch, seq, epoch, data) and then the catch-up from the
// snapshot's seq, exactly as a `sub` with that `since` (in `subscribed`
// `pubs`, or streamed with `"stream": true`), so the client gets the
// snapshot and then exactly the messages after it. The `snapshot` frame
// goes out only when that catch-up recovers; otherwise the answer is the
// usual `recovered: false`. A client that does not send `"snapshot": true`
// never sees a `snapshot` frame.
//
// What the broker returns is untrusted (payload.go): a snapshot whose
// epoch is malformed, whose data is over the limit or not JSON, or whose
// seq is beyond the channel's position is ignored (counted in
// syncgate_broker_payload_rejected_total{kind="snapshot"}), and the sub
// is answered as if there were none.

const payloadKindSnapshot = "snapshot"

func (c *conn) cmdSnap(s *scratch, cmd *command) {
	ch, ok := c.channelArg(cmd)
	if !ok {
		return
	}
	switch {
	case cmd.data == nil && !cmd.hasBin:
		c.sendError(cmd.id, codeBadRequest, `missing "data" (or "bin")`)
		return
	case !cmd.hasSince || len(cmd.sinceEpoch) == 0:
		c.sendError(cmd.id, codeBadRequest, `missing "at": {"seq": N, "epoch": "E"}, the position the snapshot covers`)
		return
	case cmd.sinceSeq == 0:
		c.sendError(cmd.id, codeBadRequest, `"at.seq" must be at least 1`)
		return
	}
	if !c.srv.canPublish(c.identity(), ch) {
		c.forbidden(cmd.id, "store a snapshot of", ch)
		return
	}
	srv := c.srv
	if srv.snaps == nil || srv.history == nil {
		c.sendError(cmd.id, codeUnavailable, "this broker keeps no snapshots")
		return
	}
	var stored []byte
	if raw, ok := cmd.binaryData(); ok {
		stored = append([]byte{binSnapMark}, raw...)
	} else {
		var data bytes.Buffer
		if err := json.Compact(&data, cmd.data); err != nil {
			c.sendError(cmd.id, codeBadRequest, `"data" is not valid JSON`)
			return
		}
		stored = data.Bytes()
	}
	kept, now, err := srv.storeSnapshot(srv.ctx, ch, brokers.Position{Seq: cmd.sinceSeq, Epoch: string(cmd.sinceEpoch)}, stored)
	var rule *snapRuleError
	switch {
	case errors.As(err, &rule):
		c.sendError(cmd.id, rule.code, rule.msg)
		return
	case err != nil:
		c.sendBrokerError(cmd.id, "snap", err)
		return
	}
	b := append(s.enc[:0], `{"op":"snapped"`...)
	b = appendID(b, cmd.id)
	b = append(b, `,"ch":`...)
	b = appendString(b, ch)
	b = append(b, `,"stored":`...)
	b = appendBool(b, kept)
	b = append(b, `,"seq":`...)
	b = appendUint(b, now.Seq)
	b = append(b, `,"epoch":`...)
	b = appendString(b, now.Epoch)
	b = append(b, '}')
	c.sendJSON(s, "snapped", b)
}

// snapRuleError is a snapshot the rules of `snap` refuse: code is the
// protocol's error code, the message says why.
type snapRuleError struct{ code, msg string }

func (e *snapRuleError) Error() string { return e.msg }

// storeSnapshot stores data (compact JSON, or binSnapMark and bytes) as
// ch's snapshot at `at`, under the rules of `snap`: the data (its bytes
// when binary) within history.snapshot_max_bytes (too_large), `at` a
// position the channel has reached in its current epoch (bad_request),
// both as a *snapRuleError; then the broker's compare-and-set. kept and
// now are StoreSnapshot's. The `snap` op and the server API share it.
func (srv *Server) storeSnapshot(ctx context.Context, ch string, at brokers.Position, data []byte) (kept bool, now brokers.Position, err error) {
	n := len(data)
	if n > 0 && data[0] == binSnapMark {
		n--
	}
	if n > srv.cfg.History.SnapshotMaxBytes {
		return false, now, &snapRuleError{codeTooLarge, "snapshot over history.snapshot_max_bytes (" + itoa(srv.cfg.History.SnapshotMaxBytes) + ")"}
	}
	_, pos, err := srv.readHistory(ctx, ch, 0, 0)
	if err != nil {
		return false, now, err
	}
	if pos.Epoch != at.Epoch || at.Seq > pos.Seq {
		return false, now, &snapRuleError{codeBadRequest, fmt.Sprintf("snapshot at %d in epoch %.64q: the channel is at %d in epoch %.64q; a snapshot may only cover messages the channel has", at.Seq, at.Epoch, pos.Seq, pos.Epoch)}
	}
	ctx, cancel := context.WithTimeout(ctx, srv.brokerTimeout)
	defer cancel()
	kept, snap, err := srv.snaps.StoreSnapshot(ctx, ch, brokers.Snapshot{Seq: at.Seq, Epoch: at.Epoch, Data: data})
	return kept, brokers.Position{Seq: snap.Seq, Epoch: snap.Epoch}, err
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

// snapshotStart decides whether a `sub` with "snapshot": true is served
// from the channel's snapshot. since/epoch are where the client stands
// (hasSince false: nowhere). When history continues from there, or the
// channel has no valid snapshot of its current epoch newer than since,
// ok is false and the sub goes on as without the flag. Otherwise it
// returns the snapshot's position (the catch-up's new since) and the
// `snapshot` frame to send before the catch-up's first frame.
func (srv *Server) snapshotStart(ch string, hasSince bool, since uint64, epoch string, binary bool) (pos brokers.Position, frame []byte, ok bool) {
	if srv.snaps == nil || srv.history == nil {
		return pos, nil, false
	}
	pubs, cur, err := srv.readHistory(srv.ctx, ch, since, 1)
	if err != nil {
		return pos, nil, false // the catch-up's own read answers the error
	}
	if hasSince && continues(since, epoch, pubs, cur) {
		return pos, nil, false
	}
	ctx, cancel := context.WithTimeout(srv.ctx, srv.brokerTimeout)
	snap, found, err := srv.snaps.LoadSnapshot(ctx, ch)
	cancel()
	if err != nil {
		srv.log.Warn("snapshot load failed", "channel", ch, "err", err)
		return pos, nil, false
	}
	if !found {
		return pos, nil, false
	}
	data, bin, valid := srv.snapshotData(snap)
	switch {
	case !valid:
		srv.metrics.brokerRejected.WithLabelValues(payloadKindSnapshot).Inc()
		srv.log.Warn("malformed snapshot from the broker ignored", "channel", ch, "bytes", len(snap.Data))
		return pos, nil, false
	case snap.Epoch != cur.Epoch:
		return pos, nil, false // of an older history: useless
	case snap.Seq > cur.Seq:
		srv.metrics.brokerRejected.WithLabelValues(payloadKindSnapshot).Inc()
		srv.log.Warn("snapshot beyond the channel's position ignored", "channel", ch, "seq", snap.Seq, "at", cur.Seq)
		return pos, nil, false
	case hasSince && epoch == snap.Epoch && since >= snap.Seq:
		return pos, nil, false // the client is ahead of the snapshot already
	}
	b := make([]byte, 0, 64+len(ch)+len(snap.Epoch)+b64.EncodedLen(len(data)))
	b = append(b, `{"op":"snapshot","ch":`...)
	b = appendString(b, ch)
	b = append(b, `,"seq":`...)
	b = appendUint(b, snap.Seq)
	b = append(b, `,"epoch":`...)
	b = appendString(b, snap.Epoch)
	switch {
	case bin && binary:
		// A binary client gets the bytes as they are (binary.go).
		fb := newFrameBuilder(len(b) + 2 + len(data))
		fb.b = append(append(fb.b, b...), '}', '\n')
		fb.b = append(fb.b, data...)
		return brokers.Position{Seq: snap.Seq, Epoch: snap.Epoch}, fb.finish(ws.OpBinary), true
	case bin:
		b = append(b, pubBinKey...)
		b = appendB64String(b, data)
	default:
		b = append(b, `,"data":`...)
		b = append(b, data...)
	}
	b = append(b, '}')
	return brokers.Position{Seq: snap.Seq, Epoch: snap.Epoch}, textFrame(b), true
}

// snapshotData validates a snapshot from the broker (untrusted) and
// returns its data: compact JSON, or (bin) the bytes of a binary
// snapshot. ok is false when the epoch is malformed, the data is over
// history.snapshot_max_bytes, or JSON data is not valid JSON.
func (srv *Server) snapshotData(snap brokers.Snapshot) (data []byte, bin, ok bool) {
	if !validEpoch(snap.Epoch) || len(snap.Data) == 0 {
		return nil, false, false
	}
	if snap.Data[0] == binSnapMark {
		raw := snap.Data[1:]
		return raw, true, len(raw) <= srv.cfg.History.SnapshotMaxBytes
	}
	var buf bytes.Buffer
	if len(snap.Data) > srv.cfg.History.SnapshotMaxBytes || json.Compact(&buf, snap.Data) != nil || buf.Len() == 0 {
		return nil, false, false
	}
	return buf.Bytes(), false, true
}

// snapOut is a snapshot frame waiting to go out before its catch-up, with
// the event the SSE transport needs to encode it (zero: none).
type snapOut struct {
	ev    event
	frame []byte
}
