package jetstream_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
)

// How long delivery may take to resume after a stream leader change, on
// every node, including one that publishes nothing: the time from the end
// of the fault (a new leader is elected) until each node has delivered,
// under its real position, a publication made after that end. Bounds with
// a margin for a loaded 2-core machine, not speed figures (the tests log
// what they measure).
// electedResume includes draining the publishing node's outbox (up to a
// few hundred publications, see TestLeaderKilledResume), which takes a
// second or more under -race on a loaded machine.
const (
	stepdownResume = 2 * time.Second
	electedResume  = 3 * time.Second
)

// TestLeaderStepdownResume: the history stream's leader steps down
// ($JS.API.STREAM.LEADER.STEPDOWN) three times while node a publishes
// (one publish at a time) on a 3-server cluster with R3 file storage;
// node b, on another server, only subscribes. After each stepdown both
// nodes deliver a publication made after it within stepdownResume; at the
// end each acked publication is stored once, in publish order, and
// delivered by both nodes once, in order.
//
// Before the fix, b delivered nothing for 10 s after one stepdown in
// three: a publish that found the stream leaderless (no responders) sent
// a into an outage and asked its flusher for a stream check, whose stream
// info request, sent while the stream had no leader, got no answer; the
// flusher, the only one to flush the outbox, waited 10 s for it. And in
// another stepdown of three, a publish sent as the leader stepped down got
// no ack, and the channel's publishes waited the caller's whole 5 s.
func TestLeaderStepdownResume(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	leakCheckLast(t)
	cl := natstest.RunCluster(t, 3)
	cfg := jetstream.Config{Replicas: 3, Storage: jetstream.FileStorage, HistorySize: 5000}
	a := startNode(t, withURL(cfg, cl.Servers[0].URL()+","+cl.URL()))
	b := startNode(t, withURL(cfg, cl.Servers[1].URL()+","+cl.URL()))
	api := apiConn(t, cl.URL(), nats.Options{})
	const ch = "doc.stepdown"
	nodes := map[string]node{"a": a, "b": b}
	load := startLeaderLoad(t, a, nodes, ch, 5*time.Millisecond)
	for round := range 3 {
		time.Sleep(500 * time.Millisecond)
		old := streamLeader(t, api, 5*time.Second)
		var resp struct {
			Success bool `json:"success"`
		}
		if err := apiRequest(api, "$JS.API.STREAM.LEADER.STEPDOWN.SG_HISTORY", &resp); err != nil || !resp.Success {
			t.Fatalf("stepdown: %v (success %v)", err, resp.Success)
		}
		var now string
		brokertest.Eventually(t, 15*time.Second, "a new stream leader", func() bool {
			now, _ = leaderName(api)
			return now != "" && now != old
		})
		end := time.Now()
		took := load.waitResume(t, end, stepdownResume)
		t.Logf("stepdown %d (%s -> %s): delivery resumed after a %v, b %v", round+1, old, now, took["a"].Round(time.Millisecond), took["b"].Round(time.Millisecond))
	}
	load.finish(t)
}

// TestLeaderKilledResume: the server leading the history stream is killed
// (SIGKILL: no leader handover, the others elect a new one after their
// election timeout, seconds) while node a publishes, and restarted 2 s
// after the new leader is elected; 3-server cluster, R3 file storage, the
// servers in child processes, node b publishing nothing. Both nodes
// deliver a publication made after the election within electedResume of
// it, and again one made after the restart within electedResume of it;
// at the end nothing acked is lost, duplicated or reordered (as in
// TestLeaderStepdownResume). While the stream has no leader, a's
// publications (one every 20 ms: a few hundred) wait in its outbox, which
// drains at one write per round trip after the election; a publication
// made after the election comes after them, so the bound covers draining
// that backlog (logged).
func TestLeaderKilledResume(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	leakCheckLast(t)
	servers := startNATSChildCluster(t, 3)
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.url())
	}
	all := strings.Join(urls, ",")
	cfg := jetstream.Config{Replicas: 3, Storage: jetstream.FileStorage, HistorySize: 5000, Auth: jetstream.ClientAuth{Token: servers[0].token}}
	a := startNode(t, withURL(cfg, urls[0]+","+all))
	b := startNode(t, withURL(cfg, urls[1]+","+all))
	api := apiConn(t, all, nats.Options{Token: servers[0].token})
	const ch = "doc.killed.leader"
	nodes := map[string]node{"a": a, "b": b}
	load := startLeaderLoad(t, a, nodes, ch, 20*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	old := streamLeader(t, api, 10*time.Second)
	i, err := strconv.Atoi(strings.TrimPrefix(old, "C"))
	if err != nil || i < 1 || i > len(servers) {
		t.Fatalf("unknown stream leader %q", old)
	}
	victim := servers[i-1]
	killed := time.Now()
	victim.kill()
	var now string
	brokertest.Eventually(t, 30*time.Second, "a new stream leader", func() bool {
		now, _ = leaderName(api)
		return now != "" && now != old
	})
	elected := time.Now()
	backlog := a.b.OutboxLen()
	took := load.waitResume(t, elected, electedResume)
	t.Logf("leader %s killed; %s elected after %v, a's outbox holding %d; delivery resumed after a %v, b %v", old, now, elected.Sub(killed).Round(time.Millisecond),
		backlog, took["a"].Round(time.Millisecond), took["b"].Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	victim.start()
	restarted := time.Now()
	took = load.waitResume(t, restarted, electedResume)
	t.Logf("%s restarted: delivery went on after a %v, b %v", old, took["a"].Round(time.Millisecond), took["b"].Round(time.Millisecond))
	load.finish(t)
}

// leaderLoad publishes on one node, one publish at a time, pausing between
// them, and watches the deliveries of every node.
type leaderLoad struct {
	nodes map[string]node
	ch    string
	stop  atomic.Bool
	done  chan struct{}

	mu     sync.Mutex
	pubs   []published
	starts []time.Time // when each publish call began
}

func startLeaderLoad(t *testing.T, n node, nodes map[string]node, ch string, pause time.Duration) *leaderLoad {
	t.Helper()
	for _, nd := range nodes {
		if err := nd.b.Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
	}
	l := &leaderLoad{nodes: nodes, ch: ch, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; !l.stop.Load() && i < 4000; i++ {
			data := strconv.Itoa(i)
			start := time.Now()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			pos, err := n.b.Publish(ctx, ch, []byte(data))
			cancel()
			l.mu.Lock()
			l.pubs = append(l.pubs, published{data, pos, err})
			l.starts = append(l.starts, start)
			l.mu.Unlock()
			time.Sleep(pause)
		}
	}()
	t.Cleanup(func() {
		l.stop.Store(true)
		<-l.done
	})
	return l
}

// waitResume waits until every node has delivered, under a real position,
// a publication whose publish began after from, and returns how long after
// from each did; the test fails if one took longer than limit.
func (l *leaderLoad) waitResume(t *testing.T, from time.Time, limit time.Duration) map[string]time.Duration {
	t.Helper()
	took := make(map[string]time.Duration)
	deadline := from.Add(limit + 20*time.Second) // measure beyond the limit, for the message
	for len(took) < len(l.nodes) && time.Now().Before(deadline) {
		for name, n := range l.nodes {
			if _, ok := took[name]; !ok && l.deliveredSince(n, from) {
				took[name] = time.Since(from)
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	for name := range l.nodes {
		d, ok := took[name]
		switch {
		case !ok:
			t.Errorf("node %s: no publication made after the fault delivered within %v", name, time.Since(from).Round(time.Millisecond))
		case d > limit:
			t.Errorf("node %s: delivery resumed %v after the fault, want within %v", name, d.Round(time.Millisecond), limit)
		}
	}
	return took
}

// deliveredSince reports whether n delivered, under a real position, a
// publication whose publish began after from.
func (l *leaderLoad) deliveredSince(n node, from time.Time) bool {
	ps := n.rec.Publications(l.ch)
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(ps) - 1; i >= 0 && i >= len(ps)-50; i-- {
		p := ps[i]
		if brokers.IsProvisional(p.Epoch) {
			continue
		}
		k, err := strconv.Atoi(string(p.Data))
		if err == nil && k < len(l.starts) && l.starts[k].After(from) {
			return true
		}
	}
	return false
}

// finish stops publishing and checks the outcome: nothing refused, every
// acked publication stored once, in publish order, and delivered by every
// node once, in order (checkRestart).
func (l *leaderLoad) finish(t *testing.T) {
	t.Helper()
	l.stop.Store(true)
	<-l.done
	a := l.nodes["a"]
	brokertest.Eventually(t, 30*time.Second, "every outbox flushed", func() bool {
		for _, n := range l.nodes {
			if n.b.OutboxLen() > 0 {
				return false
			}
		}
		return true
	})
	var hist []brokers.Publication
	var pos brokers.Position
	brokertest.Eventually(t, 10*time.Second, "the history readable", func() bool {
		var err error
		hist, pos, err = a.b.Since(t.Context(), l.ch, 0, 5000)
		return err == nil && uint64(len(hist)) == pos.Seq
	})
	brokertest.Eventually(t, 20*time.Second, "every node at the last seq", func() bool {
		for _, n := range l.nodes {
			ps := n.rec.Publications(l.ch)
			if len(ps) == 0 || ps[len(ps)-1].Seq != pos.Seq || ps[len(ps)-1].Epoch != pos.Epoch {
				return false
			}
		}
		return true
	})
	c := checkRestart(t, true, [][]published{l.pubs}, hist, pos, l.nodes, l.ch)
	if c.refused > 0 {
		t.Errorf("%d publishes refused", c.refused)
	}
	// One publisher, one publish at a time: stored in call order.
	last := -1
	for _, p := range hist {
		k, err := strconv.Atoi(string(p.Data))
		if err != nil || k <= last {
			t.Errorf("history: %q stored after %d (reordered)", p.Data, last)
		}
		last = k
	}
	t.Logf("%d acked (%d during outages, from the outbox), %d stored, 0 lost, 0 twice; delivered: a %d, b %d (and under outage positions: a %d, b %d)",
		c.acked, c.ackedInOutage, c.stored, c.delivered["a"], c.delivered["b"], c.outageDeliveries["a"], c.outageDeliveries["b"])
}

// apiConn is a connection of the test's own for JetStream API requests.
func apiConn(t *testing.T, url string, o nats.Options) *nats.Conn {
	t.Helper()
	o.Url, o.Servers = "", strings.Split(url, ",")
	o.AllowReconnect, o.MaxReconnect, o.ReconnectWait = true, -1, 50*time.Millisecond
	o.Timeout = 2 * time.Second
	nc, err := o.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// apiRequest sends a JetStream API request and decodes the answer.
func apiRequest(nc *nats.Conn, subj string, v any) error {
	m, err := nc.Request(subj, nil, time.Second)
	if err != nil {
		return err
	}
	return json.Unmarshal(m.Data, v)
}

// leaderName is the name of the server leading the history stream, ""
// while it has none.
func leaderName(nc *nats.Conn) (string, error) {
	var info struct {
		Cluster *struct {
			Leader string `json:"leader"`
		} `json:"cluster"`
	}
	if err := apiRequest(nc, "$JS.API.STREAM.INFO.SG_HISTORY", &info); err != nil {
		return "", err
	}
	if info.Cluster == nil {
		return "", nil
	}
	return info.Cluster.Leader, nil
}

// streamLeader waits for the history stream to have a leader.
func streamLeader(t *testing.T, nc *nats.Conn, timeout time.Duration) string {
	t.Helper()
	var l string
	brokertest.Eventually(t, timeout, "a stream leader", func() bool {
		l, _ = leaderName(nc)
		return l != ""
	})
	return l
}
