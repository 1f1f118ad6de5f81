package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/internal/natsbase"
	"github.com/syncgate/syncgate/internal/natsname"
)

// Since implements brokers.History. The latest position comes from the
// stream leader. The publications come from direct gets, which any replica
// may answer; one a moment behind the leader is asked again a few times,
// then the leader supplies the rest. A channel with no stored message has
// seq 0 and an epoch kept on this node, not in the stream (emptyEpoch):
// reading a channel stores nothing.
func (b *Broker) Since(ctx context.Context, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position, error) {
	if err := b.n.Check(ctx); err != nil {
		return nil, brokers.Position{}, fmt.Errorf("jetstream: since %s: %w", ch, err)
	}
	ctx, cancel := b.n.OpCtx(ctx)
	defer cancel()
	subj := b.histPre + natsname.Token(ch)
	c, gen := b.channelGen(ch)
	last, err := natsbase.GetLast(ctx, b.n.Conn().Conn, b.cfg.Stream, subj)
	if errors.Is(err, natsbase.ErrNotFound) {
		return nil, brokers.Position{Epoch: b.emptyEpoch(ctx, ch, c, gen)}, nil
	}
	if err != nil {
		return nil, brokers.Position{}, natsbase.Wrap("jetstream", "since", ch, b.noteErr(err))
	}
	seq, epoch := seqOf(last.Header)
	pos := brokers.Position{Seq: seq, Epoch: epoch}
	limit = min(limit, b.histSize)
	if limit <= 0 || since >= pos.Seq {
		return nil, pos, nil
	}
	pubs, err := b.readRange(ctx, subj, last, since, uint64(limit))
	if err != nil {
		return nil, brokers.Position{}, natsbase.Wrap("jetstream", "since", ch, b.noteErr(err))
	}
	return pubs, pos, nil
}

// readRange returns the oldest publications after seq since in last's
// epoch, at most limit, and none older than the stream still holds. The
// subject's messages carry consecutive seqs in stream order, but their
// stream seqs are spread among other channels' messages; the first wanted
// one is found by probing backwards from the last message at doubling
// distances, each probe one direct get.
func (b *Broker) readRange(ctx context.Context, subj string, last *natsbase.StoredMsg, since, limit uint64) ([]brokers.Publication, error) {
	lastSeq, epoch := seqOf(last.Header)
	// The message with seq since+1 is lastSeq-since-1 messages before the
	// last, so its stream seq is at most last.Seq-(lastSeq-since-1).
	dist := lastSeq - since
	var start *natsbase.StoredMsg
	var first uint64 // stream seq of the subject's oldest message, once read
	for {
		probe := uint64(1)
		if last.Seq > dist {
			probe = last.Seq - dist + 1
		}
		found, err := b.firstFrom(ctx, subj, probe, last.Seq)
		if err != nil {
			return nil, err
		}
		s, e := seqOf(found.Header)
		oldest := false
		if start != nil && start.Seq == found.Seq && probe > 1 {
			// No message of the subject between this probe and the last
			// one. Older ones may still lie further back, behind a burst
			// of other channels' messages: only the subject's oldest
			// message (one direct get from stream seq 1) says whether
			// found is it. Taking two equal probes for the oldest cut a
			// catch-up near the head short (TestSinceSparseChannel).
			if first == 0 {
				oldestMsg, err := b.firstFrom(ctx, subj, 1, last.Seq)
				if err != nil {
					return nil, err
				}
				first = oldestMsg.Seq
			}
			oldest = first == found.Seq
		}
		start = found
		if s <= since+1 || e != epoch || probe == 1 || oldest {
			break
		}
		dist *= 2
	}
	startSeq, _ := seqOf(start.Header)
	from := max(since+1, startSeq)
	if startSeq == 0 {
		from = max(since+1, 1)
	}
	if from > lastSeq {
		return nil, nil
	}
	n := min(limit, lastSeq-from+1) // seqs from .. from+n-1
	skip := from - max(startSeq, 1)
	if startSeq == 0 {
		skip++ // the epoch marker
	}
	var pubs []brokers.Publication
	for range 3 {
		var first uint64
		var err error
		pubs, first, err = b.readSeqs(ctx, subj, start.Seq, skip, from, from+n-1, epoch, last.Seq)
		if err != nil || len(pubs) == 0 || pubs[0].Seq == from {
			return pubs, err
		}
		// The head was cut: the start came from a replica that had not
		// yet dropped what the leader dropped. Take the oldest kept as
		// the start and read the range from there.
		from, start.Seq, skip = pubs[0].Seq, first, 0
		n = min(limit, lastSeq-from+1)
	}
	return pubs, nil // the history moves faster than it can be read: short
}

// readSeqs reads the publications of seqs from..to in epoch, starting at
// stream seq startStream (skip messages before from), up to stream seq
// upTo: direct gets while the answering replica catches up, then the
// leader. It returns the stream seq of the first publication too.
func (b *Broker) readSeqs(ctx context.Context, subj string, startStream, skip, from, to uint64, epoch string, upTo uint64) ([]brokers.Publication, uint64, error) {
	r := rangeReader{from: from, to: to, epoch: epoch, inflight: &b.inflight}
	for try := range replicaTries {
		if try > 0 {
			time.Sleep(time.Duration(try) * 20 * time.Millisecond)
		}
		msgs, err := natsbase.DirectBatch(ctx, b.n.Conn().Conn, b.cfg.Stream, subj, startStream, int(skip+to-from+1), upTo)
		if err != nil {
			return nil, 0, err
		}
		r.reset()
		for _, sm := range msgs {
			r.add(sm)
		}
		if r.tail {
			return r.pubs, r.firstStream, nil
		}
	}
	// The replica that answers direct gets is still behind the leader:
	// read the rest from the leader, one message at a time.
	next := startStream
	if r.lastStream > 0 {
		next = r.lastStream + 1
	}
	for !r.tail && next <= upTo {
		sm, err := natsbase.GetNext(ctx, b.n.Conn().Conn, b.cfg.Stream, subj, next)
		if errors.Is(err, natsbase.ErrNotFound) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		r.add(sm)
		next = sm.Seq + 1
	}
	return r.pubs, r.firstStream, nil
}

// replicaTries bounds the direct gets tried (20ms, 40ms... apart) before
// falling back to the leader, when a replica answers without the messages
// the leader said are there.
const replicaTries = 6

// firstFrom returns the first message of subj at or after stream seq
// probe, which must exist (up to upTo, the leader's last message of subj):
// direct gets while the answering replica catches up, then the leader.
func (b *Broker) firstFrom(ctx context.Context, subj string, probe, upTo uint64) (*natsbase.StoredMsg, error) {
	for try := range replicaTries {
		if try > 0 {
			time.Sleep(time.Duration(try) * 20 * time.Millisecond)
		}
		msgs, err := natsbase.DirectBatch(ctx, b.n.Conn().Conn, b.cfg.Stream, subj, probe, 1, upTo)
		if err != nil {
			return nil, err
		}
		if len(msgs) > 0 {
			return msgs[0], nil
		}
	}
	return natsbase.GetNext(ctx, b.n.Conn().Conn, b.cfg.Stream, subj, probe)
}

// rangeReader collects the publications of seqs from..to in one epoch from
// stored messages given oldest first, keeping the newest contiguous run.
type rangeReader struct {
	from, to    uint64
	epoch       string
	pubs        []brokers.Publication
	tail        bool   // seq to was seen (or passed): nothing is missing at the end
	firstStream uint64 // stream seq of the first publication kept
	lastStream  uint64 // stream seq of the last message taken
	inflight    *inflightWas
}

func (r *rangeReader) reset() {
	r.pubs, r.tail, r.firstStream, r.lastStream = r.pubs[:0], false, 0, 0
}

func (r *rangeReader) add(sm *natsbase.StoredMsg) {
	s, e := seqOf(sm.Header)
	if e == r.epoch && s >= r.to {
		r.tail = true
	}
	if e != r.epoch || s < r.from || s > r.to {
		return
	}
	if len(r.pubs) > 0 && s != r.pubs[len(r.pubs)-1].Seq+1 {
		r.pubs = r.pubs[:0] // not contiguous: keep the newest run
	}
	if len(r.pubs) == 0 {
		r.firstStream = sm.Seq
	}
	r.pubs = append(r.pubs, brokers.Publication{Seq: s, Epoch: e, Data: sm.Data, Was: r.inflight.was(sm.Header)})
	r.lastStream = sm.Seq
}
