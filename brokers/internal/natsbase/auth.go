package natsbase

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/syncgate/syncgate/internal/natsserver"
)

// ClientAuth is how a node proves itself to NATS servers it dials by URL,
// and how it checks them. At most one of user/password, Token, NKeySeedFile
// and CredsFile is used.
type ClientAuth struct {
	// User and Password log in with a user name and password.
	User, Password string
	// Token logs in with a token.
	Token string
	// NKeySeedFile is a file holding an nkey seed ("SU..."): the node
	// signs the server's nonce with it.
	NKeySeedFile string
	// CredsFile is a NATS credentials file (a user JWT and its nkey seed),
	// as nsc writes them.
	CredsFile string
	// CAFile (PEM) verifies the servers' certificates; CertFile and
	// KeyFile (PEM) are a client certificate for servers that ask for one.
	// A tls:// URL or a CAFile turns TLS on.
	CAFile, CertFile, KeyFile string
}

// options are the nats.go options that apply a.
func (a ClientAuth) options() ([]nats.Option, error) {
	set := 0
	for _, on := range []bool{a.User != "" || a.Password != "", a.Token != "", a.NKeySeedFile != "", a.CredsFile != ""} {
		if on {
			set++
		}
	}
	if set > 1 {
		return nil, errors.New("nats: set one of user/password, token, nkey seed file and credentials file")
	}
	var opts []nats.Option
	switch {
	case a.User != "" || a.Password != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	case a.Token != "":
		opts = append(opts, nats.Token(a.Token))
	case a.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(a.NKeySeedFile)
		if err != nil {
			// The library's message names the file, never the seed.
			return nil, fmt.Errorf("nats: nkey seed file: %w", err)
		}
		opts = append(opts, o)
	case a.CredsFile != "":
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		return nil, errors.New("nats: a client certificate needs both a certificate and a key file")
	}
	if a.CertFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	return opts, nil
}

// serverAuth is the credential a node presents to its own embedded server.
func serverAuth(cfg natsserver.ServerConfig) ClientAuth {
	return ClientAuth{User: cfg.User, Password: cfg.Password, Token: cfg.Token}
}

// RedactURLs returns the comma-separated server URLs with any password
// (or token given as the user part) replaced by "xxxxx", for errors and
// logs.
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil {
			if strings.Contains(p, "@") {
				parts[i] = "(unparsable URL with credentials)"
			}
			continue
		}
		if u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
			} else {
				u.User = url.User("xxxxx") // a token
			}
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// plaintextRisk returns the servers of urls (comma-separated) that are
// off this host and would get a's password or token over a nats:// URL
// with no CA configured, so probably in plain text (the library turns TLS
// on by itself only when the server demands it). An nkey or a creds file
// sends no secret, only a signature.
func (a ClientAuth) plaintextRisk(urls string) []string {
	withURLSecret := false
	var risky []string
	for _, p := range strings.Split(urls, ",") {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if p == "" || err != nil || u.Scheme == "tls" {
			continue
		}
		if u.User != nil {
			withURLSecret = true
		}
		if !natsserver.IsLoopback(u.Hostname()) {
			risky = append(risky, RedactURLs(p))
		}
	}
	sends := a.Password != "" || a.Token != "" || withURLSecret
	if !sends || a.CAFile != "" {
		return nil
	}
	return risky
}
