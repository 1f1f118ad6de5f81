package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/natsbase"
)

// Since implements brokers.History. The latest position comes from the
// stream leader. The publications come from direct gets, which any replica
// may answer: a replica a moment behind can return fewer than asked, which
// the caller sees as a truncated history (and a client then resyncs rather
// than get wrong data). A channel with no stored message gets an epoch
// marker (seq 0) written, so the epoch returned now is the one its first
// publication keeps.
func (b *Broker) Since(ctx context.Context, ch string, since uint64, limit int) ([]brokers.Publication, brokers.Position, error) {
	if err := b.check(ctx); err != nil {
		return nil, brokers.Position{}, fmt.Errorf("jetstream: since %s: %w", ch, err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	subj := b.histPre + natsbase.Token(ch)
	last, err := b.lastOrMarker(ctx, ch, subj)
	if err != nil {
		return nil, brokers.Position{}, natsbase.Wrap("jetstream", "since", ch, err)
	}
	seq, epoch := seqOf(last.Header)
	pos := brokers.Position{Seq: seq, Epoch: epoch}
	limit = min(limit, b.histSize)
	if limit <= 0 || since >= pos.Seq {
		return nil, pos, nil
	}
	pubs, err := b.readRange(ctx, subj, last, since, uint64(limit))
	if err != nil {
		return nil, brokers.Position{}, natsbase.Wrap("jetstream", "since", ch, err)
	}
	return pubs, pos, nil
}

// lastOrMarker returns the channel's last stored message, writing an epoch
// marker first when it has none.
func (b *Broker) lastOrMarker(ctx context.Context, ch, subj string) (*natsbase.StoredMsg, error) {
	for range maxConflicts {
		last, err := natsbase.GetLast(ctx, b.nc.Conn, b.cfg.Stream, subj)
		if !errors.Is(err, natsbase.ErrNotFound) {
			return last, err
		}
		st := b.pubState(ch)
		st.mu.Lock()
		st.used = time.Now()
		epoch := newEpoch()
		m := &nats.Msg{Subject: subj, Header: nats.Header{
			hdrSeq:    []string{"0"},
			hdrEpoch:  []string{epoch},
			hdrExpect: []string{"0"},
		}}
		sseq, err := natsbase.Publish(ctx, b.nc.Conn, m)
		if err == nil {
			st.known, st.sseq, st.seq, st.epoch = true, sseq, 0, epoch
			st.mu.Unlock()
			return &natsbase.StoredMsg{Subject: subj, Seq: sseq, Header: m.Header}, nil
		}
		st.known = false
		st.mu.Unlock()
		if !errors.Is(err, natsbase.ErrConflict) {
			return nil, err
		}
		// Someone stored a message meanwhile: read again.
	}
	return nil, errNoProgress
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
	for {
		probe := uint64(1)
		if last.Seq > dist {
			probe = last.Seq - dist + 1
		}
		msgs, err := natsbase.DirectBatch(ctx, b.nc.Conn, b.cfg.Stream, subj, probe, 1, last.Seq)
		if err != nil {
			return nil, err
		}
		if len(msgs) == 0 {
			return nil, nil // a replica behind; the caller sees a truncated history
		}
		found := msgs[0]
		s, e := seqOf(found.Header)
		oldest := start != nil && start.Seq == found.Seq // nothing older on the subject
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
	for try := range 4 {
		if try > 0 {
			time.Sleep(time.Duration(try) * 20 * time.Millisecond)
		}
		msgs, err := natsbase.DirectBatch(ctx, b.nc.Conn, b.cfg.Stream, subj, start.Seq, int(skip+n), last.Seq)
		if err != nil {
			return nil, err
		}
		pubs = pubs[:0]
		tail := false // the end of the range was seen: nothing is missing for lag
		for _, sm := range msgs {
			s, e := seqOf(sm.Header)
			if e != epoch || s < from {
				continue
			}
			if s >= from+n-1 {
				tail = true
			}
			if s > from+n-1 {
				continue
			}
			if len(pubs) > 0 && s != pubs[len(pubs)-1].Seq+1 {
				pubs = pubs[:0] // not contiguous: keep the newest run
			}
			pubs = append(pubs, brokers.Publication{Seq: s, Epoch: e, Data: sm.Data})
		}
		if tail {
			break
		}
	}
	return pubs, nil
}
