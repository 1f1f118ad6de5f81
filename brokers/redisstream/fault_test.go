package redisstream_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestKillRedisAOFAlways: with appendfsync always, Redis is the durable
// log. Two nodes publish and tail one channel while redis-server is killed
// with SIGKILL and restarted on the same directory; every publication whose
// Publish succeeded must be delivered by every node exactly once, with the
// seq it was acked with, in seq order, in one epoch.
func TestKillRedisAOFAlways(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	cfg := testConfig(srv.Addr())
	cfg.HistorySize = 10000
	const nNodes, perNode, total = 2, 2, 600
	nodes := make([]*redisstream.Broker, nNodes)
	recs := make([]*brokertest.Recorder, nNodes)
	for i := range nodes {
		nodes[i] = redisstream.New(cfg)
		recs[i] = brokertest.NewRecorder()
		if err := nodes[i].Start(t.Context(), recs[i]); err != nil {
			t.Fatal(err)
		}
		defer nodes[i].Close()
	}
	const ch = "fault:kill"
	for _, n := range nodes {
		if err := n.Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
	}

	var (
		mu       sync.Mutex
		ok       = map[string]brokers.Position{} // data -> acked position
		failed   = map[string]bool{}
		attempts atomic.Int64
		wg       sync.WaitGroup
	)
	for ni, n := range nodes {
		for p := range perNode {
			wg.Go(func() {
				for i := 0; i < total/(nNodes*perNode); {
					id := fmt.Sprintf("%d:%d:%d", ni, p, attempts.Add(1))
					pos, err := n.Publish(t.Context(), ch, []byte(id))
					mu.Lock()
					if err != nil {
						failed[id] = true
					} else {
						ok[id] = pos
						i++
					}
					mu.Unlock()
					if err != nil {
						time.Sleep(20 * time.Millisecond)
					} else {
						time.Sleep(2 * time.Millisecond)
					}
				}
			})
		}
	}
	// Kill mid-publishing, once a third has been acked.
	brokertest.Eventually(t, 20*time.Second, "a third acked", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ok) >= total/3
	})
	srv.Kill()
	mu.Lock()
	atKill := len(ok)
	mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	srv.Restart()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	var epoch string
	for _, pos := range ok {
		if epoch == "" {
			epoch = pos.Epoch
		} else if pos.Epoch != epoch {
			t.Errorf("acked positions in two epochs: %q and %q", epoch, pos.Epoch)
		}
	}
	t.Logf("publish attempts %d, acked %d (%d before the kill), failed %d", attempts.Load(), len(ok), atKill, len(failed))
	for ni, rec := range recs {
		var pubs []brokers.Publication
		brokertest.Eventually(t, 20*time.Second, fmt.Sprintf("node %d delivering every acked publication", ni), func() bool {
			pubs = rec.Publications(ch)
			seen := make(map[string]bool, len(pubs))
			for _, p := range pubs {
				seen[string(p.Data)] = true
			}
			for id := range ok {
				if !seen[id] {
					return false
				}
			}
			return true
		})
		count := map[string]int{}
		inOrder := true
		for i, p := range pubs {
			count[string(p.Data)]++
			if p.Seq != uint64(i+1) || p.Epoch != epoch {
				inOrder = false
				t.Errorf("node %d: delivery %d has seq %d epoch %q, want seq %d epoch %q", ni, i, p.Seq, p.Epoch, i+1, epoch)
				break
			}
		}
		lost, twice, wrongSeq, unackedDelivered := 0, 0, 0, 0
		for id, pos := range ok {
			switch count[id] {
			case 0:
				lost++
			case 1:
			default:
				twice++
			}
			if c := count[id]; c > 0 {
				for _, p := range pubs {
					if string(p.Data) == id && p.Seq != pos.Seq {
						wrongSeq++
					}
				}
			}
		}
		for id := range count {
			if _, isAcked := ok[id]; !isAcked {
				unackedDelivered++
			}
		}
		t.Logf("node %d: delivered %d (seqs 1..%d in order: %v), acked lost %d, acked delivered twice %d, acked with another seq %d, unacked but stored and delivered %d",
			ni, len(pubs), len(pubs), inOrder, lost, twice, wrongSeq, unackedDelivered)
		if lost != 0 || twice != 0 || wrongSeq != 0 {
			t.Errorf("node %d: %d acked publications lost, %d delivered twice, %d with another seq", ni, lost, twice, wrongSeq)
		}
	}
}

// TestRestartWithoutPersistence: Redis loses the channel (restarted
// without persistence). The node notices (reconnect, or an entry of a new
// epoch past its cursor), and delivers the new epoch from seq 1, filling
// from XRANGE what its cursor skipped: seqs stay contiguous per epoch.
func TestRestartWithoutPersistence(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b := redisstream.New(testConfig(srv.Addr()))
	rec := brokertest.NewRecorder()
	if err := b.Start(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const ch = "fault:nopersist"
	if err := b.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	publishN := func(n int, prefix string) brokers.Position {
		var pos brokers.Position
		for i := range n {
			var err error
			for range 100 { // retry while the client reconnects
				if pos, err = b.Publish(t.Context(), ch, fmt.Appendf(nil, "%s%d", prefix, i+1)); err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		return pos
	}
	before := publishN(5, "a")
	rec.WaitPublications(t, ch, 5, 5*time.Second)
	srv.Kill()
	srv.Restart()
	after := publishN(8, "b")
	if after.Epoch == before.Epoch || after.Seq != 8 {
		t.Fatalf("after the restart: %+v, want a new epoch at seq 8 (before: %+v)", after, before)
	}
	pubs := rec.WaitPublications(t, ch, 13, 10*time.Second)
	for i, p := range pubs {
		wantSeq, wantEpoch, wantData := uint64(i+1), before.Epoch, fmt.Sprintf("a%d", i+1)
		if i >= 5 {
			wantSeq, wantEpoch, wantData = uint64(i-4), after.Epoch, fmt.Sprintf("b%d", i-4)
		}
		if p.Seq != wantSeq || p.Epoch != wantEpoch || string(p.Data) != wantData {
			t.Errorf("delivery %d: seq %d epoch %q data %q, want %d %q %q", i, p.Seq, p.Epoch, p.Data, wantSeq, wantEpoch, wantData)
		}
	}
	t.Logf("delivered %d: 5 in the first epoch, 8 in the new one", len(pubs))
}
