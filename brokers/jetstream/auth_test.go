package jetstream_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/internal/natsbase"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natsname"
	"github.com/syncgate/syncgate/internal/natsserver"
	"github.com/syncgate/syncgate/internal/testcert"
)

// TestEmbeddedRefusesAnonymous is the attack of issue 11 part 2: a local
// process dials the embedded server's client port with no credential (or
// a guessed one) to read every channel and store a forged message in a
// channel's history. The server must refuse it, and nothing forged may
// reach the node. The node itself was given no credential: it made one.
func TestEmbeddedRefusesAnonymous(t *testing.T) {
	n := startNode(t, jetstream.Config{Embedded: jetstream.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}})
	const ch = "doc.secret"
	if err := n.b.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	url := n.b.ClientURL()
	if url == "" {
		t.Fatal("no client URL for the embedded server")
	}
	for _, cred := range []nats.Option{func(*nats.Options) error { return nil }, nats.Token("guess"), nats.UserInfo("syncgate", "syncgate")} {
		nc, err := nats.Connect(url, cred, nats.Timeout(5*time.Second), nats.NoReconnect())
		if err == nil {
			// The attack as it worked: snoop on everything, then forge.
			sub, serr := nc.SubscribeSync(">")
			perr := nc.Publish("sg.h."+natsname.Token(ch), []byte(`{"from":"alice","data":"forged"}`))
			_ = nc.Flush()
			nc.Close()
			t.Fatalf("a client without the node's credential connected to the embedded server (subscribed to everything: %v, forged publish error: %v)", serr == nil && sub != nil, perr)
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connect without the credential: %v, want an authorization error", err)
		}
	}
	// The node itself works with its generated credential.
	if _, err := n.b.Publish(t.Context(), ch, []byte("real")); err != nil {
		t.Fatal(err)
	}
	got := n.rec.WaitPublications(t, ch, 1, 10*time.Second)
	if len(got) != 1 || string(got[0].Data) != "real" {
		t.Fatalf("the node received %+v, want only its own publication", got)
	}
}

// TestEmbeddedExposedNeedsCredential: an embedded server reachable from
// other hosts (a non-loopback listen address, or a cluster) is not started
// without a configured credential.
func TestEmbeddedExposedNeedsCredential(t *testing.T) {
	for name, emb := range map[string]jetstream.EmbeddedConfig{
		"all interfaces": {Listen: ":0", StoreDir: t.TempDir()},
		"0.0.0.0":        {Listen: "0.0.0.0:0", StoreDir: t.TempDir()},
		"cluster":        {Listen: "127.0.0.1:0", StoreDir: t.TempDir(), ClusterListen: "127.0.0.1:0", Routes: []string{"127.0.0.1:1"}},
	} {
		b := jetstream.New(jetstream.Config{Embedded: emb})
		err := b.Start(t.Context(), brokertest.NewRecorder())
		if err == nil {
			b.Close()
			t.Fatalf("%s: started an exposed embedded server with no credential", name)
		}
		if !errors.Is(err, natsserver.ErrNoCredential) {
			t.Fatalf("%s: %v, want ErrNoCredential", name, err)
		}
	}
}

// TestWrongCredential: a node whose credential the server refuses fails
// Start quickly with ErrAuth, and the error shows no secret.
func TestWrongCredential(t *testing.T) {
	const token = "right-token-0123456789abcdef"
	a := startNode(t, jetstream.Config{Embedded: jetstream.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Token: token}})
	host := strings.TrimPrefix(a.b.ClientURL(), "nats://")
	for name, c := range map[string]jetstream.Config{
		"no credential":     {URL: a.b.ClientURL()},
		"wrong token":       {URL: a.b.ClientURL(), Auth: jetstream.ClientAuth{Token: "wrong-token-secret"}},
		"password in URL":   {URL: "nats://someone:wrong-url-secret@" + host},
		"user and password": {URL: a.b.ClientURL(), Auth: jetstream.ClientAuth{User: "u", Password: "wrong-pw-secret"}},
	} {
		start := time.Now()
		b := jetstream.New(c)
		err := b.Start(t.Context(), brokertest.NewRecorder())
		if err == nil {
			b.Close()
			t.Fatalf("%s: started with a wrong credential", name)
		}
		if !errors.Is(err, natsbase.ErrAuth) {
			t.Errorf("%s: %v, want ErrAuth", name, err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the credential: %v", name, err)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("%s: Start took %v to fail", name, d)
		}
	}
}

// TestEmbeddedTLS: the embedded server's client port speaks TLS with a
// test CA; a node that trusts the CA and has the token connects to it, a
// node that does not trust it is refused.
func TestEmbeddedTLS(t *testing.T) {
	certs := testcert.Write(t)
	const token = "tls-token-0123456789abcdef"
	a := startNode(t, jetstream.Config{Embedded: jetstream.EmbeddedConfig{
		Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Token: token,
		TLSCertFile: certs.Cert, TLSKeyFile: certs.Key,
	}})
	url := a.b.ClientURL()
	if !strings.HasPrefix(url, "tls://") {
		t.Fatalf("client URL %q, want tls://", url)
	}
	const ch = "doc.tls"
	if err := a.b.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	b := startNode(t, jetstream.Config{URL: url, Auth: jetstream.ClientAuth{Token: token, CAFile: certs.CA}})
	if _, err := b.b.Publish(t.Context(), ch, []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	a.rec.WaitPublications(t, ch, 1, 10*time.Second)

	// Without the CA the server's certificate is not trusted.
	c := jetstream.New(jetstream.Config{URL: url, Auth: jetstream.ClientAuth{Token: token}})
	if err := c.Start(t.Context(), brokertest.NewRecorder()); err == nil {
		c.Close()
		t.Fatal("a node that does not trust the server's CA connected")
	}
	// A nats:// URL does not downgrade the port to plain text.
	nc, err := nats.Connect("nats://"+strings.TrimPrefix(url, "tls://"), nats.Token(token), nats.Timeout(5*time.Second), nats.NoReconnect())
	if err == nil {
		nc.Close()
		t.Fatal("a nats:// client without the CA connected to the TLS port")
	}
}
