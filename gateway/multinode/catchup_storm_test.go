package multinode_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/wstest"
)

// storm is a catch-up storm on one node with the default broker
// (JetStream, embedded server): Catchers clients catch up at once on a
// history of History messages of Size bytes, while Bystanders pairs
// publish and subscribe on channels of their own.
type storm struct {
	History, Size, Catchers, Bystanders int
	// NoStorm runs the bystanders alone, for the baseline.
	NoStorm bool
}

type stormResult struct {
	latencies   []time.Duration // bystander publish -> delivery
	bystanderOK int             // bystander messages delivered
	errors      []string        // error/disconnect frames bystanders got
	brokerLog   []string        // the broker's warnings (disconnects, slow consumers)
	catchupTime time.Duration
	peakRSS     int64 // VmHWM of this process, bytes
	metrics     string
}

// warnLog keeps the broker's warnings.
type warnLog struct {
	mu    sync.Mutex
	lines []string
}

func (w *warnLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnLog) Handle(_ context.Context, r slog.Record) error {
	s := r.Message
	r.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	w.mu.Lock()
	w.lines = append(w.lines, s)
	w.mu.Unlock()
	return nil
}
func (w *warnLog) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnLog) WithGroup(string) slog.Handler      { return w }

func (s storm) run(t testing.TB, edit func(*config.Config)) stormResult {
	wl := &warnLog{}
	b := jetstream.New(jetstream.Config{
		Embedded:    jetstream.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir()},
		Storage:     jetstream.MemoryStorage,
		HistorySize: s.History,
		Log:         slog.New(wl),
	})
	n := startNodeTB(t, b, func(c *config.Config) {
		c.History.Size = s.History
		if edit != nil {
			edit(c)
		}
	})
	url := "ws://" + n.addr + "/ws"

	const ch = "doc:storm"
	var epoch string
	if !s.NoStorm {
		w := wstest.Dial(t, url)
		w.Connect("writer")
		pad := strings.Repeat("x", s.Size)
		for i := 1; i <= s.History; i++ {
			epoch = w.MustCall("pub", map[string]any{"ch": ch, "data": map[string]any{"i": i, "pad": pad}}, "ack").Str("epoch")
		}
		w.Close()
	}

	var res stormResult
	var mu sync.Mutex
	stop := make(chan struct{})
	var bywg sync.WaitGroup
	var ready sync.WaitGroup
	for i := range s.Bystanders {
		bch := "by:" + strconv.Itoa(i)
		sub := wstest.Dial(t, url, wstest.NonFatal(), wstest.Named("bystander-sub "+bch))
		pub := wstest.Dial(t, url, wstest.NonFatal(), wstest.Named("bystander-pub "+bch))
		sub.Sub(bch)
		ready.Add(1)
		bywg.Go(func() { // publisher: one message every 20 ms
			ready.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				r := pub.Call("pub", map[string]any{"ch": bch, "data": time.Now().UnixNano()})
				if r == nil {
					return
				}
				if r.Op() != "ack" {
					mu.Lock()
					res.errors = append(res.errors, fmt.Sprint(r))
					mu.Unlock()
				}
			}
		})
		bywg.Go(func() { // subscriber: latency of each delivery
			var last uint64
			for {
				m := sub.TryNext(100*time.Millisecond, nil)
				if m == nil {
					select {
					case <-stop:
						return
					default:
						continue
					}
				}
				now := time.Now().UnixNano()
				mu.Lock()
				switch m.Op() {
				case "msg":
					if last != 0 && m.Num("seq") != last+1 {
						res.errors = append(res.errors, fmt.Sprintf("%s: seq %d after %d", bch, m.Num("seq"), last))
					}
					last = m.Num("seq")
					sent, _ := m["data"].(float64)
					res.latencies = append(res.latencies, time.Duration(now-int64(sent)))
					res.bystanderOK++
				default:
					res.errors = append(res.errors, fmt.Sprint(m))
				}
				mu.Unlock()
			}
		})
	}
	ready.Wait()
	time.Sleep(300 * time.Millisecond) // bystander traffic before the storm

	start := time.Now()
	var cwg sync.WaitGroup
	if !s.NoStorm {
		for i := range s.Catchers {
			cwg.Go(func() { catchUp(t, url, "catcher "+strconv.Itoa(i), ch, epoch, s.History) })
		}
		cwg.Wait()
	} else {
		time.Sleep(2 * time.Second)
	}
	res.catchupTime = time.Since(start)
	time.Sleep(300 * time.Millisecond) // bystander traffic after it
	close(stop)
	bywg.Wait()
	res.peakRSS = peakRSS()
	if resp, err := http.Get("http://" + n.metricsAddr + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res.metrics = string(b)
	}
	wl.mu.Lock()
	res.brokerLog = slices.Clone(wl.lines)
	wl.mu.Unlock()
	return res
}

// catchUp takes a streamed catch-up from seq 0 on its own connection and
// checks it: seqs 1..n, each once, in order, each with its own data (the
// "i" it was published with), then caught_up recovered. It reads the
// frames itself and only scans for those fields, so that the storm's cost
// is the node's, not the test clients' JSON decoding.
func catchUp(t testing.TB, url, name, ch, epoch string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Errorf("%s: dial: %v", name, err)
		return
	}
	defer ws.CloseNow()
	ws.SetReadLimit(16 << 20)
	sub := fmt.Sprintf(`{"op":"sub","id":1,"ch":%q,"since":{"seq":0,"epoch":%q},"stream":true}`, ch, epoch)
	if err := ws.Write(ctx, websocket.MessageText, []byte(sub)); err != nil {
		t.Errorf("%s: %v", name, err)
		return
	}
	next := 1
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Errorf("%s: after %d messages: %v", name, next-1, err)
			return
		}
		for len(data) > 0 {
			line := data
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				line, data = data[:i], data[i+1:]
			} else {
				data = nil
			}
			switch {
			case bytes.HasPrefix(line, []byte(`{"op":"subscribed"`)):
				if !bytes.Contains(line, []byte(`"recovered":true`)) || !bytes.Contains(line, []byte(`"more":true`)) {
					t.Errorf("%s: subscribed %.200s", name, line)
					return
				}
				// The pubs of the first page.
				for _, m := range bytes.Split(line, []byte(`{"op":"msg"`))[1:] {
					if !checkMsg(t, name, m, &next) {
						return
					}
				}
			case bytes.HasPrefix(line, []byte(`{"op":"msg"`)):
				if !checkMsg(t, name, line, &next) {
					return
				}
			case bytes.HasPrefix(line, []byte(`{"op":"caught_up"`)):
				if !bytes.Contains(line, []byte(`"recovered":true`)) || next != n+1 {
					t.Errorf("%s: %s after %d messages", name, line, next-1)
				}
				return
			default:
				t.Errorf("%s: during the catch-up: %.200s", name, line)
				return
			}
		}
	}
}

// checkMsg checks that msg m has seq *next and data "i" *next.
func checkMsg(t testing.TB, name string, m []byte, next *int) bool {
	want := strconv.Itoa(*next)
	if !bytes.Contains(m, []byte(`"seq":`+want+`,`)) || !bytes.Contains(m, []byte(`"data":{"i":`+want+`,`)) {
		t.Errorf("%s: want seq %s, got %.120s", name, want, m)
		return false
	}
	*next++
	return true
}

// peakRSS is this process's peak resident set (VmHWM), 0 if unknown.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// TestCatchUpStorm (issue 11.4, scaled to the suite's budget; the full size
// is BenchmarkCatchUpStorm): many clients catch up at once on a large
// history on one node while others publish and subscribe elsewhere. Every
// catch-up is complete and exact, the node's broker connection never
// drops or falls behind, and the bystanders see no error.
func TestCatchUpStorm(t *testing.T) {
	const catchers = 10
	// The catchers only read (real clients ping while they catch up).
	res := storm{History: 200, Size: 60 << 10, Catchers: catchers, Bystanders: 4}.run(t, func(c *config.Config) { c.Client.PingInterval = 5 * time.Minute })
	if len(res.brokerLog) > 0 {
		t.Errorf("broker warnings during the storm: %q", res.brokerLog)
	}
	if len(res.errors) > 0 {
		t.Errorf("bystanders got: %q", res.errors)
	}
	if res.bystanderOK == 0 {
		t.Errorf("bystanders got nothing")
	}
	for _, want := range []string{
		"syncgate_broker_server_max_pending_bytes 6.7108864e+07",
		"syncgate_broker_pending_messages_limit 131072",
		"syncgate_history_reads_busy_total 0",
		"syncgate_catchup_streams 0",
	} {
		if !strings.Contains(res.metrics, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if !strings.Contains(res.metrics, "syncgate_history_reads_total ") || strings.Contains(res.metrics, "syncgate_history_reads_total 0\n") {
		t.Errorf("no history reads counted")
	}
	t.Logf("storm: %d catch-ups of 200 x 60 KB in %v; bystanders: %d messages, p99 %v; peak RSS of the test process %d MB",
		catchers, res.catchupTime.Round(time.Millisecond), res.bystanderOK, percentile(res.latencies, 0.99).Round(time.Microsecond), res.peakRSS>>20)
}

// BenchmarkCatchUpStorm is issue 11.4's full size: 50 clients catch up at
// once on 1000 x 60 KB of history on one node (JetStream, embedded
// server) while 8 pairs publish and subscribe on other channels; the
// baseline runs the bystanders alone. It reports the bystanders' p99
// publish-to-delivery latency and the peak RSS of the whole process
// (gateway, embedded nats-server, all clients). Run with -benchtime=1x:
//
//	go test -run '^$' -bench CatchUpStorm -benchtime=1x ./gateway/multinode/
func BenchmarkCatchUpStorm(b *testing.B) {
	for _, tc := range []struct {
		name string
		s    storm
	}{
		{"baseline", storm{History: 1000, Size: 60 << 10, Bystanders: 8, NoStorm: true}},
		{"storm", storm{History: 1000, Size: 60 << 10, Catchers: 50, Bystanders: 8}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				res := tc.s.run(b, func(c *config.Config) { c.Client.PingInterval = 5 * time.Minute })
				if len(res.brokerLog) > 0 {
					b.Errorf("broker warnings: %q", res.brokerLog)
				}
				if len(res.errors) > 0 {
					b.Errorf("bystanders got: %q", res.errors)
				}
				b.ReportMetric(float64(percentile(res.latencies, 0.99).Microseconds())/1000, "bystander-p99-ms")
				b.ReportMetric(float64(percentile(res.latencies, 0.5).Microseconds())/1000, "bystander-p50-ms")
				b.ReportMetric(float64(res.peakRSS>>20), "peak-RSS-MB")
				b.ReportMetric(res.catchupTime.Seconds(), "storm-s")
			}
		})
	}
}
