package nats_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/internal/natsbase"
	"github.com/syncgate/syncgate/brokers/nats"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/testcert"
)

// TestExternalNKey: a server that knows users only by nkey; a node with
// the seed file publishes and receives, one with another seed is refused.
func TestExternalNKey(t *testing.T) {
	dir := t.TempDir()
	var seeds []string
	seedFile := func(name string) (string, string) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := kp.Seed()
		pub, _ := kp.PublicKey()
		seeds = append(seeds, string(seed))
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		return path, pub
	}
	good, pub := seedFile("good.nk")
	other, _ := seedFile("other.nk")
	srv := natstest.RunServer(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })

	b := nats.New(nats.Config{URL: srv.URL(), Auth: nats.ClientAuth{NKeySeedFile: good}})
	rec := brokertest.NewRecorder()
	if err := b.Start(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const ch = "doc.nkey"
	if err := b.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(t.Context(), ch, []byte("signed")); err != nil {
		t.Fatal(err)
	}
	rec.WaitPublications(t, ch, 1, 10*time.Second)

	for name, auth := range map[string]nats.ClientAuth{
		"other seed":   {NKeySeedFile: other},
		"no seed":      {},
		"missing file": {NKeySeedFile: filepath.Join(dir, "missing.nk")},
	} {
		x := nats.New(nats.Config{URL: srv.URL(), Auth: auth})
		err := x.Start(t.Context(), brokertest.NewRecorder())
		if err == nil {
			x.Close()
			t.Fatalf("%s: Start succeeded", name)
		}
		if name != "missing file" && !errors.Is(err, natsbase.ErrAuth) {
			t.Errorf("%s: %v, want ErrAuth", name, err)
		}
		for _, seed := range seeds {
			if strings.Contains(err.Error(), seed) {
				t.Errorf("%s: the error shows a seed: %v", name, err)
			}
		}
	}
}

// TestExternalMutualTLS: a server that requires a user, TLS and a client
// certificate signed by its CA; a node with all three works, a node
// without the client certificate is refused.
func TestExternalMutualTLS(t *testing.T) {
	certs := testcert.Write(t)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certs.Cert, KeyFile: certs.Key, CaFile: certs.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.RunServer(t, natstest.WithoutJetStream(), func(o *server.Options) {
		o.Username, o.Password = "node", "tls-secret-0123456789"
		o.TLSConfig, o.TLSVerify, o.TLSTimeout = tc, true, 5
	})
	url := "tls://" + strings.TrimPrefix(srv.URL(), "nats://")
	auth := nats.ClientAuth{User: "node", Password: "tls-secret-0123456789", CAFile: certs.CA, CertFile: certs.Cert, KeyFile: certs.Key}
	b := nats.New(nats.Config{URL: url, Auth: auth})
	rec := brokertest.NewRecorder()
	if err := b.Start(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const ch = "doc.mtls"
	if err := b.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(t.Context(), ch, []byte("mutual")); err != nil {
		t.Fatal(err)
	}
	rec.WaitPublications(t, ch, 1, 10*time.Second)

	noCert := auth
	noCert.CertFile, noCert.KeyFile = "", ""
	x := nats.New(nats.Config{URL: url, Auth: noCert})
	if err := x.Start(t.Context(), brokertest.NewRecorder()); err == nil {
		x.Close()
		t.Fatal("a node without a client certificate connected")
	}
}
