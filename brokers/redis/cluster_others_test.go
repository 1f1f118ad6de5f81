package redis_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
)

// timedRecorder is a Recorder that also notes when each publication
// (by channel and data) was first handed over.
type timedRecorder struct {
	*brokertest.Recorder
	mu sync.Mutex
	at map[string]time.Time
}

func (r *timedRecorder) HandlePublication(ch string, p brokers.Publication) {
	now := time.Now()
	r.mu.Lock()
	if k := ch + "\x00" + string(p.Data); r.at[k].IsZero() {
		r.at[k] = now
	}
	r.mu.Unlock()
	r.Recorder.HandlePublication(ch, p)
}

func (r *timedRecorder) deliveredAt(ch, data string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at[ch+"\x00"+data]
}

// clusterPub is one Publish call and its outcome.
type clusterPub struct {
	ch, id      string
	pos         brokers.Position
	err         error
	sent, acked time.Time
}

// othersBound is how long a publish on a channel of a master that keeps
// running may take, and how long after its ack it may reach a node,
// while another master fails over: far below the failover itself (the
// node timeout of 1 s, the election, the reconnect: 3-5 s), far above a
// round trip on a loaded machine.
const othersBound = time.Second

// TestClusterFailoverOthersUnaffected proves the "others are unaffected"
// half of docs/brokers.md's "Cluster: master killed, replica promoted":
// two nodes publish on a channel of each of the three masters (every 5 ms
// per node and channel) and subscribe to all three; the first master is
// killed with SIGKILL and its replica promoted. On the channels of the
// two other masters, from before the kill until both nodes are up on the
// promoted replica and after, every publish is acked by Redis (a real
// position, never a provisional one, never an error) within othersBound,
// and every acked publication reaches both nodes once, at its acked seq
// and epoch, within othersBound of its ack, seqs 1..N in one epoch. The
// killed master's channel must have gone through the outbox (a
// provisional ack), or the failover was not exercised; its own accounting
// is TestClusterFailover's.
func TestClusterFailoverOthersUnaffected(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, ReplicasPerMaster: 1, NodeTimeout: time.Second})
	cfg := faultConfig(c.Addrs()...)
	cfg.Cluster = true
	var nodes []*redis.Broker
	var recs []*timedRecorder
	for range 2 {
		b := redis.New(cfg)
		rec := &timedRecorder{Recorder: brokertest.NewRecorder(), at: make(map[string]time.Time)}
		if err := b.Start(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			rec.MarkClosed()
		})
		nodes, recs = append(nodes, b), append(recs, rec)
	}
	hot, _ := hotChannel(t, c, 0)
	others := make([]string, 0, 2)
	for i := 1; i <= 2; i++ {
		ch, _ := hotChannel(t, c, i)
		others = append(others, ch)
	}
	chans := append([]string{hot}, others...)
	for _, n := range nodes {
		for _, ch := range chans {
			if err := n.Subscribe(t.Context(), ch); err != nil {
				t.Fatal(err)
			}
		}
	}

	var (
		mu   sync.Mutex
		pubs []clusterPub
		wg   sync.WaitGroup
	)
	stop := make(chan struct{})
	for ni, n := range nodes {
		for _, ch := range chans {
			wg.Go(func() {
				tick := time.NewTicker(5 * time.Millisecond)
				defer tick.Stop()
				for i := range 4000 {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					id := fmt.Sprintf("%d:%d", ni, i)
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					sent := time.Now()
					pos, err := n.Publish(ctx, ch, []byte(id))
					cancel()
					mu.Lock()
					pubs = append(pubs, clusterPub{ch: ch, id: id, pos: pos, err: err, sent: sent, acked: time.Now()})
					mu.Unlock()
				}
			})
		}
	}
	count := func(ch string) int {
		mu.Lock()
		defer mu.Unlock()
		k := 0
		for _, p := range pubs {
			if p.ch == ch {
				k++
			}
		}
		return k
	}
	for _, ch := range chans {
		brokertest.Eventually(t, 10*time.Second, "100 publications on "+ch, func() bool { return count(ch) >= 100 })
	}
	killed := time.Now()
	c.Masters[0].Kill()
	for i, n := range nodes {
		brokertest.Eventually(t, 30*time.Second, fmt.Sprintf("node %d up on the promoted replica", i), func() bool {
			return n.Ping(t.Context()) == nil
		})
	}
	up := time.Now()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("master of %s killed; both nodes up on the promoted replica after %v", hot, up.Sub(killed).Round(time.Millisecond))

	provisional := 0
	for _, p := range pubs {
		if p.ch == hot && p.err == nil && redis.IsLocalEpoch(p.pos.Epoch) {
			provisional++
		}
	}
	if provisional == 0 {
		t.Fatalf("no publication on %s was acked from the outbox: the failover was not exercised", hot)
	}
	for _, ch := range others {
		var acked []clusterPub
		var during int
		var slowest time.Duration
		for _, p := range pubs {
			if p.ch != ch {
				continue
			}
			switch d := p.acked.Sub(p.sent); {
			case p.err != nil:
				t.Errorf("%s: publish %s failed: %v", ch, p.id, p.err)
			case redis.IsLocalEpoch(p.pos.Epoch) || p.pos.Seq == 0:
				t.Errorf("%s: publish %s acked at %+v, not a real position", ch, p.id, p.pos)
			case d > othersBound:
				t.Errorf("%s: publish %s acked after %v (sent %v after the kill), more than %v", ch, p.id, d.Round(time.Millisecond), p.sent.Sub(killed).Round(time.Millisecond), othersBound)
			default:
				acked = append(acked, p)
			}
			slowest = max(slowest, p.acked.Sub(p.sent))
			if p.sent.After(killed) && p.acked.Before(up) {
				during++
			}
		}
		t.Logf("%s: %d acked (%d sent and acked during the failover), slowest ack %v", ch, len(acked), during, slowest.Round(time.Millisecond))
		sort.Slice(acked, func(i, j int) bool { return acked[i].pos.Seq < acked[j].pos.Seq })
		for i, p := range acked {
			if p.pos.Seq != uint64(i+1) || p.pos.Epoch != acked[0].pos.Epoch {
				t.Fatalf("%s: acked positions are not seqs 1..%d in one epoch: #%d is %+v (first %+v)", ch, len(acked), i+1, p.pos, acked[0].pos)
			}
		}
		for k, rec := range recs {
			got := rec.Publications(ch)
			if len(got) != len(acked) {
				t.Errorf("node %d: %d publications of %s delivered, want the %d acked", k, len(got), ch, len(acked))
			}
			var late time.Duration
			for i, p := range got {
				if i >= len(acked) {
					break
				}
				want := acked[i]
				if p.Seq != want.pos.Seq || p.Epoch != want.pos.Epoch || string(p.Data) != want.id {
					t.Fatalf("node %d: %s delivery #%d is %d %q %q, want the acked %d %q %q", k, ch, i+1, p.Seq, p.Epoch, p.Data, want.pos.Seq, want.pos.Epoch, want.id)
				}
				at := rec.deliveredAt(ch, want.id)
				if d := at.Sub(want.acked); d > othersBound {
					t.Errorf("node %d: %s seq %d delivered %v after its ack (acked %v after the kill), more than %v", k, ch, p.Seq, d.Round(time.Millisecond), want.acked.Sub(killed).Round(time.Millisecond), othersBound)
				}
				late = max(late, at.Sub(want.acked))
			}
			t.Logf("node %d: %s: %d delivered, latest %v after its ack", k, ch, len(got), late.Round(time.Millisecond))
		}
		if during == 0 {
			t.Errorf("%s: no publish sent and acked while the failover went on", ch)
		}
	}
	for k, rec := range recs {
		if err := rec.Err(); err != nil {
			t.Errorf("node %d: %v", k, err)
		}
	}
}
