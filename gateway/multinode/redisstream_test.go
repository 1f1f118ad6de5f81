package multinode_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/wstest"
)

// redisStreamsBroker is a redis-streams node on addr with test timeouts.
func redisStreamsBroker(addr string) *redisstream.Broker {
	return redisstream.New(redisstream.Config{
		Addrs:            []string{addr},
		HistorySize:      5000,
		Block:            time.Second,
		ValidateInterval: time.Second,
		DialTimeout:      500 * time.Millisecond,
		ReadTimeout:      time.Second,
		ReconnectMin:     20 * time.Millisecond,
		ReconnectMax:     200 * time.Millisecond,
		Logger:           redistest.Logger(),
	})
}

// TestRedisStreams drives the redis-streams backend through gateways:
// delivery, one seq sequence, catch-up and presence across two nodes; a
// third node's client leaving within the presence TTL when that node
// dies; a subscriber of a dying node resuming on another node with
// `since`; and redis-server killed with SIGKILL (AOF appendfsync always)
// under WebSocket publishers.
func TestRedisStreams(t *testing.T) {
	redistest.QuietGoRedis()
	srv := redistest.Start(t, redistest.Options{AOF: true})
	start := func() *node { return startNode(t, redisStreamsBroker(srv.Addr()), edit("redis-streams")) }
	n1, n2 := start(), start()
	// Nodes may hand out different epochs for a never-stored channel.
	t.Run("crossNode", func(t *testing.T) { crossNodeEpochs(t, n1, n2, true, false) })
	t.Run("nodeCrash", func(t *testing.T) { nodeCrash(t, n1, n2, start()) })
	t.Run("resumeOnOtherNode", func(t *testing.T) { resumeOnOtherNode(t, n1, start()) })
	t.Run("redisKilled", func(t *testing.T) { redisKilled(t, n1, n2, srv) })
}

// resumeOnOtherNode: a subscriber of node n3 follows a channel that a
// client of n1 publishes on; n3 dies (its broker first, then its
// listener and connections); the subscriber connects to n1 and subscribes
// with `since` its last position. It must get recovered: true and, with
// what it had, every acked publication exactly once, seqs contiguous in
// one epoch.
func resumeOnOtherNode(t *testing.T, n1, n3 *node) {
	const ch = "doc.resume-other"
	z := dial(t, n3, "z")
	z.Connect("uz")
	z.Sub(ch)
	p := dial(t, n1, "p")
	p.Connect("p")

	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	var pubs sync.WaitGroup
	pubs.Go(func() {
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			data := fmt.Sprintf("m%d", k)
			r := p.Call("pub", map[string]any{"ch": ch, "data": data})
			if r == nil {
				return
			}
			if r.Op() != "ack" {
				t.Errorf("pub %s: %v", data, r)
				return
			}
			mu.Lock()
			acked = append(acked, data)
			mu.Unlock()
			time.Sleep(3 * time.Millisecond)
		}
	})
	// z reads some messages, then its node dies.
	got := z.Msgs(ch, 20, wait)
	if len(got) != 20 {
		close(stop)
		pubs.Wait()
		t.FailNow()
	}
	// The channel was empty: its epoch is the one its first publication
	// (from n1) started (docs/brokers.md, redis-streams: nodes do not agree
	// on an empty channel's epoch).
	epoch := got[0].Str("epoch")
	if err := n3.broker.Close(); err != nil {
		t.Error(err)
	}
	n3.shutdown(t)
	// Whatever z received before its connection went away is kept.
	got = append(got, z.Drain(200*time.Millisecond, func(o wstest.Msg) bool { return o.Op() == "msg" && o.Str("ch") == ch })...)
	last := got[len(got)-1]
	time.Sleep(100 * time.Millisecond) // publishes land while z is away

	z2 := dial(t, n1, "z-again")
	z2.Connect("uz")
	r := z2.SubSince(ch, last.Num("seq"), last.Str("epoch"))
	if r["recovered"] != true || r.Str("epoch") != epoch {
		close(stop)
		pubs.Wait()
		t.Fatalf("resubscribe on the other node with since %d/%q: %v, want recovered true in epoch %q", last.Num("seq"), last.Str("epoch"), r, epoch)
	}
	before := len(got)
	ps, _ := r["pubs"].([]any)
	for _, x := range ps {
		got = append(got, wstest.Msg(x.(map[string]any)))
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	pubs.Wait()
	mu.Lock()
	total := len(acked)
	mu.Unlock()
	if total > len(got) {
		got = append(got, z2.Msgs(ch, total-len(got), wait)...)
	}
	if extra := z2.Drain(300*time.Millisecond, func(o wstest.Msg) bool { return o.Op() == "msg" && o.Str("ch") == ch }); len(extra) > 0 {
		got = append(got, extra...)
	}
	if len(got) != total {
		t.Errorf("z got %d messages over both nodes, %d were acked", len(got), total)
	}
	for i, m := range got {
		if m.Num("seq") != uint64(i+1) || m.Str("epoch") != epoch || (i < total && m.Str("data") != acked[i]) {
			t.Fatalf("z: message %d is %v, want seq %d epoch %q data %q", i, m, i+1, epoch, acked[min(i, total-1)])
		}
	}
	t.Logf("%d acked; the subscriber got %d on the crashed node, %d in the recovered pubs, the rest live on the other node: each once, in order", total, before, len(ps))
}

// redisKilled: WebSocket clients publish on two nodes while redis-server
// (AOF appendfsync always) is killed with SIGKILL and restarted on the same
// directory and port. Redis Streams has no outbox: a publish during the
// outage is refused with `unavailable`, never acked. Every acked publish
// reaches a subscriber on each node exactly once, in seq order, with the
// seq it was acked with, in one epoch; a refused one is delivered at most
// once (its reply may have been lost after it was stored).
func redisKilled(t *testing.T, n1, n2 *node, srv *redistest.Server) {
	const ch = "doc.redis-killed"
	s1, s2 := dial(t, n1, "ks1"), dial(t, n2, "ks2")
	s1.Connect("ks1")
	s2.Connect("ks2")
	s1.Sub(ch)
	s2.Sub(ch)
	p1, p2 := dial(t, n1, "kp1"), dial(t, n2, "kp2")
	p1.Connect("kp1")
	p2.Connect("kp2")
	// The first publication sets the channel's epoch (the nodes' epochs for
	// the empty channel may differ).
	seed := p1.MustCall("pub", map[string]any{"ch": ch, "data": "seed"}, "ack")
	epoch := seed.Str("epoch")

	const each = 150
	var mu sync.Mutex
	ackedSeq := map[string]uint64{"seed": seed.Num("seq")}
	refused, wrongEpoch := 0, 0
	var wg sync.WaitGroup
	for i, p := range []*wstest.Client{p1, p2} {
		wg.Go(func() {
			for k := range each {
				data := fmt.Sprintf("%d:%d", i, k)
				r := p.Call("pub", map[string]any{"ch": ch, "data": data})
				if r == nil {
					return
				}
				mu.Lock()
				switch {
				case r.Op() == "ack":
					ackedSeq[data] = r.Num("seq")
					if r.Str("epoch") != "" && r.Str("epoch") != epoch {
						if wrongEpoch++; wrongEpoch == 1 {
							t.Errorf("ack %v: epoch %q, want %q (the first such ack)", r, r.Str("epoch"), epoch)
						}
					}
				case r.Op() == "error" && r.Str("code") == "unavailable":
					refused++
				default:
					t.Errorf("pub %s: %v, want ack or unavailable", data, r)
				}
				mu.Unlock()
				time.Sleep(3 * time.Millisecond)
			}
		})
	}
	waitAcked := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(ackedSeq)
		mu.Unlock()
		if n >= 60 {
			break
		}
		if time.Now().After(waitAcked) {
			t.Fatalf("only %d acked within 20 s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	srv.Kill()
	time.Sleep(300 * time.Millisecond)
	srv.Restart()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	total := len(ackedSeq)
	if wrongEpoch > 0 {
		t.Errorf("%d of %d acks in another epoch than %q", wrongEpoch, total, epoch)
	}
	for _, s := range []*wstest.Client{s1, s2} {
		var got []wstest.Msg
		count := map[string]int{}
		for deadline := time.Now().Add(20 * time.Second); ; {
			missing := 0
			for d := range ackedSeq {
				if count[d] == 0 {
					missing++
				}
			}
			if missing == 0 {
				break
			}
			m := s.TryNext(time.Until(deadline), func(o wstest.Msg) bool { return o.Op() == "msg" && o.Str("ch") == ch })
			if m == nil {
				t.Fatalf("%s: %d of %d acked messages not delivered within 20 s", s.Name(), missing, total)
			}
			got = append(got, m)
			count[m.Str("data")]++
		}
		for _, m := range s.Drain(300*time.Millisecond, func(o wstest.Msg) bool { return o.Op() == "msg" && o.Str("ch") == ch }) {
			got = append(got, m)
			count[m.Str("data")]++
		}
		for i, m := range got {
			if m.Num("seq") != uint64(i+1) || m.Str("epoch") != epoch {
				t.Fatalf("%s: delivery %d is %v, want seq %d in epoch %q", s.Name(), i, m, i+1, epoch)
			}
			if seq, ok := ackedSeq[m.Str("data")]; ok && seq != m.Num("seq") {
				t.Errorf("%s: %q acked with seq %d, delivered with %d", s.Name(), m.Str("data"), seq, m.Num("seq"))
			}
		}
		for d, n := range count {
			if n != 1 {
				t.Errorf("%s: %q delivered %d times", s.Name(), d, n)
			}
		}
		t.Logf("%s: %d delivered (seqs 1..%d, epoch kept): %d acked, each once; %d refused, of which %d stored and delivered once",
			s.Name(), len(got), len(got), total, refused, len(got)-total)
	}
}
