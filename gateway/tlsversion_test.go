package gateway_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"

	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/testcert"
)

// TestTLSMinVersion proves the "TLS 1.2+" of docs/security.md's
// Transport section: a node serving wss:// refuses a TLS 1.0 or 1.1
// handshake and completes TLS 1.2 and 1.3 ones.
func TestTLSMinVersion(t *testing.T) {
	f := testcert.Write(t)
	ts := startServer(t, "epoll", func(c *config.Config) {
		c.Server.TLS.CertFile, c.Server.TLS.KeyFile = f.Cert, f.Key
	})
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("no CA certificate")
	}
	for _, tc := range []struct {
		name    string
		version uint16
		ok      bool
	}{
		{"TLS 1.0", tls.VersionTLS10, false},
		{"TLS 1.1", tls.VersionTLS11, false},
		{"TLS 1.2", tls.VersionTLS12, true},
		{"TLS 1.3", tls.VersionTLS13, true},
	} {
		conn, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tc.version, MaxVersion: tc.version})
		if err == nil {
			if got := conn.ConnectionState().Version; got != tc.version {
				t.Errorf("%s: negotiated %x", tc.name, got)
			}
			conn.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s handshake: err %v, want success %v", tc.name, err, tc.ok)
		}
	}
}
