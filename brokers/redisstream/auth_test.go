package redisstream_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestACLUserOverTLS: the streams backend logs in as an ACL user over TLS
// (tailer and command connections both); a wrong password or an untrusted
// server stops Start with an error that shows no secret.
func TestACLUserOverTLS(t *testing.T) {
	const user, pass = "syncgate", "acl-secret-0123456789"
	srv := redistest.Start(t, redistest.Options{User: user, Password: pass, TLS: true})
	ca, err := os.ReadFile(srv.TLSFiles().CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cfg := testConfig(srv.TLSAddr())
	cfg.Username, cfg.Password = user, pass
	cfg.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	b := redisstream.New(cfg)
	rec := brokertest.NewRecorder()
	if err := b.Start(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const ch = "doc.tls"
	if err := b.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(t.Context(), ch, []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	rec.WaitPublications(t, ch, 1, 10*time.Second)

	for name, c := range map[string]struct {
		edit func(c *redisstream.Config)
		want string
	}{
		"wrong password": {func(c *redisstream.Config) { c.Password = "wrong-secret" }, "WRONGPASS"},
		"untrusted CA":   {func(c *redisstream.Config) { c.TLS = &tls.Config{MinVersion: tls.VersionTLS12} }, "certificate"},
	} {
		bad := cfg
		c.edit(&bad)
		x := redisstream.New(bad)
		err := x.Start(t.Context(), brokertest.NewRecorder())
		if err == nil {
			x.Close()
			t.Fatalf("%s: Start succeeded", name)
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: %v, want %q and no password", name, err, c.want)
		}
		x.Close()
	}
}
