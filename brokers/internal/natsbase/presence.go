package natsbase

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/internal/natsname"
)

// Presence keeps presence lists in a JetStream stream, one subject per
// member, <prefix>.pres.<channel>.<client>.<user> (each part a Token). The
// stream keeps one message per subject; each entry carries a per-message TTL
// (Nats-TTL, whole seconds, rounded up), so a member whose node stops
// refreshing it disappears on the server, without any node's help. The
// stream leaves a delete marker when an entry expires, and republishes every
// stored message (entries, tombstones and markers) on
// <prefix>.pe.<channel>.<client>.<user>: nodes subscribed to a channel read
// join and leave events from there.
//
// Every change is a conditional write (Nats-Expected-Last-Subject-Sequence),
// so concurrent joins, leaves, refreshes and the server's expiry of one
// member serialize on the stream: a Join announces only when no live entry
// was there, a Leave only when one was, and an expiry is announced by the
// server's single marker. Each is stored once, so each is republished once.
type Presence struct {
	nc       *nats.Conn
	stream   string
	subjPre  string // <prefix>.pres
	eventPre string // <prefix>.pe
	cfg      PresenceConfig

	mu     sync.Mutex
	seqs   map[string]written // entry subject -> the entry this node last wrote
	maxTTL time.Duration      // the longest TTL written
	writes int                // since the last sweep of seqs
}

// written is an entry this node wrote: its stream seq (the condition of
// the next write) and when. An entry not written for 3 TTLs has expired:
// remembering it serves nothing (a Leave that failed leaves one behind).
type written struct {
	seq uint64
	at  time.Time
}

// PresenceConfig configures the presence stream.
type PresenceConfig struct {
	// Prefix starts every subject (see ValidPrefix).
	Prefix string
	// Stream is the stream name.
	Stream string
	// Storage and Replicas of the stream.
	Storage  jetstream.StorageType
	Replicas int
}

// Operations, in the Sg-Op header of an entry.
const (
	hdrOp     = "Sg-Op"
	opJoin    = "join"
	opRefresh = "ref"
	opLeave   = "leave"

	hdrTTL          = "Nats-TTL"
	hdrExpectSubSeq = "Nats-Expected-Last-Subject-Sequence"
	hdrMarker       = "Nats-Marker-Reason"
	hdrKVOp         = "KV-Operation"
)

// tombstoneTTL is how long a leave tombstone and the server's delete
// marker stay (the server's minimum). They only make a late Refresh or a
// second Leave see that the member is gone; after them, an absent entry
// says the same.
const tombstoneTTL = time.Second

// maxCASAttempts bounds the retries of one conditional write that keeps
// losing races.
const maxCASAttempts = 20

// NewPresence returns a Presence on nc. Call Ensure before use.
func NewPresence(nc *nats.Conn, cfg PresenceConfig) *Presence {
	return &Presence{
		nc:       nc,
		stream:   cfg.Stream,
		subjPre:  cfg.Prefix + ".pres",
		eventPre: cfg.Prefix + ".pe",
		cfg:      cfg,
		seqs:     make(map[string]written),
	}
}

// Ensure creates or updates the presence stream.
func (p *Presence) Ensure(ctx context.Context, js jetstream.JetStream) error {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:                   p.stream,
		Description:            "syncgate presence: one entry per member, expiring by per-message TTL",
		Subjects:               []string{p.subjPre + ".>"},
		Storage:                p.cfg.Storage,
		Replicas:               max(1, p.cfg.Replicas),
		MaxMsgsPerSubject:      1,
		Discard:                jetstream.DiscardOld,
		AllowDirect:            true,
		AllowRollup:            true,
		AllowMsgTTL:            true,
		SubjectDeleteMarkerTTL: tombstoneTTL,
		RePublish:              &jetstream.RePublish{Source: p.subjPre + ".>", Destination: p.eventPre + ".>"},
	})
	if err != nil {
		return fmt.Errorf("presence stream %s: %w", p.stream, err)
	}
	return nil
}

// Check asks the server for the presence stream (one round trip): an error
// that IsStreamNotFound says it is gone.
func (p *Presence) Check(ctx context.Context, js jetstream.JetStream) error {
	if _, err := js.Stream(ctx, p.stream); err != nil {
		return fmt.Errorf("presence stream %s: %w", p.stream, err)
	}
	return nil
}

// EventSubject is what a node subscribes to for ch's presence events.
func (p *Presence) EventSubject(ch string) string {
	return natsname.Subject(p.eventPre, ch) + ".*.*"
}

func (p *Presence) entrySubject(ch string, m brokers.Member) string {
	return natsname.Subject(p.subjPre, ch, m.Client, m.User)
}

// ttlSeconds rounds ttl up to whole seconds, the server's unit.
func ttlSeconds(ttl time.Duration) string {
	s := (ttl + time.Second - 1) / time.Second
	return strconv.FormatInt(int64(max(s, 1)), 10)
}

func (p *Presence) entryMsg(subj, op string, ttl time.Duration, expect uint64) *nats.Msg {
	m := nats.NewMsg(subj)
	m.Header.Set(hdrOp, op)
	m.Header.Set(hdrExpectSubSeq, strconv.FormatUint(expect, 10))
	if op == opLeave {
		// A tombstone that is itself a marker: its expiry leaves no new
		// marker, so it is announced once.
		m.Header.Set(hdrKVOp, "PURGE")
		m.Header.Set(hdrTTL, ttlSeconds(tombstoneTTL))
	} else {
		m.Header.Set(hdrTTL, ttlSeconds(ttl))
	}
	return m
}

// live reports whether a stored entry lists its member now.
func live(sm *StoredMsg, now time.Time) bool {
	op := sm.Header.Get(hdrOp)
	if op != opJoin && op != opRefresh {
		return false
	}
	secs, err := strconv.ParseInt(sm.Header.Get(hdrTTL), 10, 64)
	if err != nil || sm.Time.IsZero() {
		return true
	}
	return now.Before(sm.Time.Add(time.Duration(secs) * time.Second))
}

func (p *Presence) remember(subj string, seq uint64, ttl time.Duration) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seqs[subj] = written{seq, now}
	p.maxTTL = max(p.maxTTL, ttl)
	if p.writes++; p.writes >= 4096 {
		p.writes = 0
		for k, w := range p.seqs {
			if now.Sub(w.at) > 3*p.maxTTL {
				delete(p.seqs, k)
			}
		}
	}
}

func (p *Presence) forget(subj string) {
	p.mu.Lock()
	delete(p.seqs, subj)
	p.mu.Unlock()
}

func (p *Presence) cached(subj string) (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w, ok := p.seqs[subj]
	return w.seq, ok
}

// Join implements brokers.Presence.Join.
func (p *Presence) Join(ctx context.Context, ch string, m brokers.Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("presence: join %s: ttl %v <= 0", ch, ttl)
	}
	subj := p.entrySubject(ch, m)
	op, expect := opJoin, uint64(0)
	for range maxCASAttempts {
		seq, err := Publish(ctx, p.nc, p.entryMsg(subj, op, ttl, expect))
		if err == nil {
			p.remember(subj, seq, ttl)
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return err
		}
		last, err := GetLast(ctx, p.nc, p.stream, subj)
		switch {
		case errors.Is(err, ErrNotFound):
			op, expect = opJoin, 0
		case err != nil:
			return err
		case live(last, time.Now()):
			op, expect = opRefresh, last.Seq // listed already: only refresh
		default:
			op, expect = opJoin, last.Seq // a tombstone, a marker or an expired entry
		}
	}
	return fmt.Errorf("presence: join %s: %d conflicting writes in a row", ch, maxCASAttempts)
}

// Leave implements brokers.Presence.Leave.
func (p *Presence) Leave(ctx context.Context, ch string, m brokers.Member) error {
	subj := p.entrySubject(ch, m)
	expect, ok := p.cached(subj)
	for range maxCASAttempts {
		if !ok {
			last, err := GetLast(ctx, p.nc, p.stream, subj)
			if errors.Is(err, ErrNotFound) {
				p.forget(subj)
				return nil
			}
			if err != nil {
				return err
			}
			if op := last.Header.Get(hdrOp); op != opJoin && op != opRefresh {
				p.forget(subj) // gone already: announced then
				return nil
			}
			expect = last.Seq
		}
		_, err := Publish(ctx, p.nc, p.entryMsg(subj, opLeave, 0, expect))
		if err == nil {
			p.forget(subj)
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return err
		}
		ok = false
	}
	return fmt.Errorf("presence: leave %s: %d conflicting writes in a row", ch, maxCASAttempts)
}

// Refresh implements brokers.Presence.Refresh. The writes are pipelined.
func (p *Presence) Refresh(ctx context.Context, ch string, ms []brokers.Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("presence: refresh %s: ttl %v <= 0", ch, ttl)
	}
	var errs []error
	pending := ms
	for attempt := 0; len(pending) > 0 && attempt < 3; attempt++ {
		subjs := make([]string, 0, len(pending))
		msgs := make([]*nats.Msg, 0, len(pending))
		members := make([]brokers.Member, 0, len(pending))
		for _, m := range pending {
			subj := p.entrySubject(ch, m)
			expect, ok := p.cached(subj)
			if !ok {
				last, err := GetLast(ctx, p.nc, p.stream, subj)
				if errors.Is(err, ErrNotFound) {
					continue // expired and gone: not brought back
				}
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if !live(last, time.Now()) {
					continue
				}
				expect = last.Seq
			}
			subjs = append(subjs, subj)
			msgs = append(msgs, p.entryMsg(subj, opRefresh, ttl, expect))
			members = append(members, m)
		}
		replies, rerrs := RequestMany(ctx, p.nc, msgs)
		pending = pending[:0:0]
		for i := range msgs {
			err := rerrs[i]
			var seq uint64
			if err == nil {
				seq, err = ParseAck(replies[i].Data)
			}
			switch {
			case err == nil:
				p.remember(subjs[i], seq, ttl)
			case errors.Is(err, ErrConflict):
				// Rewritten by someone else (a rejoin), or expired: read
				// it again next round.
				p.forget(subjs[i])
				pending = append(pending, members[i])
			default:
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("presence: refresh %s: %w", ch, errors.Join(errs...))
	}
	return nil
}

// Members implements brokers.Presence.Members. It reads from the stream
// leader (a replica may lag behind a Join that already returned): the
// subjects of the channel's entries, then each one's entry, pipelined.
func (p *Presence) Members(ctx context.Context, ch string) ([]brokers.Member, error) {
	subjects, err := Subjects(ctx, p.nc, p.stream, natsname.Subject(p.subjPre, ch)+".*.*")
	if err != nil {
		return nil, err
	}
	out := make([]brokers.Member, 0, len(subjects))
	for len(subjects) > 0 {
		n := min(len(subjects), 1024)
		entries, err := GetLastMany(ctx, p.nc, p.stream, subjects[:n])
		if err != nil {
			return nil, err
		}
		now := time.Now()
		for _, sm := range entries {
			if sm == nil || !live(sm, now) {
				continue
			}
			if m, ok := p.parseEntrySubject(sm.Subject, p.subjPre); ok {
				out = append(out, m)
			}
		}
		subjects = subjects[n:]
	}
	return out, nil
}

// parseEntrySubject reads the member from <pre>.<channel>.<client>.<user>.
func (p *Presence) parseEntrySubject(subj, pre string) (brokers.Member, bool) {
	if !strings.HasPrefix(subj, pre+".") {
		return brokers.Member{}, false
	}
	rest := subj[len(pre)+1:]
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return brokers.Member{}, false
	}
	user, ok1 := natsname.ParseToken(rest[i+1:])
	rest = rest[:i]
	j := strings.LastIndexByte(rest, '.')
	if j < 0 {
		return brokers.Member{}, false
	}
	client, ok2 := natsname.ParseToken(rest[j+1:])
	if !ok1 || !ok2 {
		return brokers.Member{}, false
	}
	return brokers.Member{User: user, Client: client}, true
}

// Event reads a republished presence message: the change it announces, if
// any (a refresh announces nothing).
func (p *Presence) Event(msg *nats.Msg) (brokers.PresenceEventType, brokers.Member, bool) {
	m, ok := p.parseEntrySubject(msg.Subject, p.eventPre)
	if !ok {
		return 0, brokers.Member{}, false
	}
	switch msg.Header.Get(hdrOp) {
	case opJoin:
		return brokers.Join, m, true
	case opLeave:
		return brokers.Leave, m, true
	case opRefresh:
		return 0, m, false
	}
	if msg.Header.Get(hdrMarker) != "" {
		return brokers.Leave, m, true // expired
	}
	return 0, m, false
}

// EventFilter drops the second leave of a member that a node may see when
// an explicit Leave and the server's expiry of the same entry race (the
// marker is written without a condition). It keeps, per channel, the
// members last seen leaving, for a while. Not safe for concurrent use: the
// caller holds the channel's lock.
type EventFilter struct {
	left map[string]time.Time // client -> when its leave was seen
}

// eventMemory is how long a leave is remembered.
const eventMemory = 10 * time.Second

// Pass reports whether the event should be handed on.
func (f *EventFilter) Pass(t brokers.PresenceEventType, m brokers.Member, now time.Time) bool {
	key := m.Client + "\x00" + m.User
	switch t {
	case brokers.Join:
		delete(f.left, key)
		return true
	case brokers.Leave:
		if at, ok := f.left[key]; ok && now.Sub(at) < eventMemory {
			return false
		}
		if f.left == nil {
			f.left = make(map[string]time.Time)
		}
		for k, at := range f.left {
			if now.Sub(at) >= eventMemory {
				delete(f.left, k)
			}
		}
		f.left[key] = now
		return true
	}
	return false
}
