package redisstream_test

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/internal/redistest"
)

func TestMain(m *testing.M) {
	redistest.QuietGoRedis()
	goleak.VerifyTestMain(m)
}

// suiteHistorySize is above the suite's 1600 concurrent publications on one
// channel: the stream is also the transport, and a tailer that falls more
// than HistorySize entries behind (a loaded test machine) skips what was
// trimmed. Kept exact, as the suite checks.
const suiteHistorySize = 2000

var suiteFeatures = brokertest.Features{
	History:      true,
	HistorySize:  suiteHistorySize,
	Epoch:        true,
	Presence:     true,
	Pinger:       true,
	ExpiryWithin: 100 * time.Millisecond, // docs/brokers.md: leave within the TTL plus 100 ms
}

// testConfig is a Config with short timeouts for tests.
func testConfig(addrs ...string) redisstream.Config {
	return redisstream.Config{
		Addrs:            addrs,
		HistorySize:      suiteHistorySize,
		Block:            time.Second,
		ValidateInterval: time.Second,
		DialTimeout:      500 * time.Millisecond,
		ReadTimeout:      time.Second,
		ReconnectMin:     20 * time.Millisecond,
		ReconnectMax:     200 * time.Millisecond,
		Logger:           redistest.Logger(),
	}
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := testConfig(srv.Addr())
	brokertest.Nodes(suiteFeatures, func() brokers.Broker { return redisstream.New(cfg) }).Run(t)
}

// TestConformanceSharded runs the suite on two independent Redis servers,
// channels spread by consistent hashing.
func TestConformanceSharded(t *testing.T) {
	var addrs []string
	for range 2 {
		addrs = append(addrs, redistest.Start(t, redistest.Options{}).Addr())
	}
	cfg := testConfig(addrs...)
	brokertest.Nodes(suiteFeatures, func() brokers.Broker { return redisstream.New(cfg) }).Run(t)
}

// TestStartWithoutRedis: Start fails with ErrUnavailable when Redis cannot
// be reached, leaves nothing running, and can be retried.
func TestStartWithoutRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	srv.Kill()
	brokertest.StartWhileDown(t, redisstream.New(testConfig(srv.Addr())), srv.Restart, 5*time.Second)
}

// TestConfigValidate: bad configurations name the field.
func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  redisstream.Config
		want string
	}{
		{redisstream.Config{Prefix: "a{b"}, "Prefix"},
		{redisstream.Config{DB: -1}, "DB"},
		{redisstream.Config{Addrs: []string{""}}, "Addrs"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", c.cfg, err, c.want)
		}
		if err := redisstream.New(c.cfg).Start(t.Context(), brokertest.NewRecorder()); err == nil {
			t.Errorf("Start with %+v succeeded", c.cfg)
		}
	}
	if err := (redisstream.Config{}).Validate(); err != nil {
		t.Errorf("the zero Config: %v", err)
	}
}

// TestSubscribeInterruptsBlockedRead: with a blocking read far longer than
// the test, a channel subscribed while the tailer is blocked is delivered
// at once (CLIENT UNBLOCK re-issues the read), and Close does not wait for
// the read to time out.
func TestSubscribeInterruptsBlockedRead(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := testConfig(srv.Addr())
	cfg.Block = time.Minute
	cfg.ValidateInterval = time.Minute
	b := redisstream.New(cfg)
	rec := brokertest.NewRecorder()
	if err := b.Start(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	for i, ch := range []string{"unblock:a", "unblock:b", "unblock:c"} {
		if err := b.Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			time.Sleep(100 * time.Millisecond) // let the tailer block on the earlier set
		}
		start := time.Now()
		if _, err := b.Publish(t.Context(), ch, []byte("x")); err != nil {
			t.Fatal(err)
		}
		rec.WaitPublications(t, ch, 1, 5*time.Second)
		t.Logf("%s delivered %v after publish", ch, time.Since(start))
	}
	if err := b.Unsubscribe(t.Context(), "unblock:a"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with a blocked read", d)
	}
}
