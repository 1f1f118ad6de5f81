package faults

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// None is the fault period before the first fault.
const None = "none"

// Publication is one publish: Sent when the publisher sent it, Done when
// the answer (ack or error) came; OK if it was acked.
type Publication struct {
	Channel string
	ID      int
	Sent    time.Time
	Done    time.Time
	OK      bool
}

// EventType is what a subscriber received.
type EventType uint8

const (
	// Delivery is a message, identified by its publication's ID.
	Delivery EventType = iota + 1
	// Reset is `recovered: false`: the subscriber was told to reload.
	Reset
	// Gap is the client's report that a seq was skipped within an epoch
	// (an anomaly the server announced; it covers nothing).
	Gap
)

// Event is one thing a subscriber received, in the order received.
type Event struct {
	Type EventType
	At   time.Time
	ID   int // Delivery
}

// Subscriber is one subscription's events.
type Subscriber struct {
	Name    string // for the examples, e.g. "B/ch3#1"
	Channel string
	Events  []Event
}

// Fault is one injected fault: Kind (kill, pause, ...), Target (which
// process or slot), from Start until it was healed at End.
type Fault struct {
	Kind   string
	Target string
	Start  time.Time
	End    time.Time
}

// History is a whole run: the publications, every subscriber's events
// and the faults, in the order they started.
type History struct {
	Pubs   []Publication
	Subs   []*Subscriber
	Faults []Fault
}

// Stats are the figures of one fault kind (or of the whole run).
type Stats struct {
	Kind     string `json:"kind"`
	Injected int    `json:"faults"`
	// Acked publications published in this kind's fault periods, and the
	// deliveries they owe (acked x subscribers of the channel).
	Acked   int `json:"acked"`
	Refused int `json:"refused"`
	// PublishWait: the longest a publish waited for its answer (ack or
	// error): a partition that holds publishes shows here.
	PublishWait time.Duration `json:"publish_wait_ns"`
	Expected    int           `json:"expected"`
	// Lost: deliveries owed and never made, not covered by a Reset.
	// LostMsgs: acked publications lost at one subscriber or more.
	Lost     int `json:"lost"`
	LostMsgs int `json:"lost_msgs"`
	// Covered: deliveries missing but announced by a Reset.
	Covered    int `json:"covered"`
	Duplicated int `json:"duplicated"`
	Reordered  int `json:"reordered"`
	// Late: acked deliveries first received more than LateAfter after the
	// ack; MaxDelay: the longest wait from ack to first receipt.
	Late     int           `json:"late"`
	MaxDelay time.Duration `json:"max_delay_ns"`
	Resets   int           `json:"resets"`
	Gaps     int           `json:"gaps"`
	// UnackedDelivered: copies of refused or timed-out publications that
	// arrived (they may have been stored; not an anomaly).
	UnackedDelivered int `json:"unacked_delivered"`
	// Resume: per fault, from its end until every subscriber received a
	// message published after the end (however many faults came since).
	// NotResumed counts the faults after which some subscriber received
	// none before the run ended.
	Resume     []time.Duration `json:"resume_ns"`
	NotResumed int             `json:"not_resumed"`
	// ResumeTypical: per fault, the median over the subscribers of the
	// same wait (those that received something new), so one stuck
	// channel does not stand for all.
	ResumeTypical []time.Duration `json:"resume_typical_ns"`
	// PublishResume: per fault, from its end until every channel's
	// publisher had a publication sent after the end acked.
	PublishResume []time.Duration `json:"publish_resume_ns"`
}

// ResumeMax is the longest Resume, 0 if none.
func (s Stats) ResumeMax() time.Duration { return maxOf(s.Resume) }

// ResumeMedian is the median Resume, 0 if none.
func (s Stats) ResumeMedian() time.Duration { return median(s.Resume) }

// ResumeTypicalMedian is the median ResumeTypical, 0 if none.
func (s Stats) ResumeTypicalMedian() time.Duration { return median(s.ResumeTypical) }

// PublishResumeMax is the longest PublishResume, 0 if none.
func (s Stats) PublishResumeMax() time.Duration { return maxOf(s.PublishResume) }

// Anomaly is one example of a lost, duplicated or reordered delivery.
type Anomaly struct {
	What       string // lost, duplicated, reordered
	Subscriber string
	Channel    string
	ID         int
	Period     string // fault kind of the publication's period
	Detail     string
}

func (a Anomaly) String() string {
	return fmt.Sprintf("%s: id %d on %s at %s (period %s) %s", a.What, a.ID, a.Channel, a.Subscriber, a.Period, a.Detail)
}

// Report is Check's result: Stats per kind (None first if anything was
// published before the first fault, then the kinds in the order they first
// occurred), the total, and up to MaxExamples anomalies.
type Report struct {
	ByKind   []Stats   `json:"by_kind"`
	Total    Stats     `json:"total"`
	Examples []Anomaly `json:"examples,omitempty"`
}

// LateAfter is how long after its ack a delivery counts as Late.
const LateAfter = 5 * time.Second

// MaxExamples bounds Report.Examples.
const MaxExamples = 20

// Kind returns the Stats of kind k (zero Stats if absent).
func (r Report) Kind(k string) Stats {
	for _, s := range r.ByKind {
		if s.Kind == k {
			return s
		}
	}
	return Stats{Kind: k}
}

// checker is one Check's working state.
type checker struct {
	h       *History
	starts  []time.Time // fault starts, sorted
	kinds   []string    // kinds in first-seen order
	stats   map[string]*Stats
	report  *Report
	pubs    map[string]map[int]*Publication // channel -> id -> publication
	subsOf  map[string][]*Subscriber
	periods map[*Publication]string
	lost    map[*Publication]bool // acked and lost at some subscriber
	// examples counts the examples kept by anomaly and period.
	examples map[string]int
}

// Check accounts for every acked publication of h at every subscriber of
// its channel (see the package comment for the rules).
func Check(h History) Report {
	c := &checker{h: &h, stats: map[string]*Stats{}, report: &Report{}, pubs: map[string]map[int]*Publication{},
		subsOf: map[string][]*Subscriber{}, periods: map[*Publication]string{}, lost: map[*Publication]bool{}, examples: map[string]int{}}
	slices.SortStableFunc(h.Faults, func(a, b Fault) int { return a.Start.Compare(b.Start) })
	for _, f := range h.Faults {
		c.starts = append(c.starts, f.Start)
		c.stat(f.Kind).Injected++
	}
	for i := range h.Pubs {
		p := &h.Pubs[i]
		if c.pubs[p.Channel] == nil {
			c.pubs[p.Channel] = map[int]*Publication{}
		}
		c.pubs[p.Channel][p.ID] = p
		k := c.periodOf(p.Sent)
		c.periods[p] = k
		s := c.stat(k)
		s.PublishWait = max(s.PublishWait, p.Done.Sub(p.Sent))
		if p.OK {
			s.Acked++
		} else {
			s.Refused++
		}
	}
	for _, s := range h.Subs {
		c.subsOf[s.Channel] = append(c.subsOf[s.Channel], s)
		c.subscriber(s)
	}
	for p := range c.lost {
		c.stat(c.periods[p]).LostMsgs++
	}
	c.resume()
	r := c.report
	// None first, then the fault kinds in the order they first occurred.
	slices.SortStableFunc(c.kinds, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case a == None:
			return -1
		case b == None:
			return 1
		}
		return 0
	})
	total := Stats{Kind: "total"}
	for _, k := range c.kinds {
		s := *c.stats[k]
		r.ByKind = append(r.ByKind, s)
		total.add(s)
	}
	r.Total = total
	return *r
}

func (c *checker) stat(kind string) *Stats {
	s := c.stats[kind]
	if s == nil {
		s = &Stats{Kind: kind}
		c.stats[kind] = s
		c.kinds = append(c.kinds, kind)
	}
	return s
}

// periodOf is the kind of the last fault started at or before t.
func (c *checker) periodOf(t time.Time) string {
	i := sort.Search(len(c.starts), func(i int) bool { return c.starts[i].After(t) })
	if i == 0 {
		return None
	}
	return c.h.Faults[i-1].Kind
}

// example keeps a, unless MaxExamples are kept or examplesPer of the
// same kind of anomaly in the same period.
func (c *checker) example(a Anomaly) {
	k := a.What + "/" + a.Period
	if len(c.report.Examples) < MaxExamples && c.examples[k] < examplesPer {
		c.examples[k]++
		c.report.Examples = append(c.report.Examples, a)
	}
}

// examplesPer bounds the examples of one anomaly in one period, so that
// one stuck channel does not hide the rest.
const examplesPer = 3

// segment is the deliveries between two Resets (or the ends).
type segment struct {
	first, last int // first and last acked id delivered in it; -1 none
	end         time.Time
	resetAfter  bool // a Reset ends it
}

// subscriber checks one subscriber's events against its channel's
// publications.
func (c *checker) subscriber(s *Subscriber) {
	pubs := c.pubs[s.Channel]
	// Pass 1: duplicates and order within segments, the first copy of
	// each id, and the segments for the coverage of Resets.
	got := map[int]bool{}
	seenInSeg := map[int]bool{}
	maxInSeg := -1
	segs := []segment{{first: -1, last: -1}}
	for _, e := range s.Events {
		cur := &segs[len(segs)-1]
		switch e.Type {
		case Reset:
			cur.end, cur.resetAfter = e.At, true
			segs = append(segs, segment{first: -1, last: -1})
			seenInSeg, maxInSeg = map[int]bool{}, -1
			c.stat(c.periodOf(e.At)).Resets++
		case Gap:
			c.stat(c.periodOf(e.At)).Gaps++
		case Delivery:
			p := pubs[e.ID]
			if p == nil {
				// Not published by this run (or a broken payload): a
				// duplicate of nothing; count it as unacked.
				c.stat(c.periodOf(e.At)).UnackedDelivered++
				continue
			}
			period := c.periods[p]
			if !p.OK {
				if !got[e.ID] {
					c.stat(period).UnackedDelivered++
				}
				got[e.ID] = true
				continue
			}
			if seenInSeg[e.ID] {
				c.stat(period).Duplicated++
				c.example(Anomaly{What: "duplicated", Subscriber: s.Name, Channel: s.Channel, ID: e.ID, Period: period,
					Detail: fmt.Sprintf("received again at %s with no Reset between", e.At.Format("15:04:05.000"))})
				continue
			}
			seenInSeg[e.ID] = true
			if !got[e.ID] {
				st := c.stat(period)
				d := e.At.Sub(p.Done)
				st.MaxDelay = max(st.MaxDelay, d)
				if d > LateAfter {
					st.Late++
				}
			}
			got[e.ID] = true
			if e.ID < maxInSeg {
				c.stat(period).Reordered++
				c.example(Anomaly{What: "reordered", Subscriber: s.Name, Channel: s.Channel, ID: e.ID, Period: period,
					Detail: fmt.Sprintf("received after id %d", maxInSeg)})
			}
			maxInSeg = max(maxInSeg, e.ID)
			if cur.first < 0 {
				cur.first = e.ID
			}
			cur.last = e.ID
		}
	}
	// Pass 2: every acked publication of the channel, delivered or
	// covered by a Reset.
	ids := make([]int, 0, len(pubs))
	for id := range pubs {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		p := pubs[id]
		if !p.OK {
			continue
		}
		st := c.stat(c.periods[p])
		st.Expected++
		if got[id] {
			continue
		}
		if covered(segs, p) {
			st.Covered++
			continue
		}
		st.Lost++
		c.lost[p] = true
		c.example(Anomaly{What: "lost", Subscriber: s.Name, Channel: s.Channel, ID: id, Period: c.periods[p],
			Detail: fmt.Sprintf("acked at %s, never received", p.Done.Format("15:04:05.000"))})
	}
}

// covered reports whether a Reset announced p as possibly missing: p's id
// lies after the last id of the segment the Reset ended and before the
// first id of the next segment that has one; with no delivery after the
// Reset, p was acked before it.
func covered(segs []segment, p *Publication) bool {
	lastBefore := -1
	for i, sg := range segs {
		if sg.last >= 0 {
			lastBefore = sg.last
		}
		if !sg.resetAfter || p.ID <= lastBefore {
			continue
		}
		next := -1
		for _, n := range segs[i+1:] {
			if n.first >= 0 {
				next = n.first
				break
			}
		}
		if next >= 0 && p.ID < next {
			return true
		}
		if next < 0 && !p.Done.After(sg.end) {
			return true
		}
	}
	return false
}

// resume measures, for each fault, how long after its end every
// subscriber received a message published after the end, and every
// publisher had one acked. The wait may outlast later faults: it is still
// the time this fault's end took to be over for everyone.
func (c *checker) resume() {
	for _, f := range c.h.Faults {
		st := c.stat(f.Kind)
		var worst time.Duration
		var each []time.Duration
		resumed := true
		for _, s := range c.h.Subs {
			d, ok := c.firstAfter(s, f.End)
			if !ok {
				resumed = false
				continue
			}
			worst = max(worst, d)
			each = append(each, d)
		}
		if len(each) > 0 {
			st.ResumeTypical = append(st.ResumeTypical, median(each))
		}
		if resumed {
			st.Resume = append(st.Resume, worst)
		} else {
			st.NotResumed++
		}
		if d, ok := c.publishResume(f.End); ok {
			st.PublishResume = append(st.PublishResume, d)
		}
	}
}

// firstAfter is how long after end subscriber s received its first
// message published (sent) at or after end.
func (c *checker) firstAfter(s *Subscriber, end time.Time) (time.Duration, bool) {
	pubs := c.pubs[s.Channel]
	for _, e := range s.Events {
		if e.Type != Delivery || e.At.Before(end) {
			continue
		}
		if p := pubs[e.ID]; p != nil && !p.Sent.Before(end) {
			return e.At.Sub(end), true
		}
	}
	return 0, false
}

// publishResume is how long after end every channel had a publication
// sent at or after end acked.
func (c *checker) publishResume(end time.Time) (time.Duration, bool) {
	first := map[string]time.Time{}
	for _, p := range c.h.Pubs {
		if !p.OK || p.Sent.Before(end) {
			continue
		}
		if t, ok := first[p.Channel]; !ok || p.Done.Before(t) {
			first[p.Channel] = p.Done
		}
	}
	if len(first) < len(c.pubs) || len(first) == 0 {
		return 0, false
	}
	var worst time.Duration
	for _, t := range first {
		worst = max(worst, t.Sub(end))
	}
	return worst, true
}

func (s *Stats) add(o Stats) {
	s.Injected += o.Injected
	s.Acked += o.Acked
	s.Refused += o.Refused
	s.PublishWait = max(s.PublishWait, o.PublishWait)
	s.Expected += o.Expected
	s.Lost += o.Lost
	s.LostMsgs += o.LostMsgs
	s.Covered += o.Covered
	s.Duplicated += o.Duplicated
	s.Reordered += o.Reordered
	s.Late += o.Late
	s.MaxDelay = max(s.MaxDelay, o.MaxDelay)
	s.Resets += o.Resets
	s.Gaps += o.Gaps
	s.UnackedDelivered += o.UnackedDelivered
	s.Resume = append(s.Resume, o.Resume...)
	s.NotResumed += o.NotResumed
	s.ResumeTypical = append(s.ResumeTypical, o.ResumeTypical...)
	s.PublishResume = append(s.PublishResume, o.PublishResume...)
}

func maxOf(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
