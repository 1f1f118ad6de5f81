package jetstream_test

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/testcert"
)

// TestEmbedded: with no URL the broker runs its own server; a second node
// connects to that server's client port; Close shuts the server down (no
// goroutine left); the history survives a restart on the same store dir.
func TestEmbedded(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	dir := t.TempDir()
	// A second node needs the credential: set one (a random one is made
	// only for the node's own connection).
	const token = "test-token-embedded-0123456789"
	embedded := jetstream.Config{Embedded: jetstream.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: dir, Token: token}}
	a := jetstream.New(embedded)
	recA := brokertest.NewRecorder()
	if err := a.Start(t.Context(), recA); err != nil {
		t.Fatal(err)
	}
	if a.ClientURL() == "" {
		t.Fatal("no client URL for the embedded server")
	}
	b := jetstream.New(jetstream.Config{URL: a.ClientURL(), Auth: jetstream.ClientAuth{Token: token}})
	recB := brokertest.NewRecorder()
	if err := b.Start(t.Context(), recB); err != nil {
		t.Fatal(err)
	}
	const ch = "doc.embedded"
	if err := a.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := b.Publish(t.Context(), ch, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	got := recA.WaitPublications(t, ch, 3, 5*time.Second)
	epoch := got[0].Epoch
	for _, x := range []*jetstream.Broker{b, a} {
		if err := x.Close(); err != nil {
			t.Fatal(err)
		}
	}
	goleak.VerifyNone(t, ignore)

	// The same store dir: the history and its epoch are back.
	a = jetstream.New(embedded)
	if err := a.Start(t.Context(), brokertest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	pubs, pos, err := a.Since(t.Context(), ch, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 3 || pos != (brokers.Position{Seq: 3, Epoch: epoch}) {
		t.Fatalf("after a restart: %d publications at %+v, want 3 at seq 3 epoch %q", len(pubs), pos, epoch)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, ignore)
}

// TestEmbeddedCluster: three nodes, each with an embedded server, routed
// to each other (cluster_listen + routes) with a user and password and
// TLS on the route and client ports: publications cross nodes.
func TestEmbeddedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	ignore := goleak.IgnoreCurrent()
	const n = 3
	var routes []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, ln.Addr().String())
		ln.Close()
	}
	certs := testcert.Write(t)
	nodes := make([]*jetstream.Broker, n)
	recs := make([]*brokertest.Recorder, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		nodes[i] = jetstream.New(jetstream.Config{Replicas: 3, Embedded: jetstream.EmbeddedConfig{
			Listen: "127.0.0.1:0", StoreDir: t.TempDir(), ClusterListen: routes[i], Routes: routes,
			User: "node", Password: "route-secret-0123456789",
			TLSCertFile: certs.Cert, TLSKeyFile: certs.Key, TLSCAFile: certs.CA,
		}})
		recs[i] = brokertest.NewRecorder()
		wg.Go(func() { errs[i] = nodes[i].Start(t.Context(), recs[i]) })
	}
	wg.Wait()
	defer func() {
		for _, b := range nodes {
			b.Close()
		}
		goleak.VerifyNone(t, ignore)
	}()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	const ch = "doc.embedded.cluster"
	for _, b := range nodes {
		if err := b.Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range nodes {
		if _, err := b.Publish(t.Context(), ch, fmt.Appendf(nil, "from %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, rec := range recs {
		got := rec.WaitPublications(t, ch, n, 10*time.Second)
		for k, p := range got {
			if p.Seq != uint64(k+1) {
				t.Errorf("node %d: publication %d has seq %d", i, k, p.Seq)
			}
		}
	}
}

// TestConcurrentSubscribe: concurrent Subscribes of one channel all return
// once the node is subscribed; the channel is delivered once.
func TestConcurrentSubscribe(t *testing.T) {
	srv := natstest.RunServer(t)
	n := startNode(t, jetstream.Config{URL: srv.URL()})
	const ch = "doc.concurrent"
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- n.b.Subscribe(t.Context(), ch) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.b.Publish(t.Context(), ch, []byte("x")); err != nil {
		t.Fatal(err)
	}
	n.rec.WaitPublications(t, ch, 1, 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	if got := n.rec.Publications(ch); len(got) != 1 {
		t.Fatalf("%d deliveries, want 1", len(got))
	}
}
