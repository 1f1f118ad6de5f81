package multinode_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/client/api"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/gateway/serverapi"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/wstest"
)

const (
	apiKey        = "api-key-0123456789abcdef"
	clusterSecret = "cluster-secret-0123456789abcdef-0123"
	jwtSecret     = "jwt-secret-0123456789abcdef-01234567"
)

// apiNode is the config of a node of the server API tests: auth on (so
// revoke has tokens to refuse) and the control channel signed.
func apiNode(broker string) func(*config.Config) {
	return func(c *config.Config) {
		c.Broker.Type = broker
		c.Auth.HMACSecret = jwtSecret
		c.API.ClusterSecret = clusterSecret
	}
}

// startAPI serves n's server API on a loopback port; it is shut down when
// the test ends, before the node.
func startAPI(t *testing.T, n *node) *api.Client {
	t.Helper()
	s, err := serverapi.New(serverapi.Config{Keys: []string{"old-key-0123456789abcdef", apiKey}}, n.srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		_ = s.Shutdown(context.Background())
		if err := <-done; !errors.Is(err, serverapi.ErrServerClosed) {
			t.Errorf("api serve returned %v", err)
		}
	})
	return api.New("http://"+ln.Addr().String(), apiKey, api.Options{})
}

// userToken is a token for user issued at iat, allowed every channel.
func userToken(t *testing.T, user string, iat time.Time) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "iat": iat.Unix(), "exp": time.Now().Add(time.Hour).Unix(),
		"channels": map[string]any{"sub": []string{"*"}, "pub": []string{"*"}},
	}).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// connectAs dials n and connects with a token for user issued at iat.
func connectAs(t *testing.T, n *node, user string, iat time.Time) *wstest.Client {
	t.Helper()
	c := dial(t, n, user)
	c.MustCall("connect", map[string]any{"token": userToken(t, user, iat)}, "connected")
	return c
}

func TestServerAPIRedis(t *testing.T) {
	redistest.QuietGoRedis()
	srv := redistest.Start(t, redistest.Options{})
	nb := func() brokers.Broker {
		return redis.New(redis.Config{Addrs: []string{srv.Addr()}, Logger: redistest.Logger(), HistorySize: 100, HistoryTTL: time.Minute})
	}
	serverAPICluster(t, nb, "redis")
}

func TestServerAPIJetStream(t *testing.T) {
	ns := natstest.RunServer(t)
	nb := func() brokers.Broker { return jetstream.New(jetstream.Config{URL: ns.URL()}) }
	serverAPICluster(t, nb, "jetstream")
}

// serverAPICluster runs every method of the server API on node 1 and
// checks what clients on node 2 see; then an attacker with write access to
// the broker forges control messages, which change nothing.
func serverAPICluster(t *testing.T, newBroker func() brokers.Broker, kind string) {
	n1, n2 := startNode(t, newBroker(), apiNode(kind)), startNode(t, newBroker(), apiNode(kind))
	c := startAPI(t, n1)
	ctx := t.Context()
	old := time.Now().Add(-time.Minute)

	ann := connectAs(t, n2, "ann", old) // node 2
	ann.Sub("doc:1")
	bob := connectAs(t, n1, "bob", old) // node 1
	bob.Sub("doc:1")

	// publish: compact re-encoded, "from" as given, on both nodes.
	res, err := c.Publish(ctx, "doc:1", []byte(`{ "text" : "hi" }`), "backend")
	if err != nil {
		t.Fatal(err)
	}
	if res.Seq != 1 || res.Epoch == "" {
		t.Fatalf("publish = %+v, want seq 1 and an epoch", res)
	}
	for _, cl := range []*wstest.Client{ann, bob} {
		m := cl.NextOp("msg")
		if m.Str("from") != "backend" || m.Num("seq") != 1 || m.Str("epoch") != res.Epoch {
			t.Fatalf("%s got %v", cl.Name(), m)
		}
	}

	// history: the msg objects clients get.
	h, err := c.History(ctx, "doc:1", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Pubs) != 1 || h.Seq != 1 || h.Epoch != res.Epoch || string(h.Pubs[0].Data) != `{"text":"hi"}` || h.Pubs[0].From != "backend" {
		t.Fatalf("history = %+v", h)
	}

	// presence: both nodes' clients.
	waitFor(t, wait, "presence lists ann and bob", func() bool {
		ms, err := c.Presence(ctx, "doc:1")
		return err == nil && len(ms) == 2
	})

	// broadcast: a position per channel.
	rs, err := c.Broadcast(ctx, []string{"doc:1", "doc:2"}, map[string]int{"n": 2}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Ch != "doc:1" || rs[0].Seq != 2 || rs[1].Ch != "doc:2" || rs[1].Seq != 1 || rs[0].Error != nil {
		t.Fatalf("broadcast = %+v", rs)
	}
	if m := ann.NextOp("msg"); m.Num("seq") != 2 {
		t.Fatalf("ann got %v after broadcast", m)
	}

	// channels and info: node 2's view arrives in its summary.
	waitFor(t, wait, "channels sums both nodes", func() bool {
		chs, err := c.Channels(ctx, "doc:*")
		return err == nil && len(chs) == 1 && chs[0].Ch == "doc:1" && chs[0].Subscribers == 2
	})
	nodes, err := c.Info(ctx)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("info = %+v, %v; want 2 nodes", nodes, err)
	}
	for _, nd := range nodes {
		if nd.Connections != 1 || nd.Version == "" {
			t.Errorf("info node %+v: want 1 connection and a version", nd)
		}
	}

	// An attacker who can write to the broker publishes control messages:
	// unsigned, signed with another secret, oversized. Nobody is touched.
	attacker, rec := newBroker(), brokertest.NewRecorder()
	if err := attacker.Start(ctx, rec); err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	if err := attacker.Subscribe(ctx, gateway.ControlChannel); err != nil { // to capture and replay
		t.Fatal(err)
	}
	body := `{"op":"disconnect","node":"evil","ts":` + strconv.FormatInt(time.Now().UnixMilli(), 10) + `,"nonce":"n1","user":"ann"}`
	forged := [][]byte{
		[]byte(body),
		[]byte(strings.Repeat("0", 64) + body),
		[]byte(strings.Repeat("a", 600<<10)),
	}
	for _, p := range forged {
		if _, err := attacker.Publish(ctx, gateway.ControlChannel, p); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, wait, "node 2 drops the forged messages", func() bool {
		return metricValue(t, n2, `syncgate_control_rejected_total{reason="signature"}`) >= 2 &&
			metricValue(t, n2, `syncgate_control_rejected_total{reason="size"}`) >= 1
	})
	ann.MustCall("ping", nil, "pong")

	// unsubscribe on node 1 ends ann's subscription on node 2.
	ar, err := c.Unsubscribe(ctx, "ann", "doc:1")
	if err != nil || !ar.Cluster || ar.Local != 0 {
		t.Fatalf("unsubscribe = %+v, %v", ar, err)
	}
	if m := ann.NextOp("unsubscribed"); m.Str("ch") != "doc:1" || m["id"] != nil {
		t.Fatalf("ann got %v", m)
	}
	waitFor(t, wait, "ann leaves presence", func() bool {
		ms, err := c.Presence(ctx, "doc:1")
		return err == nil && len(ms) == 1 && ms[0].User == "bob"
	})
	if _, err := c.Publish(ctx, "doc:1", []byte(`3`), ""); err != nil {
		t.Fatal(err)
	}
	bob.Msgs("doc:1", 2, wait) // seq 2 (broadcast) and 3
	ann.None(200*time.Millisecond, func(m wstest.Msg) bool { return m.Op() == "msg" })

	// revoke on node 1: ann's old token stops working on node 2.
	ar, err = c.Revoke(ctx, "ann", time.Now())
	if err != nil || !ar.Cluster {
		t.Fatalf("revoke = %+v, %v", ar, err)
	}
	if m := ann.NextOp("disconnect"); m.Str("code") != "token_revoked" || m["reconnect"] != true {
		t.Fatalf("ann got %v, want disconnect token_revoked", m)
	}
	again := dial(t, n2, "ann-again")
	if r := again.Call("connect", map[string]any{"token": userToken(t, "ann", old)}); r.Op() != "error" || r.Str("code") != "unauthorized" || !strings.Contains(r.Str("message"), "revoked") {
		t.Fatalf("connect with a revoked token = %v", r)
	}
	connectAs(t, n2, "ann", time.Now().Add(time.Second)) // a new token works

	// disconnect on node 1 closes carl's connection on node 2.
	carl := connectAs(t, n2, "carl", old)
	ar, err = c.Disconnect(ctx, "carl", false)
	if err != nil || !ar.Cluster {
		t.Fatalf("disconnect = %+v, %v", ar, err)
	}
	if m := carl.NextOp("disconnect"); m.Str("code") != "disconnected" || m["reconnect"] != false {
		t.Fatalf("carl got %v", m)
	}
	bob.MustCall("ping", nil, "pong")

	// The attacker captured that signed disconnect and replays it: carl's
	// new connection stays.
	var captured []byte
	waitFor(t, wait, "the attacker sees the signed disconnect", func() bool {
		for _, p := range rec.Publications(gateway.ControlChannel) {
			if strings.Contains(string(p.Data), `"op":"disconnect"`) && strings.Contains(string(p.Data), `"carl"`) {
				captured = p.Data
				return true
			}
		}
		return false
	})
	carl2 := connectAs(t, n2, "carl", time.Now())
	if _, err := attacker.Publish(ctx, gateway.ControlChannel, captured); err != nil {
		t.Fatal(err)
	}
	waitFor(t, wait, "node 2 drops the replay", func() bool {
		return metricValue(t, n2, `syncgate_control_rejected_total{reason="replay"}`) >= 1
	})
	carl2.MustCall("ping", nil, "pong")

	// A node started after the revoke learns it from the others (hello,
	// revocations) and refuses ann's old token too.
	n3 := startNode(t, newBroker(), apiNode(kind))
	waitFor(t, wait, "node 3 refuses the revoked token", func() bool {
		c3 := dial(t, n3, "ann-on-3")
		defer c3.Close()
		r := c3.Call("connect", map[string]any{"token": userToken(t, "ann", old)})
		return r.Op() == "error" && strings.Contains(r.Str("message"), "revoked")
	})
	connectAs(t, n3, "ann", time.Now().Add(time.Second))
}

// metricValue reads one series from n's /metrics (0 when absent).
func metricValue(t *testing.T, n *node, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if name, val, ok := strings.Cut(line, " "); ok && name == series {
			f, _ := strconv.ParseFloat(val, 64)
			return f
		}
	}
	return 0
}

// waitFor polls f until it is true or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
