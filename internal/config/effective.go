package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// secretKeys hold credentials: Effective shows them as masked, never
// their value. A test keeps every key named like a secret in this set.
var secretKeys = map[string]bool{
	"redis.password":          true,
	"redis.sentinel_password": true,
	"nats.password":           true,
	"nats.token":              true,
	"auth.hmac_secret":        true,
	"metrics.token":           true,
	"api.keys":                true,
	"api.cluster_secret":      true,
}

// Masked replaces a secret's value (and the password of a URL) in
// Effective.
const Masked = "xxxxx"

// Entry is one key of the effective configuration, as Effective shows it.
type Entry struct {
	Key   string // the config key, e.g. "history.ttl"
	Env   string // its environment override, e.g. "SYNCGATE_HISTORY_TTL"
	Value string // the value as YAML would write it, secrets masked
}

// Effective lists every key of c in config.yaml order with its value
// written as YAML (strings quoted, lists in brackets, durations like
// "10m0s"). Secrets show as Masked when set and "" when not; a password
// inside a URL (nats.url, auth.jwks_url) is masked too.
func (c Config) Effective() []Entry {
	out := make([]Entry, 0, len(settings))
	for _, s := range settings {
		var v string
		switch p := s.field(&c).(type) {
		case *string:
			v = *p
			if secretKeys[s.key] && v != "" {
				v = Masked
			} else if strings.Contains(v, "://") {
				v = MaskURLs(v)
			}
			v = strconv.Quote(v)
		case *[]string:
			q := make([]string, len(*p))
			for i, item := range *p {
				if secretKeys[s.key] {
					item = Masked
				}
				q[i] = strconv.Quote(MaskURLs(item))
			}
			v = "[" + strings.Join(q, ", ") + "]"
		case *int:
			v = strconv.Itoa(*p)
		case *bool:
			v = strconv.FormatBool(*p)
		case *time.Duration:
			v = p.String()
		default:
			v = fmt.Sprint(p) // a new field type: visible, if not pretty
		}
		out = append(out, Entry{Key: s.key, Env: s.env(), Value: v})
	}
	return out
}

// MaskURLs masks the password (or a user part alone, often a token) of
// each comma-separated URL in s, for logs and the effective config.
func MaskURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			if strings.Contains(p, "@") {
				parts[i] = Masked // unparsable, and may hold a credential
			}
			continue
		}
		if u.User == nil {
			continue
		}
		if _, has := u.User.Password(); has {
			parts[i] = u.Redacted() // the password as "xxxxx"
			continue
		}
		u.User = url.User(Masked) // a token as the user part
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// CheckFiles reports every *_file key that names a file this process
// cannot read, naming the key. Load does not open files (the node reads
// them when it starts the part that needs them); `syncgate check` calls
// this so a wrong path shows before the node starts.
func (c Config) CheckFiles() error {
	var errs []error
	for _, s := range settings {
		if !strings.HasSuffix(s.key, "_file") {
			continue
		}
		p, ok := s.field(&c).(*string)
		if !ok || *p == "" {
			continue
		}
		f, err := os.Open(*p)
		if err != nil {
			errs = append(errs, fmt.Errorf("config: %s: want a readable file, got %q: %w", s.key, *p, errors.Unwrap(err)))
			continue
		}
		f.Close()
	}
	return errors.Join(errs...)
}
