package redis_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
)

// startNodes starts n brokers on cfg with Recorders; Close at cleanup.
func startNodes(t *testing.T, cfg redis.Config, n int) ([]*redis.Broker, []*brokertest.Recorder) {
	t.Helper()
	var bs []*redis.Broker
	var recs []*brokertest.Recorder
	for range n {
		b := redis.New(cfg)
		rec := brokertest.NewRecorder()
		if err := b.Start(t.Context(), rec); err != nil {
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			rec.MarkClosed()
			if err := rec.Err(); err != nil {
				t.Error(err)
			}
		})
		bs = append(bs, b)
		recs = append(recs, rec)
	}
	return bs, recs
}

// checkSpread publishes on doc:1..doc:30 through node a, subscribed on node
// b, and checks that the channels use every server, that each channel's
// keys are on the server ShardOf names and no other, and that node b got
// every publication.
func checkSpread(t *testing.T, servers []*redistest.Server, cfg redis.Config) {
	bs, recs := startNodes(t, cfg, 2)
	a, b := bs[0], bs[1]
	perShard := make([]int, len(servers))
	const channels = 30
	for i := 1; i <= channels; i++ {
		ch := fmt.Sprintf("doc:%d", i)
		if err := b.Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Publish(t.Context(), ch, []byte("x")); err != nil {
			t.Fatal(err)
		}
		idx := a.ShardOf(ch)
		if idx != b.ShardOf(ch) {
			t.Fatalf("%s: node a says shard %d, node b says %d", ch, idx, b.ShardOf(ch))
		}
		perShard[idx]++
		for k, srv := range servers {
			n, err := srv.Do("EXISTS", "sg{"+ch+"}:m")
			if err != nil && strings.HasPrefix(err.Error(), "MOVED") {
				n = "0" // a cluster node that does not own the slot
			} else if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]string{true: "1", false: "0"}[k == idx]; n != want {
				t.Errorf("%s (shard %d): meta key on server %d: EXISTS %s, want %s", ch, idx, k, n, want)
			}
		}
	}
	for k, n := range perShard {
		if n == 0 {
			t.Errorf("no channel on shard %d of %d: %v", k, len(servers), perShard)
		}
	}
	t.Logf("channels per shard: %v", perShard)
	for i := 1; i <= channels; i++ {
		recs[1].WaitPublications(t, fmt.Sprintf("doc:%d", i), 1, waitTimeout)
	}
}

const waitTimeout = 10 * time.Second

func TestShardsSpread(t *testing.T) {
	var servers []*redistest.Server
	var addrs []string
	for range 3 {
		s := redistest.Start(t, redistest.Options{})
		servers = append(servers, s)
		addrs = append(addrs, s.Addr())
	}
	checkSpread(t, servers, testConfig(addrs...))
}

func TestClusterSpread(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	cfg := testConfig(c.Addrs()...)
	cfg.Cluster = true
	checkSpread(t, c.Masters, cfg)
}
