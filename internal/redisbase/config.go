package redisbase

import (
	"errors"
	"fmt"
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
