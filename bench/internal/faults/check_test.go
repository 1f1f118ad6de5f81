package faults

import (
	"strings"
	"testing"
	"time"
)

// t0 is the start of every test history; at(ms) is t0 + ms milliseconds.
var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// hist builds a history: n acked publications on channel "c", id i sent
// at 10*i ms and acked 2 ms later.
func hist(n int) History {
	var h History
	for i := range n {
		h.Pubs = append(h.Pubs, Publication{Channel: "c", ID: i, Sent: at(10 * i), Done: at(10*i + 2), OK: true})
	}
	return h
}

// sub is a subscriber of "c" that received ids in order, each 5 ms after
// it was sent; a negative id -1 is a Reset, -2 a Gap.
func sub(name string, ids ...int) *Subscriber {
	s := &Subscriber{Name: name, Channel: "c"}
	last := 0
	for _, id := range ids {
		switch id {
		case -1:
			s.Events = append(s.Events, Event{Type: Reset, At: at(last + 1)})
		case -2:
			s.Events = append(s.Events, Event{Type: Gap, At: at(last + 1)})
		default:
			last = max(last+1, 10*id+5)
			s.Events = append(s.Events, Event{Type: Delivery, At: at(last), ID: id})
		}
	}
	return s
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func cat(parts ...[]int) []int {
	var out []int
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestCheckClean(t *testing.T) {
	h := hist(10)
	h.Subs = []*Subscriber{sub("a", seq(0, 10)...), sub("b", seq(0, 10)...)}
	r := Check(h)
	if r.Total.Acked != 10 || r.Total.Expected != 20 || r.Total.Lost != 0 || r.Total.Duplicated != 0 || r.Total.Reordered != 0 {
		t.Fatalf("clean history: got %+v", r.Total)
	}
	if len(r.Examples) != 0 {
		t.Fatalf("clean history: examples %v", r.Examples)
	}
}

func TestCheckDetectsLoss(t *testing.T) {
	h := hist(10)
	h.Subs = []*Subscriber{sub("a", seq(0, 10)...), sub("b", cat(seq(0, 4), seq(6, 10))...)}
	r := Check(h)
	if r.Total.Lost != 2 || r.Total.LostMsgs != 2 {
		t.Fatalf("ids 4 and 5 missing at b: got lost %d (msgs %d), want 2", r.Total.Lost, r.Total.LostMsgs)
	}
	if len(r.Examples) != 2 || r.Examples[0].What != "lost" || r.Examples[0].ID != 4 || r.Examples[0].Subscriber != "b" {
		t.Fatalf("examples: %v", r.Examples)
	}
}

func TestCheckDetectsLossAtTheEnd(t *testing.T) {
	h := hist(10)
	h.Subs = []*Subscriber{sub("a", seq(0, 7)...)}
	if r := Check(h); r.Total.Lost != 3 {
		t.Fatalf("the last 3 never arrived: got lost %d", r.Total.Lost)
	}
}

func TestCheckDetectsDuplicates(t *testing.T) {
	h := hist(6)
	h.Subs = []*Subscriber{sub("a", 0, 1, 2, 2, 3, 4, 5, 5)}
	r := Check(h)
	if r.Total.Duplicated != 2 || r.Total.Lost != 0 || r.Total.Reordered != 0 {
		t.Fatalf("got %+v, want 2 duplicates only", r.Total)
	}
}

func TestCheckDetectsReordering(t *testing.T) {
	h := hist(6)
	h.Subs = []*Subscriber{sub("a", 0, 1, 3, 2, 4, 5)}
	r := Check(h)
	if r.Total.Reordered != 1 || r.Total.Lost != 0 || r.Total.Duplicated != 0 {
		t.Fatalf("got %+v, want 1 reordered only", r.Total)
	}
	if r.Examples[0].What != "reordered" || r.Examples[0].ID != 2 || !strings.Contains(r.Examples[0].Detail, "after id 3") {
		t.Fatalf("example: %v", r.Examples[0])
	}
}

func TestCheckResetCoversWhatItAnnounces(t *testing.T) {
	h := hist(10)
	// b lost 4..6 and was told: a Reset, then 7 onwards.
	h.Subs = []*Subscriber{sub("b", cat(seq(0, 4), []int{-1}, seq(7, 10))...)}
	r := Check(h)
	if r.Total.Lost != 0 || r.Total.Covered != 3 || r.Total.Resets != 1 {
		t.Fatalf("got %+v, want 3 covered, 0 lost", r.Total)
	}
}

func TestCheckResetCoversNoLaterGap(t *testing.T) {
	h := hist(12)
	// The Reset covers 4..5; 9 goes missing later, unannounced.
	h.Subs = []*Subscriber{sub("b", cat(seq(0, 4), []int{-1}, seq(6, 9), seq(10, 12))...)}
	r := Check(h)
	if r.Total.Lost != 1 || r.Total.Covered != 2 {
		t.Fatalf("got %+v, want 2 covered and id 9 lost", r.Total)
	}
	if r.Examples[0].ID != 9 {
		t.Fatalf("example: %v", r.Examples[0])
	}
}

func TestCheckResetAtTheEnd(t *testing.T) {
	h := hist(10)
	// A Reset after id 5 with nothing after it: it covers what was acked
	// before it arrived (6, acked at 62 ms, Reset at ~56 ms: no).
	s := sub("b", cat(seq(0, 6), []int{-1})...)
	h.Subs = []*Subscriber{s}
	r := Check(h)
	if r.Total.Covered != 0 || r.Total.Lost != 4 {
		t.Fatalf("got %+v, want 4 lost: acked after the Reset and never sent", r.Total)
	}
	s.Events[len(s.Events)-1].At = at(75) // the Reset came after 6 and 7 were acked
	r = Check(h)
	if r.Total.Covered != 2 || r.Total.Lost != 2 {
		t.Fatalf("got %+v, want 6 and 7 covered, 8 and 9 lost", r.Total)
	}
}

func TestCheckRedeliveryAfterResetIsNoDuplicate(t *testing.T) {
	h := hist(6)
	h.Subs = []*Subscriber{sub("a", cat(seq(0, 4), []int{-1}, seq(2, 6))...)}
	r := Check(h)
	if r.Total.Duplicated != 0 || r.Total.Reordered != 0 || r.Total.Lost != 0 {
		t.Fatalf("got %+v, want a clean reload", r.Total)
	}
}

func TestCheckGapCoversNothing(t *testing.T) {
	h := hist(6)
	h.Subs = []*Subscriber{sub("a", 0, 1, -2, 3, 4, 5)}
	r := Check(h)
	if r.Total.Lost != 1 || r.Total.Gaps != 1 {
		t.Fatalf("got %+v, want id 2 lost and 1 gap", r.Total)
	}
}

func TestCheckUnackedIsNoAnomaly(t *testing.T) {
	h := hist(6)
	h.Pubs[2].OK = false // timed out: may or may not be stored
	h.Pubs[4].OK = false
	h.Subs = []*Subscriber{sub("a", 0, 1, 3, 2, 5)} // 2 stored late, 4 never
	var r Report
	h.Pubs[4].Done = h.Pubs[4].Sent.Add(3 * time.Second) // a timeout
	r = Check(h)
	if r.Total.PublishWait != 3*time.Second {
		t.Fatalf("publish wait %s, want 3s", r.Total.PublishWait)
	}
	if r.Total.Lost != 0 || r.Total.Reordered != 0 || r.Total.UnackedDelivered != 1 || r.Total.Acked != 4 || r.Total.Refused != 2 {
		t.Fatalf("got %+v", r.Total)
	}
}

func TestCheckAttributesByFaultPeriod(t *testing.T) {
	h := hist(30)
	h.Faults = []Fault{
		{Kind: "kill", Start: at(95), End: at(120)},
		{Kind: "pause", Start: at(195), End: at(220)},
	}
	// id 15 lost in the kill period, 25 duplicated in the pause period,
	// 1 reordered before any fault.
	ids := cat([]int{0, 2, 1}, seq(3, 15), seq(16, 26), []int{25}, seq(26, 30))
	h.Subs = []*Subscriber{sub("a", ids...)}
	r := Check(h)
	if len(r.ByKind) != 3 || r.ByKind[0].Kind != None || r.ByKind[1].Kind != "kill" || r.ByKind[2].Kind != "pause" {
		t.Fatalf("kinds: %+v", r.ByKind)
	}
	none, kill, pause := r.Kind(None), r.Kind("kill"), r.Kind("pause")
	if none.Reordered != 1 || none.Lost != 0 || none.Acked != 10 || none.Injected != 0 {
		t.Fatalf("none: %+v", none)
	}
	if kill.Lost != 1 || kill.LostMsgs != 1 || kill.Injected != 1 || kill.Acked != 10 || kill.Duplicated != 0 {
		t.Fatalf("kill: %+v", kill)
	}
	if pause.Duplicated != 1 || pause.Lost != 0 || pause.Injected != 1 {
		t.Fatalf("pause: %+v", pause)
	}
}

func TestCheckResume(t *testing.T) {
	h := hist(50)
	h.Faults = []Fault{{Kind: "kill", Start: at(100), End: at(200)}}
	// a gets everything 5 ms after it was sent; b gets nothing from 10
	// to 29, then catches up at 300 ms.
	b := sub("b", seq(0, 10)...)
	for i := 10; i < 50; i++ {
		ts := at(max(300+i, 10*i+5))
		b.Events = append(b.Events, Event{Type: Delivery, At: ts, ID: i})
	}
	h.Subs = []*Subscriber{sub("a", seq(0, 50)...), b, sub("c", seq(0, 50)...)}
	k := Check(h).Kind("kill")
	// The first message sent at or after 200 ms is id 20; b got it at 320.
	if len(k.Resume) != 1 || k.Resume[0] != 120*time.Millisecond || k.NotResumed != 0 {
		t.Fatalf("resume: %v (not resumed %d), want [120ms]", k.Resume, k.NotResumed)
	}
	// The median sub (a or c) resumed 5 ms after the end.
	if len(k.ResumeTypical) != 1 || k.ResumeTypical[0] != 5*time.Millisecond {
		t.Fatalf("typical resume: %v", k.ResumeTypical)
	}
	if len(k.PublishResume) != 1 || k.PublishResume[0] != 2*time.Millisecond {
		t.Fatalf("publish resume: %v, want [2ms]", k.PublishResume)
	}
}

func TestCheckResumeOutlastsTheNextFault(t *testing.T) {
	h := hist(50)
	h.Faults = []Fault{{Kind: "pause", Start: at(100), End: at(200)}, {Kind: "kill", Start: at(300), End: at(350)}}
	// b gets nothing from 150 ms until id 40 at 405 ms: the pause took
	// 205 ms to be over, the kill 55 ms.
	h.Subs = []*Subscriber{sub("a", seq(0, 50)...), sub("b", cat(seq(0, 15), seq(40, 50))...)}
	r := Check(h)
	if p := r.Kind("pause"); len(p.Resume) != 1 || p.Resume[0] != 205*time.Millisecond {
		t.Fatalf("pause: %+v", p)
	}
	if k := r.Kind("kill"); len(k.Resume) != 1 || k.Resume[0] != 55*time.Millisecond {
		t.Fatalf("kill: %+v", k)
	}
}

func TestCheckNotResumed(t *testing.T) {
	h := hist(50)
	h.Faults = []Fault{{Kind: "pause", Start: at(100), End: at(200)}, {Kind: "kill", Start: at(300), End: at(350)}}
	// b gets nothing after 150 ms, ever: neither fault is over for it.
	h.Subs = []*Subscriber{sub("a", seq(0, 50)...), sub("b", seq(0, 15)...)}
	r := Check(h)
	if p := r.Kind("pause"); p.NotResumed != 1 || len(p.Resume) != 0 {
		t.Fatalf("pause: %+v", p)
	}
	if k := r.Kind("kill"); k.NotResumed != 1 {
		t.Fatalf("kill: %+v", k)
	}
}

func TestCheckExamplesSpread(t *testing.T) {
	h := hist(100)
	h.Faults = []Fault{{Kind: "kill", Start: at(500), End: at(510)}}
	// Everything after id 10 lost (90 in two periods), and one duplicate:
	// the examples show each kind of anomaly in each period.
	h.Subs = []*Subscriber{sub("a", 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)}
	r := Check(h)
	if r.Total.Lost != 89 || r.Total.Duplicated != 1 {
		t.Fatalf("got %+v", r.Total)
	}
	count := map[string]int{}
	for _, a := range r.Examples {
		count[a.What+"/"+a.Period]++
	}
	if count["lost/none"] != examplesPer || count["lost/kill"] != examplesPer || count["duplicated/none"] != 1 {
		t.Fatalf("examples by anomaly/period: %v", count)
	}
}

func TestCheckLate(t *testing.T) {
	h := hist(10)
	// b receives id 3 8 s after its ack (after 9): late and reordered,
	// not lost.
	b := sub("b", cat(seq(0, 3), seq(4, 10))...)
	b.Events = append(b.Events, Event{Type: Delivery, At: at(32 + 8000), ID: 3})
	h.Subs = []*Subscriber{sub("a", seq(0, 10)...), b}
	r := Check(h)
	if r.Total.Late != 1 || r.Total.MaxDelay != 8*time.Second || r.Total.Lost != 0 || r.Total.Reordered != 1 {
		t.Fatalf("got %+v, want 1 late (8s), 1 reordered, 0 lost", r.Total)
	}
}
