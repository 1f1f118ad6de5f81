package redis_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
)

// The fault tests run publishers on two nodes sharing Redis while
// something breaks Redis, then account for every publication: was each
// one whose Publish succeeded delivered to every node's handler exactly
// once, in order, or is its absence explained by an epoch change?

// published is one Publish call's outcome.
type published struct {
	id  string // the data: "<node>:<publisher>:<i>", unique
	pos brokers.Position
	err error
	at  time.Time
}

// faultRun is a running load: publishers on every node, on one channel
// that every node subscribed.
type faultRun struct {
	ch    string
	nodes []*redis.Broker
	recs  []*brokertest.Recorder

	mu   sync.Mutex
	pubs []published
	stop chan struct{}
	wg   sync.WaitGroup

	publishers int
}

// startLoad subscribes every node to ch and starts perNode publishers on
// each, each publishing every interval (bounded by max publications).
func startLoad(t *testing.T, nodes []*redis.Broker, recs []*brokertest.Recorder, ch string, perNode int, interval time.Duration, max int) *faultRun {
	t.Helper()
	return startLoadOn(t, nodes, recs, len(nodes), ch, perNode, interval, max)
}

// startLoadOn is startLoad with publishers on the first publishing nodes
// only (the others subscribe).
func startLoadOn(t *testing.T, nodes []*redis.Broker, recs []*brokertest.Recorder, publishing int, ch string, perNode int, interval time.Duration, max int) *faultRun {
	t.Helper()
	r := &faultRun{ch: ch, nodes: nodes, recs: recs, stop: make(chan struct{}), publishers: publishing * perNode}
	for _, n := range nodes {
		if err := n.Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
	}
	for ni, n := range nodes[:publishing] {
		for p := range perNode {
			r.wg.Go(func() {
				tick := time.NewTicker(interval)
				defer tick.Stop()
				for i := 0; i < max; i++ {
					select {
					case <-r.stop:
						return
					case <-tick.C:
					}
					id := fmt.Sprintf("%d:%d:%d", ni, p, i)
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					pos, err := n.Publish(ctx, ch, []byte(id))
					cancel()
					r.mu.Lock()
					r.pubs = append(r.pubs, published{id: id, pos: pos, err: err, at: time.Now()})
					r.mu.Unlock()
				}
			})
		}
	}
	return r
}

// count returns how many Publish calls returned so far.
func (r *faultRun) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pubs)
}

// finish stops the publishers, waits until every node is up with an
// empty outbox, and fences: a last publication from every node, received
// by every node, so everything published before is delivered or never
// will be.
func (r *faultRun) finish(t *testing.T, timeout time.Duration) {
	t.Helper()
	close(r.stop)
	r.wg.Wait()
	for i, n := range r.nodes {
		brokertest.Eventually(t, timeout, fmt.Sprintf("node %d up with an empty outbox", i), func() bool {
			return n.Ping(t.Context()) == nil && n.OutboxLen() == 0
		})
	}
	for i, n := range r.nodes {
		if _, err := n.Publish(t.Context(), r.ch, fmt.Appendf(nil, "fence:%d", i)); err != nil {
			t.Fatalf("fence from node %d: %v", i, err)
		}
	}
	for k, rec := range r.recs {
		rec.WaitFor(t, timeout, fmt.Sprintf("fences on node %d", k), func(evs []brokertest.Event) bool {
			seen := 0
			for _, e := range evs {
				if e.Channel == r.ch && e.Presence == 0 && strings.HasPrefix(string(e.Pub.Data), "fence:") && !redis.IsLocalEpoch(e.Pub.Epoch) {
					seen++
				}
			}
			return seen == len(r.nodes)
		})
	}
}

// faultStats are the counts a fault test reports and asserts on.
type faultStats struct {
	Published       int // Publish calls
	AckedReal       int // ... that returned a position in a Redis epoch
	AckedLocal      int // ... that returned a node-local position (outbox)
	Failed          int // ... that returned an error
	FailedUnavail   int // ... of which wrapped brokers.ErrUnavailable
	Epochs          int // Redis epochs seen by the nodes
	PerNode         []nodeStats
	WrongData       int // (epoch, seq) pairs delivered with different data, or not what Publish returned
	AckedRealLost   int // acked in a Redis epoch, delivered to no node, not in final history
	LocalNotOnOwner int // outbox publications the publishing node did not deliver locally
	Publishers      int // concurrent publishers (each has at most one publish in flight)
	Reconnects      int // the most shard reconnections of a node (each after a failure)
}

type nodeStats struct {
	ExactlyOnce     int // acked publications delivered once in a Redis epoch
	Missing         int // acked publications never delivered in a Redis epoch...
	MissingByEpoch  int // ... of which explained: the node's delivery of that epoch ended before its seq
	DupSameEpoch    int // delivered twice in one epoch (a bug)
	DupAcrossEpochs int // delivered in two Redis epochs (replayed after Redis lost it)
	Gaps            int // a missing seq inside a delivered epoch
	OrderViolations int // a publisher's messages delivered out of their order
	// Applied out of order: applying the node's deliveries as a client
	// does (provisional ones included, a real one skipped when its was
	// names a provisional position applied), a publisher's message
	// applied after a later one of the same publisher.
	Reordered int
	Local     int // deliveries under a node-local epoch
}

func (s faultStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "published %d: acked with a Redis position %d, acked from the outbox (local position) %d, failed %d (unavailable %d); Redis epochs %d; wrong data %d; acked-but-lost %d; outbox publications not delivered locally (in flight at the failure) %d",
		s.Published, s.AckedReal, s.AckedLocal, s.Failed, s.FailedUnavail, s.Epochs, s.WrongData, s.AckedRealLost, s.LocalNotOnOwner)
	for i, n := range s.PerNode {
		fmt.Fprintf(&b, "\n  node %d: exactly once %d, missing %d (explained by an epoch change %d), duplicate in one epoch %d, duplicate across epochs %d, gaps %d, order violations %d, applied out of order %d, local deliveries %d",
			i, n.ExactlyOnce, n.Missing, n.MissingByEpoch, n.DupSameEpoch, n.DupAcrossEpochs, n.Gaps, n.OrderViolations, n.Reordered, n.Local)
	}
	return b.String()
}

// analyze accounts for every publication. history is the channel's final
// history (to tell acked-but-lost from not-delivered).
func (r *faultRun) analyze(t *testing.T) faultStats {
	t.Helper()
	r.mu.Lock()
	pubs := append([]published(nil), r.pubs...)
	r.mu.Unlock()
	var st faultStats
	st.Publishers = r.publishers
	for _, n := range r.nodes {
		st.Reconnects = max(st.Reconnects, int(n.Stats().Reconnects))
	}
	st.Published = len(pubs)
	byID := make(map[string]published, len(pubs))
	for _, p := range pubs {
		byID[p.id] = p
		switch {
		case p.err != nil:
			st.Failed++
			if errors.Is(p.err, brokers.ErrUnavailable) {
				st.FailedUnavail++
			}
		case redis.IsLocalEpoch(p.pos.Epoch):
			st.AckedLocal++
		default:
			st.AckedReal++
		}
	}
	type key struct {
		epoch string
		seq   uint64
	}
	dataAt := make(map[key]string)
	epochs := make(map[string]bool)
	deliveredAnywhere := make(map[string]bool)
	for ni, rec := range r.recs {
		var ns nodeStats
		once := make(map[string][]key) // id -> real positions delivered
		lastSeq := make(map[string]uint64)
		localSeen := make(map[string]bool)
		lastIdx := make(map[string]int) // "<node>:<publisher>" -> last i delivered (real epochs)
		ns.Reordered = appliedOutOfOrder(t, ni, rec.Publications(r.ch), byID)
		var prev key
		for _, e := range rec.Publications(r.ch) {
			id := string(e.Data)
			if strings.HasPrefix(id, "fence:") {
				continue
			}
			if redis.IsLocalEpoch(e.Epoch) {
				ns.Local++
				localSeen[id] = true
				continue
			}
			epochs[e.Epoch] = true
			k := key{e.Epoch, e.Seq}
			if d, ok := dataAt[k]; ok && d != id {
				st.WrongData++
			}
			dataAt[k] = id
			if p, ok := byID[id]; ok && p.err == nil && !redis.IsLocalEpoch(p.pos.Epoch) && p.pos.Seq != 0 && (p.pos.Epoch != e.Epoch || p.pos.Seq != e.Seq) {
				st.WrongData++ // delivered at another position than Publish returned
			}
			if e.Epoch == prev.epoch && e.Seq != prev.seq+1 {
				ns.Gaps++
			}
			prev = k
			if e.Seq > lastSeq[e.Epoch] {
				lastSeq[e.Epoch] = e.Seq
			}
			once[id] = append(once[id], k)
			deliveredAnywhere[id] = true
			parts := strings.Split(id, ":")
			if len(parts) == 3 {
				pk := parts[0] + ":" + parts[1]
				var i int
				fmt.Sscan(parts[2], &i)
				if last, ok := lastIdx[pk]; ok && i <= last && len(once[id]) == 1 {
					ns.OrderViolations++
				}
				lastIdx[pk] = i
			}
		}
		for _, p := range pubs {
			if p.err != nil {
				continue
			}
			ks := once[p.id]
			switch {
			case len(ks) == 1:
				ns.ExactlyOnce++
			case len(ks) == 0:
				ns.Missing++
				if ns.Missing <= 3 {
					t.Logf("node %d: %s missing, acked at %+v", ni, p.id, p.pos)
				}
				if !redis.IsLocalEpoch(p.pos.Epoch) && p.pos.Epoch != "" && lastSeq[p.pos.Epoch] < p.pos.Seq {
					ns.MissingByEpoch++
				}
			default:
				same := false
				for i := range ks {
					for j := range i {
						same = same || ks[i].epoch == ks[j].epoch
					}
				}
				if same {
					ns.DupSameEpoch++
				} else {
					ns.DupAcrossEpochs++
				}
			}
			if redis.IsLocalEpoch(p.pos.Epoch) && p.id[0] == byte('0'+ni) && !localSeen[p.id] {
				st.LocalNotOnOwner++
			}
		}
		st.PerNode = append(st.PerNode, ns)
	}
	st.Epochs = len(epochs)
	for _, p := range pubs {
		if p.err == nil && !redis.IsLocalEpoch(p.pos.Epoch) && !deliveredAnywhere[p.id] {
			st.AckedRealLost++
		}
	}
	return st
}

// appliedOutOfOrder applies a node's deliveries of one channel as a
// client does (docs/protocol.md, provisional positions): a provisional
// one unless its epoch has it already, a real one unless its was names a
// provisional position applied. It counts the messages applied after a
// later message of their publisher (ids "<node>:<publisher>:<i>", each
// publisher waiting for its ack before the next).
func appliedOutOfOrder(t *testing.T, node int, pubs []brokers.Publication, byID map[string]published) int {
	t.Helper()
	prov := make(map[string]uint64) // provisional epoch -> last seq applied
	applied := make(map[string]bool)
	last := make(map[string]int) // publisher -> highest i applied
	n := 0
	for _, e := range pubs {
		if redis.IsLocalEpoch(e.Epoch) {
			if e.Seq <= prov[e.Epoch] {
				continue
			}
			prov[e.Epoch] = e.Seq
		} else if e.Was.Epoch != "" && e.Was.Seq <= prov[e.Was.Epoch] {
			continue
		}
		id := string(e.Data)
		parts := strings.Split(id, ":")
		if len(parts) != 3 || applied[id] {
			continue
		}
		applied[id] = true
		var i int
		fmt.Sscan(parts[2], &i)
		pk := parts[0] + ":" + parts[1]
		if l, ok := last[pk]; ok && i < l {
			n++
			if n <= 3 {
				t.Logf("node %d: %s applied after %s:%d (at %d %s, was %+v); Publish returned %+v, %v; the later one %+v", node, id, pk, l, e.Seq, e.Epoch, e.Was, byID[id].pos, byID[id].err, byID[fmt.Sprintf("%s:%d", pk, l)].pos)
			}
			continue
		}
		last[pk] = i
	}
	return n
}

// faultConfig is testConfig with a fast probe, so an outage is noticed
// quickly.
func faultConfig(addrs ...string) redis.Config {
	cfg := testConfig(addrs...)
	cfg.HistorySize = 5000
	return cfg
}

// checkNoBugs asserts what must hold whatever the fault: no wrong data,
// no duplicate in one epoch, no gap inside an epoch, no reordering, no
// unexplained loss, and the publishing node saw its outbox messages.
func checkNoBugs(t *testing.T, st faultStats) { checkFault(t, st, 0) }

// checkFailover is checkNoBugs for a failover to a replica: Redis
// replicates asynchronously, so writes the master acked just before it was
// killed may be missing on the replica. Each of the st.Publishers
// publishers waits for its ack, so at most one per publisher; they must be
// acked-but-lost everywhere (no node delivered them), never half-delivered.
func checkFailover(t *testing.T, st faultStats) { checkFault(t, st, st.Publishers) }

func checkFault(t *testing.T, st faultStats, unreplicated int) {
	t.Helper()
	if st.WrongData != 0 {
		t.Errorf("%d publications delivered with wrong data or position", st.WrongData)
	}
	// A publish in flight when the connection failed may be stored
	// already (without its local position), so it is not delivered
	// locally, and neither are its channel's later ones on that node (they
	// would overtake it): they all arrive once, in order, under their real
	// positions (the per-node counts and Reordered). LocalNotOnOwner is
	// reported, not bounded.
	for i, n := range st.PerNode {
		if n.DupSameEpoch != 0 || n.Gaps != 0 || n.OrderViolations != 0 || n.Reordered != 0 {
			t.Errorf("node %d: %d duplicates in one epoch, %d gaps, %d order violations, %d applied out of order", i, n.DupSameEpoch, n.Gaps, n.OrderViolations, n.Reordered)
		}
		// Unexplained by an epoch change: only writes lost everywhere (a
		// failover's unreplicated tail), and only when they may be.
		lostEverywhere := 0
		if unreplicated > 0 {
			lostEverywhere = st.AckedRealLost
		}
		if n.Missing > n.MissingByEpoch+lostEverywhere {
			t.Errorf("node %d: %d publications missing, only %d explained by an epoch change and %d by a write lost everywhere", i, n.Missing, n.MissingByEpoch, lostEverywhere)
		}
	}
	if unreplicated > 0 && st.AckedRealLost > unreplicated {
		t.Errorf("%d acked publications lost everywhere; at most %d (one in flight per publisher) may be", st.AckedRealLost, unreplicated)
	}
}

// killRestart runs load on two nodes, kills Redis with SIGKILL after
// killAfter publications, restarts it after down, and returns the stats.
func killRestart(t *testing.T, srv *redistest.Server, down time.Duration) faultStats {
	nodes, recs := startNodes(t, faultConfig(srv.Addr()), 2)
	run := startLoad(t, nodes, recs, "fault:doc", 2, 2*time.Millisecond, 2000)
	brokertest.Eventually(t, 10*time.Second, "200 publications", func() bool { return run.count() >= 200 })
	killedAt := time.Now()
	srv.Kill()
	time.Sleep(down)
	srv.Restart()
	restarted := time.Now()
	for i, n := range nodes {
		brokertest.Eventually(t, 10*time.Second, fmt.Sprintf("node %d back up", i), func() bool { return n.Ping(t.Context()) == nil })
	}
	t.Logf("Redis down %v; nodes up again %v after the restart", restarted.Sub(killedAt).Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	time.Sleep(200 * time.Millisecond) // publish a little after recovery too
	run.finish(t, 15*time.Second)
	for _, rec := range recs {
		if err := rec.Err(); err != nil {
			t.Error(err)
		}
	}
	st := run.analyze(t)
	t.Logf("%s", st)
	checkNoBugs(t, st)
	return st
}

// TestKillRestartAOF: Redis with appendfsync always is killed mid-stream
// and restarted. Nothing acknowledged is lost: every publication is
// delivered to both nodes exactly once, in one epoch.
func TestKillRestartAOF(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	st := killRestart(t, srv, 300*time.Millisecond)
	if st.Epochs != 1 {
		t.Errorf("%d epochs, want 1: history survived", st.Epochs)
	}
	if st.AckedLocal == 0 {
		t.Errorf("no publication went through the outbox: the outage was not exercised")
	}
	ok := st.Published - st.Failed
	for i, n := range st.PerNode {
		if n.ExactlyOnce != ok {
			t.Errorf("node %d: %d of %d acked publications delivered exactly once", i, n.ExactlyOnce, ok)
		}
	}
}

// TestKillRestartNoPersistence: Redis without persistence is killed and
// restarted empty. History is lost, so the channel gets a new epoch; what
// was published before may be missing on a node only where its delivery
// of the old epoch stopped (the epoch change tells clients to resync);
// everything from the outbox reaches every node in the new epoch.
func TestKillRestartNoPersistence(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	st := killRestart(t, srv, 300*time.Millisecond)
	if st.Epochs < 2 {
		t.Errorf("%d epochs, want a new one after Redis lost its data", st.Epochs)
	}
	if st.AckedLocal == 0 {
		t.Errorf("no publication went through the outbox: the outage was not exercised")
	}
}

var _ = sort.Strings

// TestPartition: node 0 reaches Redis through a proxy that drops every
// packet for a while (its connections stay open: only its probe and its
// timeouts tell it Redis is gone), while node 1 keeps working. When the
// network heals, the commands held back in the network arrive late, next
// to the outbox replay: the per-node counter keeps every publication
// exactly once. Nothing is lost: Redis kept its data.
func TestPartition(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	proxy := redistest.StartProxy(t, srv.Addr())
	cutNodes, cutRecs := startNodes(t, faultConfig(proxy.Addr()), 1)
	okNodes, okRecs := startNodes(t, faultConfig(srv.Addr()), 1)
	nodes := []*redis.Broker{cutNodes[0], okNodes[0]}
	recs := []*brokertest.Recorder{cutRecs[0], okRecs[0]}
	run := startLoad(t, nodes, recs, "partition:doc", 2, 2*time.Millisecond, 3000)
	brokertest.Eventually(t, 10*time.Second, "200 publications", func() bool { return run.count() >= 200 })
	cutAt := time.Now()
	proxy.Partition()
	brokertest.Eventually(t, 10*time.Second, "node 0 to notice", func() bool { return nodes[0].Ping(t.Context()) != nil })
	noticed := time.Since(cutAt)
	time.Sleep(time.Second)
	proxy.Heal()
	healed := time.Now()
	brokertest.Eventually(t, 15*time.Second, "node 0 back", func() bool { return nodes[0].Ping(t.Context()) == nil })
	t.Logf("partition noticed after %v; node back %v after the heal", noticed.Round(time.Millisecond), time.Since(healed).Round(time.Millisecond))
	time.Sleep(200 * time.Millisecond)
	run.finish(t, 15*time.Second)
	for _, rec := range recs {
		if err := rec.Err(); err != nil {
			t.Error(err)
		}
	}
	st := run.analyze(t)
	t.Logf("%s", st)
	checkNoBugs(t, st)
	if st.Epochs != 1 || st.AckedLocal == 0 {
		t.Errorf("%d epochs (want 1), %d publications through the outbox (want some)", st.Epochs, st.AckedLocal)
	}
	want := st.Published - st.Failed
	for i, n := range st.PerNode {
		if n.ExactlyOnce != want {
			t.Errorf("node %d: %d of %d acked publications delivered exactly once", i, n.ExactlyOnce, want)
		}
	}
}
