package redis_test

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
)

func TestMain(m *testing.M) {
	redistest.QuietGoRedis()
	goleak.VerifyTestMain(m)
}

const suiteHistorySize = 100

var suiteFeatures = brokertest.Features{
	Snapshots:    true,
	History:      true,
	HistorySize:  suiteHistorySize,
	Epoch:        true,
	Presence:     true,
	Pinger:       true,
	ExpiryWithin: 250 * time.Millisecond, // docs/brokers.md: leave within the TTL plus 250 ms
}

// testConfig is a Config with short timeouts for tests.
func testConfig(addrs ...string) redis.Config {
	return redis.Config{
		Addrs:         addrs,
		HistorySize:   suiteHistorySize,
		DialTimeout:   500 * time.Millisecond,
		ReadTimeout:   time.Second,
		ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout:  500 * time.Millisecond,
		ReconnectMin:  20 * time.Millisecond,
		ReconnectMax:  200 * time.Millisecond,
		Logger:        redistest.Logger(),
	}
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := testConfig(srv.Addr())
	brokertest.Nodes(suiteFeatures, func() brokers.Broker { return redis.New(cfg) }).Run(t)
}

// TestConformanceSharded runs the suite on three independent Redis
// servers, channels spread by consistent hashing.
func TestConformanceSharded(t *testing.T) {
	var addrs []string
	for range 3 {
		addrs = append(addrs, redistest.Start(t, redistest.Options{}).Addr())
	}
	cfg := testConfig(addrs...)
	brokertest.Nodes(suiteFeatures, func() brokers.Broker { return redis.New(cfg) }).Run(t)
}

// TestConformanceCluster runs the suite on a Redis Cluster of three
// masters: hash-tagged keys, sharded pub/sub.
func TestConformanceCluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	cfg := testConfig(c.Addrs()...)
	cfg.Cluster = true
	s := brokertest.Nodes(suiteFeatures, func() brokers.Broker { return redis.New(cfg) })
	s.LeakOptions = clusterLeaks
	s.Run(t)
}

// clusterLeaks: go-redis's cluster client reloads its slot map in a
// goroutine that sleeps a 200ms cooldown; it may outlive Close briefly.
var clusterLeaks = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9.(*clusterStateHolder).LazyReload.func1"),
}

// TestStartWithoutRedis: Start fails (ErrUnavailable) when Redis cannot be
// reached, leaves nothing running, and can be retried once Redis is up.
func TestStartWithoutRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	srv.Kill()
	brokertest.StartWhileDown(t, redis.New(testConfig(srv.Addr())), srv.Restart, waitTimeout)
}

// TestConfigValidate: bad configurations name the field.
func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  redis.Config
		want string
	}{
		{redis.Config{Prefix: "a{b"}, "Prefix"},
		{redis.Config{SentinelMaster: "m"}, "SentinelAddrs"},
		{redis.Config{Cluster: true, DB: 2}, "DB"},
		{redis.Config{WaitReplicas: -1}, "WaitReplicas"},
		{redis.Config{SentinelMaster: "m", SentinelAddrs: []string{"x:1"}, Cluster: true}, "exclusive"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", c.cfg, err, c.want)
		}
		if err := redis.New(c.cfg).Start(t.Context(), brokertest.NewRecorder()); err == nil {
			t.Errorf("Start with %+v succeeded", c.cfg)
		}
	}
	if err := (redis.Config{}).Validate(); err != nil {
		t.Errorf("the zero Config: %v", err)
	}
}
