package jetstream_test

// Tests of rows of docs/brokers.md's JetStream table that had none: a
// partition between a node and the server, and a restart with memory
// storage.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
)

// publishUntil publishes "<who>:<k>" on ch every pause, each call bounded
// by timeout (a gateway's broker timeout), until stop is closed, and
// returns every outcome; mark, when set, is called with each outcome as
// it comes.
func publishUntil(ctx context.Context, n node, ch, who string, timeout, pause time.Duration, stop <-chan struct{}, mark func(published)) []published {
	var out []published
	for k := 0; ; k++ {
		select {
		case <-stop:
			return out
		default:
		}
		data := fmt.Sprintf("%s:%d", who, k)
		pctx, cancel := context.WithTimeout(ctx, timeout)
		pos, err := n.b.Publish(pctx, ch, []byte(data))
		cancel()
		r := published{data, pos, err}
		if mark != nil {
			mark(r)
		}
		out = append(out, r)
		time.Sleep(pause)
	}
}

// TestPartition: a node reaches the server through a proxy that stops
// forwarding (packets dropped, the connection kept open) while another
// node reaches it directly; both publish all along with a 1 s broker
// timeout. The cut-off node goes into an outage (its publishes are acked
// with provisional positions, from the outbox) until it reaches the
// server again; the other node goes on (real, contiguous positions, its
// publications stored and delivered to it). After the heal nothing acked
// is lost or stored twice, and both nodes deliver the channel's one epoch
// from seq 1 to the end, once each, in order (docs/brokers.md, JetStream
// "Partition").
func TestPartition(t *testing.T) {
	leakCheckLast(t)
	srv := natstest.RunServer(t)
	proxy := redistest.StartProxy(t, srv.Server().Addr().String())
	cfg := jetstream.Config{URL: srv.URL(), HistorySize: 5000}
	cut := startNode(t, withURL(cfg, "nats://"+proxy.Addr()))
	other := startNode(t, cfg)
	ctx := t.Context()
	const ch = "doc.partition"
	for _, n := range []node{cut, other} {
		if err := n.b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	first, err := cut.b.Publish(ctx, ch, []byte("before"))
	if err != nil {
		t.Fatal(err)
	}
	cut.rec.WaitPublications(t, ch, 1, 10*time.Second)
	other.rec.WaitPublications(t, ch, 1, 10*time.Second)

	var (
		mu          sync.Mutex
		provisional int // the cut node's acks with an outage position
		results     [2][]published
		stop        = make(chan struct{})
		wg          sync.WaitGroup
	)
	proxy.Partition()
	wg.Go(func() {
		results[0] = publishUntil(ctx, cut, ch, "cut", time.Second, 20*time.Millisecond, stop, func(r published) {
			if r.err == nil && brokers.IsProvisional(r.pos.Epoch) {
				mu.Lock()
				provisional++
				mu.Unlock()
			}
		})
	})
	wg.Go(func() {
		results[1] = publishUntil(ctx, other, ch, "oth", time.Second, 20*time.Millisecond, stop, nil)
	})
	brokertest.Eventually(t, 15*time.Second, "the cut node in an outage (provisional acks)", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return provisional >= 10
	})
	// The other node goes on meanwhile: its publications are stored and
	// reach it; none of the cut node's outage publications reaches it.
	othGot := other.rec.Publications(ch)
	for _, p := range othGot {
		if brokers.IsProvisional(p.Epoch) {
			t.Errorf("the other node delivered %q at an outage position %+v", p.Data, p)
		}
	}
	if n := len(othGot); n < 10 || othGot[n-1].Epoch != first.Epoch {
		t.Errorf("the other node delivered %d publications during the partition (last %+v); it must go on in epoch %q", n, othGot[max(n-1, 0)], first.Epoch)
	}
	proxy.Heal()
	time.Sleep(200 * time.Millisecond) // both go on after the heal
	close(stop)
	wg.Wait()
	for i, rs := range results {
		for _, r := range rs {
			if r.err != nil {
				t.Errorf("node %d: publish %q refused: %v; a node in an outage holds it in its outbox, the other is not affected", i, r.data, r.err)
			}
			if i == 1 && r.err == nil && r.pos.Epoch != first.Epoch {
				t.Errorf("the other node acked %q at %+v, outside the channel's epoch %q", r.data, r.pos, first.Epoch)
			}
		}
	}
	brokertest.Eventually(t, 20*time.Second, "the cut node's outbox stored", func() bool { return cut.b.OutboxLen() == 0 })
	var (
		hist []brokers.Publication
		pos  brokers.Position
	)
	brokertest.Eventually(t, 20*time.Second, "the history readable", func() bool {
		hist, pos, err = other.b.Since(ctx, ch, 0, 5000)
		return err == nil
	})
	brokertest.Eventually(t, 20*time.Second, "both nodes at the last seq", func() bool {
		for _, n := range []node{cut, other} {
			ps := n.rec.Publications(ch)
			if len(ps) == 0 || ps[len(ps)-1].Seq != pos.Seq || ps[len(ps)-1].Epoch != pos.Epoch {
				return false
			}
		}
		return true
	})
	// The "before" publication is results[0][0] for checkRestart (its
	// epoch is the one before the fault).
	all := [][]published{append([]published{{"before", first, nil}}, results[0]...), results[1]}
	if pos.Epoch != first.Epoch {
		t.Errorf("epoch after the partition %q, want %q (nothing was lost)", pos.Epoch, first.Epoch)
	}
	c := checkRestart(t, true, all, hist, pos, map[string]node{"cut": cut, "other": other}, ch)
	t.Logf("partition: %d acked (%d by the cut node from its outbox), %d refused; stored %d; acked but not stored %d; stored twice %d; delivered in the epoch: cut %d, other %d; at outage positions: cut %d, other %d",
		c.acked, c.ackedInOutage, c.refused, c.stored, c.lostBeforeRestart+c.lostOutage+c.lostOther, c.duplicated,
		c.delivered["cut"], c.delivered["other"], c.outageDeliveries["cut"], c.outageDeliveries["other"])
}

// TestMemoryRestartNewEpoch: with memory storage a restarted server has
// lost the stream: the node re-creates it, the channel's history is gone,
// its next publication starts a new epoch at seq 1 (at the publisher and
// at a node subscribed all along), a resume from the old epoch finds the
// new one (clients resync), and what was published during the outage is
// stored after it, in the new epoch (docs/brokers.md, JetStream "NATS
// server restart, memory storage").
func TestMemoryRestartNewEpoch(t *testing.T) {
	leakCheckLast(t)
	srv := natstest.RunServer(t)
	cfg := jetstream.Config{URL: srv.URL(), Storage: jetstream.MemoryStorage, HistorySize: 100}
	a, sub := startNode(t, cfg), startNode(t, cfg)
	ctx := t.Context()
	const ch = "doc.memory"
	if err := sub.b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	var old brokers.Position
	for i := range 3 {
		pos, err := a.b.Publish(ctx, ch, fmt.Appendf(nil, "old%d", i))
		if err != nil {
			t.Fatal(err)
		}
		old = pos
	}
	sub.rec.WaitPublications(t, ch, 3, 10*time.Second)
	srv.Shutdown()
	// Published while the server is down: acked from the outbox.
	brokertest.Eventually(t, 10*time.Second, "a publish acked during the outage", func() bool {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		pos, err := a.b.Publish(pctx, ch, []byte("outage"))
		if err != nil {
			t.Fatalf("publish during the outage: %v; the outbox must hold it", err)
		}
		return brokers.IsProvisional(pos.Epoch)
	})
	srv.Restart(t)
	brokertest.Eventually(t, 20*time.Second, "the outbox stored", func() bool { return a.b.OutboxLen() == 0 })
	var (
		hist []brokers.Publication
		pos  brokers.Position
		err  error
	)
	brokertest.Eventually(t, 20*time.Second, "the history readable", func() bool {
		hist, pos, err = a.b.Since(ctx, ch, 0, 100)
		return err == nil
	})
	if pos.Epoch == old.Epoch || pos.Epoch == "" {
		t.Fatalf("epoch after the restart %q, want a new one (the old one, %q, lost its history)", pos.Epoch, old.Epoch)
	}
	for _, p := range hist {
		if string(p.Data) != "outage" {
			t.Errorf("history after the restart holds %q at seq %d: the old history must be gone, only the outage publishes stored", p.Data, p.Seq)
		}
	}
	if len(hist) == 0 || hist[0].Seq != 1 {
		t.Fatalf("history after the restart: %d publications from seq %v; want the outage publishes from seq 1", len(hist), seqs(hist))
	}
	after, err := a.b.Publish(ctx, ch, []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	if after.Epoch != pos.Epoch || after.Seq != pos.Seq+1 {
		t.Fatalf("publication after the restart at %+v, want seq %d in epoch %q", after, pos.Seq+1, pos.Epoch)
	}
	// The subscribed node delivers the new epoch from seq 1.
	var got []brokers.Publication
	brokertest.Eventually(t, 10*time.Second, "the subscribed node at the new epoch's last seq", func() bool {
		got = got[:0]
		for _, p := range sub.rec.Publications(ch) {
			if p.Epoch == after.Epoch {
				got = append(got, p)
			}
		}
		return len(got) > 0 && got[len(got)-1].Seq == after.Seq
	})
	for i, p := range got {
		if p.Seq != uint64(i+1) {
			t.Fatalf("subscribed node, new epoch: seqs %v, want 1..%d", seqs(got), after.Seq)
		}
	}
	// A client resuming from the old epoch finds another one: it resyncs.
	if _, latest, err := sub.b.Since(ctx, ch, old.Seq, 10); err != nil || latest.Epoch == old.Epoch {
		t.Fatalf("Since from the old position after the restart: %+v, %v; want the new epoch", latest, err)
	}
}

func seqs(ps []brokers.Publication) []uint64 {
	s := make([]uint64, len(ps))
	for i, p := range ps {
		s[i] = p.Seq
	}
	return s
}

// TestClusterMinority: with R3 streams on a 3-server cluster, a node whose
// server is left alone (the other two shut down: the minority side of a
// partition sees the same, no quorum) stores nothing: every publish is
// acked from the outbox at an outage position, and none of them is in
// the history until the others are back; then each is stored once, in
// order (docs/brokers.md, JetStream "Partition"). The server left alone
// is the stream's leader (it goes on taking writes it cannot commit until
// it steps down) or a follower (no leader: writes are answered 503).
func TestClusterMinority(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	t.Run("LeaderAlone", func(t *testing.T) { clusterMinority(t, true) })
	t.Run("FollowerAlone", func(t *testing.T) { clusterMinority(t, false) })
}

func clusterMinority(t *testing.T, leaderAlone bool) {
	leakCheckLast(t)
	cl := natstest.RunCluster(t, 3)
	cfg := jetstream.Config{URL: cl.URL(), Replicas: 3, HistorySize: 1000}
	warmUp(t, cfg) // the streams exist: their leader can be found
	leader := cl.StreamLeader(t, "SG_HISTORY")
	alone := leader
	if !leaderAlone {
		alone = cl.Servers[0]
		if alone == leader {
			alone = cl.Servers[1]
		}
	}
	n := startNode(t, withURL(cfg, alone.URL()))
	ctx := t.Context()
	const ch = "doc.minority"
	if err := n.b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	first, err := n.b.Publish(ctx, ch, []byte("before"))
	if err != nil {
		t.Fatal(err)
	}
	var others []*natstest.Server
	for _, s := range cl.Servers {
		if s != alone {
			others = append(others, s)
			s.Shutdown()
		}
	}
	var acked []published
	for k := range 10 {
		data := fmt.Sprintf("minority:%d", k)
		pctx, cancel := context.WithTimeout(ctx, minorityTimeout)
		pos, err := n.b.Publish(pctx, ch, []byte(data))
		cancel()
		if err != nil {
			t.Fatalf("publish %q on the minority side: %v; the outbox must hold it", data, err)
		}
		acked = append(acked, published{data, pos, nil})
	}
	// The first may have waited for its ack and joined the outbox with its
	// outcome unknown; every later one is acked at an outage position.
	for _, r := range acked[1:] {
		if !brokers.IsProvisional(r.pos.Epoch) {
			t.Errorf("%q acked at %+v on the minority side; want an outage position (nothing can be stored)", r.data, r.pos)
		}
	}
	if got := n.b.OutboxLen(); got < len(acked)-1 {
		t.Errorf("outbox holds %d, want at least %d", got, len(acked)-1)
	}
	// Nothing stored meanwhile: a history read on the minority side
	// (answered, if at all, by a leader that has not stepped down yet)
	// holds none of them.
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	if hist, _, err := n.b.Since(sctx, ch, 0, 100); err == nil {
		for _, p := range hist {
			if string(p.Data) != "before" {
				t.Errorf("%q stored on the minority side (seq %d)", p.Data, p.Seq)
			}
		}
	}
	cancel()
	for _, s := range others {
		s.Restart(t)
	}
	brokertest.Eventually(t, 30*time.Second, "the outbox stored", func() bool { return n.b.OutboxLen() == 0 })
	var hist []brokers.Publication
	brokertest.Eventually(t, 20*time.Second, "the history readable", func() bool {
		hist, _, err = n.b.Since(ctx, ch, 0, 100)
		return err == nil
	})
	want := []string{"before"}
	for _, r := range acked {
		want = append(want, r.data)
	}
	var got []string
	for i, p := range hist {
		got = append(got, string(p.Data))
		if p.Seq != uint64(i+1) || p.Epoch != first.Epoch {
			t.Errorf("history %d at seq %d epoch %q, want seq %d epoch %q", i, p.Seq, p.Epoch, i+1, first.Epoch)
		}
	}
	// The first publish, whose ack was awaited when the quorum went, is
	// the one at risk of being stored twice: the write the lone server
	// took commits once the quorum is back, and a new attempt made then
	// (conditional on whatever was last) stored it again after itself.
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stored %v, want %v (each once, in order, after the quorum is back; none twice)", got, want)
	}
}

// minorityTimeout bounds each publish in TestClusterMinority (the
// gateway's broker timeout; its default is 5 s).
const minorityTimeout = 5 * time.Second

// TestMemoryRestartPresence: presence kept in memory storage is lost with
// a restarted server: the member is no longer listed, a refresh does not
// bring it back, its next join does (docs/brokers.md, JetStream
// "Presence").
func TestMemoryRestartPresence(t *testing.T) {
	leakCheckLast(t)
	srv := natstest.RunServer(t)
	n := startNode(t, jetstream.Config{URL: srv.URL(), Storage: jetstream.MemoryStorage})
	ctx := t.Context()
	const ch = "doc.memory.presence"
	m := brokers.Member{User: "u", Client: "c"}
	if err := n.b.Join(ctx, ch, m, time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)
	var ms []brokers.Member
	brokertest.Eventually(t, 20*time.Second, "presence readable after the restart", func() bool {
		var err error
		ms, err = n.b.Members(ctx, ch)
		return err == nil
	})
	if len(ms) != 0 {
		t.Fatalf("members after a restart with memory storage: %v, want none (lost with the server)", ms)
	}
	brokertest.Eventually(t, 20*time.Second, "a refresh accepted after the restart", func() bool {
		return n.b.Refresh(ctx, ch, []brokers.Member{m}, time.Minute) == nil
	})
	if ms, err := n.b.Members(ctx, ch); err != nil || len(ms) != 0 {
		t.Fatalf("members after a refresh: %v, %v; want none (a refresh does not bring a member back)", ms, err)
	}
	if err := n.b.Join(ctx, ch, m, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ms, err := n.b.Members(ctx, ch); err != nil || len(ms) != 1 || ms[0] != m {
		t.Fatalf("members after the next join: %v, %v; want [%v]", ms, err, m)
	}
}
