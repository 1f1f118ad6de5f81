package redisbase

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
)

// ValidateConn checks the fields the brokers' Configs have in common: the
// key prefix (no '{' or '}': they would break the per-channel hash tag),
// the database number and the addresses. name starts every error.
func ValidateConn(name, prefix string, db int, addrs []string) []error {
	var errs []error
	if strings.ContainsAny(prefix, "{}") {
		errs = append(errs, fmt.Errorf("%s: Prefix %q: must not contain '{' or '}'", name, prefix))
	}
	if db < 0 {
		errs = append(errs, fmt.Errorf("%s: DB %d: must be >= 0", name, db))
	}
	for _, a := range addrs {
		if a == "" {
			errs = append(errs, errors.New(name+": Addrs: empty address"))
		}
	}
	return errs
}

// WarnPlaintextPassword logs a warning when a password would go to a
// server that is not on loopback without TLS (anyone on the path reads
// it). name starts the message.
func WarnPlaintextPassword(log *slog.Logger, name string, hasPassword, tls bool, addrs ...string) {
	if !hasPassword || tls {
		return
	}
	var exposed []string
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if ip := net.ParseIP(host); err != nil || (!strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback())) {
			exposed = append(exposed, a)
		}
	}
	if len(exposed) > 0 {
		log.Warn(name+": the password goes to servers off this host without TLS; anyone on the network path can read it (set redis.tls.enabled)", "servers", exposed)
	}
}
