package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// validate checks the NATS credential and TLS keys against each other.
// brokerType decides whether the embedded server would start.
func (n NATS) validate(brokerType string) []error {
	var errs []error
	if (n.User == "") != (n.Password == "") {
		errs = append(errs, errors.New("config: nats.user and nats.password: want both set or both empty"))
	}
	set := 0
	for _, on := range []bool{n.User != "" || n.Password != "", n.Token != "", n.NKeySeedFile != "", n.CredsFile != ""} {
		if on {
			set++
		}
	}
	if set > 1 {
		errs = append(errs, errors.New("config: nats.user/nats.password, nats.token, nats.nkey_seed_file and nats.creds_file: want at most one"))
	}
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		errs = append(errs, errors.New("config: nats.tls.cert_file and nats.tls.key_file: want both set or both empty"))
	}
	if n.URL != "" || (brokerType != "nats" && brokerType != "jetstream") {
		return errs
	}
	// The embedded server runs.
	if n.NKeySeedFile != "" || n.CredsFile != "" {
		errs = append(errs, errors.New("config: nats.nkey_seed_file and nats.creds_file: want them only with nats.url (the embedded server takes nats.user and nats.password, or nats.token)"))
	}
	// The embedded server's credential is ours to choose: refuse one that
	// is quick to guess (an external server's is the operator's business).
	for _, c := range []struct{ key, v string }{{"nats.password", n.Password}, {"nats.token", n.Token}} {
		if c.v != "" && len(c.v) < minEmbeddedSecret {
			errs = append(errs, fmt.Errorf("config: %s: want at least %d bytes for the embedded NATS server, got %d", c.key, minEmbeddedSecret, len(c.v)))
		}
	}
	exposed := ""
	switch {
	case n.ClusterListen != "":
		exposed = fmt.Sprintf("nats.cluster_listen is %q", n.ClusterListen)
	case len(n.Routes) > 0:
		exposed = "nats.routes is set"
	default:
		host, _, _ := net.SplitHostPort(n.Listen)
		if !isLoopback(host) {
			exposed = fmt.Sprintf("nats.listen %q is not a loopback address", n.Listen)
		}
	}
	if exposed != "" && n.User == "" && n.Token == "" {
		errs = append(errs, fmt.Errorf("config: nats.user and nats.password (or nats.token): want a credential: %s, so other hosts can reach the embedded NATS server, which would let them read and forge every channel's messages", exposed))
	}
	if n.ClusterListen != "" && n.TLS.CertFile != "" && n.TLS.CAFile == "" {
		errs = append(errs, errors.New("config: nats.tls.ca_file: want the CA of the route peers' certificates when nats.cluster_listen and nats.tls.cert_file are set"))
	}
	return errs
}

// minEmbeddedSecret is the shortest password or token the embedded NATS
// server accepts, in bytes.
const minEmbeddedSecret = 16

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validate checks the Redis TLS keys against each other.
func (r Redis) validate() []error {
	var errs []error
	if (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") {
		errs = append(errs, errors.New("config: redis.tls.cert_file and redis.tls.key_file: want both set or both empty"))
	}
	if !r.TLS.Enabled && (r.TLS.CAFile != "" || r.TLS.CertFile != "" || r.TLS.ServerName != "") {
		errs = append(errs, errors.New("config: redis.tls.enabled: want true when redis.tls.ca_file, cert_file or server_name is set"))
	}
	if r.SentinelMaster == "" && (r.SentinelUsername != "" || r.SentinelPassword != "") {
		errs = append(errs, errors.New("config: redis.sentinel_username and redis.sentinel_password: want them only with redis.sentinel_master"))
	}
	return errs
}

// ClientConfig returns the tls.Config to dial Redis with, nil when TLS is
// off. Errors name the key whose file could not be used.
func (t RedisTLS) ClientConfig() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("config: redis.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("config: redis.tls.ca_file: want PEM certificates, found none in %s", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("config: redis.tls.cert_file and redis.tls.key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
