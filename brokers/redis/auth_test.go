package redis_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/redistest"
)

// clientTLS trusts the server's test CA and presents its certificate.
func clientTLS(t *testing.T, srv *redistest.Server) *tls.Config {
	t.Helper()
	f := srv.TLSFiles()
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("no CA certificate")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// TestACLUserOverTLS: a node logs in as an ACL user over TLS (the default
// user is off) and publishes and receives; two nodes share the channel.
func TestACLUserOverTLS(t *testing.T) {
	const user, pass = "syncgate", "acl-secret-0123456789"
	srv := redistest.Start(t, redistest.Options{User: user, Password: pass, TLS: true})
	cfg := testConfig(srv.TLSAddr())
	cfg.Username, cfg.Password = user, pass
	// Built as the gateway builds it from redis.tls.*, with the name the
	// certificate carries.
	f := srv.TLSFiles()
	tc, err := config.RedisTLS{Enabled: true, CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key, ServerName: "localhost"}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS = tc
	a, recA := startAuthNode(t, cfg)
	b, _ := startAuthNode(t, cfg)
	const ch = "doc.tls"
	if err := a.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(t.Context(), ch, []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	recA.WaitPublications(t, ch, 1, waitTimeout)
	// The data really is behind the ACL user: anonymous commands fail.
	if _, err := redistest.Do(srv.Addr(), "KEYS", "*"); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("anonymous KEYS: %v, want NOAUTH", err)
	}
}

// TestBadRedisCredential: a wrong password, no login, a plain-text dial of
// the TLS port, or an untrusted CA stops Start with an error that names
// the cause and shows no secret.
func TestBadRedisCredential(t *testing.T) {
	const user, pass = "syncgate", "acl-secret-0123456789"
	srv := redistest.Start(t, redistest.Options{User: user, Password: pass, TLS: true})
	good := clientTLS(t, srv)
	for _, c := range []struct {
		name string
		edit func(c *redis.Config)
		want string
	}{
		{"wrong password", func(c *redis.Config) { c.Password = "wrong-secret" }, "WRONGPASS"},
		{"no login", func(c *redis.Config) { c.Username, c.Password = "", "" }, "NOAUTH"},
		{"plain text to the TLS port", func(c *redis.Config) { c.TLS = nil }, ""},
		{"untrusted CA", func(c *redis.Config) { c.TLS = &tls.Config{MinVersion: tls.VersionTLS12} }, "certificate"},
		{"wrong server name", func(c *redis.Config) { c.TLS = good.Clone(); c.TLS.ServerName = "redis.example.com" }, "certificate"},
	} {
		cfg := testConfig(srv.TLSAddr())
		cfg.Username, cfg.Password, cfg.TLS = user, pass, good
		c.edit(&cfg)
		start := time.Now()
		b := redis.New(cfg)
		err := b.Start(t.Context(), brokertest.NewRecorder())
		if err == nil {
			b.Close()
			t.Fatalf("%s: Start succeeded", c.name)
		}
		if !errors.Is(err, brokers.ErrUnavailable) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an unavailable error containing %q", c.name, err, c.want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", c.name, err)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("%s: Start took %v to fail", c.name, d)
		}
		b.Close()
	}
}

func startAuthNode(t *testing.T, cfg redis.Config) (*redis.Broker, *brokertest.Recorder) {
	t.Helper()
	b := redis.New(cfg)
	rec := brokertest.NewRecorder()
	if err := b.Start(t.Context(), rec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b, rec
}

// TestSentinelCredentials: the master and replica require an ACL user and
// the sentinels their own password; a node with both finds the master and
// works, a node with the wrong sentinel password does not start.
func TestSentinelCredentials(t *testing.T) {
	const user, pass, spass = "syncgate", "data-secret-0123456789", "sentinel-secret-0123456789"
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 1, Sentinels: 1, User: user, Password: pass, SentinelPassword: spass})
	cfg := testConfig()
	cfg.SentinelMaster, cfg.SentinelAddrs = s.Name, s.Addrs()
	cfg.Username, cfg.Password, cfg.SentinelPassword = user, pass, spass
	a, recA := startAuthNode(t, cfg)
	const ch = "doc.sentinel"
	if err := a.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(t.Context(), ch, []byte("via sentinel")); err != nil {
		t.Fatal(err)
	}
	recA.WaitPublications(t, ch, 1, waitTimeout)

	for name, c := range map[string]struct {
		edit func(c *redis.Config)
		want string
	}{
		"wrong sentinel password": {func(c *redis.Config) { c.SentinelPassword = "wrong-secret" }, "WRONGPASS"},
		"no sentinel password":    {func(c *redis.Config) { c.SentinelPassword = "" }, "NOAUTH"},
		"wrong data password":     {func(c *redis.Config) { c.Password = "wrong-secret" }, "WRONGPASS"},
	} {
		bad := cfg
		c.edit(&bad)
		b := redis.New(bad)
		err := b.Start(t.Context(), brokertest.NewRecorder())
		if err == nil {
			b.Close()
			t.Fatalf("%s: Start succeeded", name)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows a password: %v", name, err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, c.want)
		}
		b.Close()
	}
}

// TestClusterACLUser: every node of a Redis Cluster requires an ACL user;
// the node logs in to each master it finds (the cluster client and the
// per-master clients) and delivers across masters.
func TestClusterACLUser(t *testing.T) {
	const user, pass = "syncgate", "cluster-secret-0123456789"
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, User: user, Password: pass})
	cfg := testConfig(c.Addrs()...)
	cfg.Cluster = true
	cfg.Username, cfg.Password = user, pass
	a, recA := startAuthNode(t, cfg)
	chans := []string{"doc.c1", "doc.c2", "doc.c3", "doc.c4", "doc.c5", "doc.c6"}
	for _, ch := range chans {
		if err := a.Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Publish(t.Context(), ch, []byte(ch)); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range chans {
		recA.WaitPublications(t, ch, 1, waitTimeout)
	}
	bad := cfg
	bad.Password = "wrong-secret"
	b := redis.New(bad)
	err := b.Start(t.Context(), brokertest.NewRecorder())
	if err == nil {
		b.Close()
		t.Fatal("Start with a wrong password succeeded")
	}
	if !strings.Contains(err.Error(), "WRONGPASS") || strings.Contains(err.Error(), "secret") {
		t.Errorf("wrong password: %v, want WRONGPASS and no password", err)
	}
	b.Close()
}

// TestClusterTLS: a Redis Cluster whose nodes speak TLS (client port,
// bus, replication) and require an ACL user; the node dials the seeds'
// TLS ports and reaches every master over TLS.
func TestClusterTLS(t *testing.T) {
	const user, pass = "syncgate", "cluster-secret-0123456789"
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, User: user, Password: pass, TLS: true})
	cfg := testConfig(c.TLSAddrs()...)
	cfg.Cluster = true
	cfg.Username, cfg.Password = user, pass
	cfg.TLS = clientTLS(t, c.Masters[0])
	a, recA := startAuthNode(t, cfg)
	chans := []string{"doc.t1", "doc.t2", "doc.t3", "doc.t4", "doc.t5", "doc.t6"}
	for _, ch := range chans {
		if err := a.Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Publish(t.Context(), ch, []byte(ch)); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range chans {
		recA.WaitPublications(t, ch, 1, waitTimeout)
	}
}

// TestSentinelTLS: master, replica and sentinel speak TLS (and require
// their credentials); the node asks the sentinel over TLS and dials the
// master it names over TLS.
func TestSentinelTLS(t *testing.T) {
	const user, pass, spass = "syncgate", "data-secret-0123456789", "sentinel-secret-0123456789"
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 1, Sentinels: 1, User: user, Password: pass, SentinelPassword: spass, TLS: true})
	cfg := testConfig()
	cfg.SentinelMaster, cfg.SentinelAddrs = s.Name, s.TLSAddrs()
	cfg.Username, cfg.Password, cfg.SentinelPassword = user, pass, spass
	cfg.TLS = clientTLS(t, s.Master)
	a, recA := startAuthNode(t, cfg)
	const ch = "doc.sentinel.tls"
	if err := a.Subscribe(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(t.Context(), ch, []byte("via sentinel over tls")); err != nil {
		t.Fatal(err)
	}
	recA.WaitPublications(t, ch, 1, waitTimeout)
}
