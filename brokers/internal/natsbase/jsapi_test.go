package natsbase

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAck(t *testing.T) {
	for _, c := range []struct {
		in       string
		seq      uint64
		conflict bool
		dup      bool // ErrDuplicate with seq
		fails    bool
	}{
		{in: `{"stream":"SG_HISTORY","seq":42}`, seq: 42},
		{in: `{"stream":"SG_HISTORY","domain":"x","seq":7}`, seq: 7},
		{in: `{"stream":"SG_HISTORY", "seq": 9}`, seq: 9}, // through encoding/json
		{in: `{"stream":"SG_HISTORY","seq":5,"duplicate":true}`, seq: 5, dup: true},
		{in: `{"stream":"SG_HISTORY","seq":6, "duplicate": true}`, seq: 6, dup: true}, // as nats-server writes it
		{in: `{"stream":"SG_HISTORY","seq":0,"duplicate":true}`, fails: true},
		{in: `{"error":{"code":409,"err_code":10158,"description":"duplicate message id is in process"},"stream":"SG_HISTORY","seq":0}`, conflict: true},
		{in: `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"SG_HISTORY","seq":0}`, conflict: true},
		{in: `{"error":{"code":400,"err_code":10164,"description":"wrong last sequence"},"stream":"SG_HISTORY","seq":0}`, conflict: true},
		{in: `{"error":{"code":503,"err_code":10008,"description":"unavailable"}}`, fails: true},
		{in: `{"stream":"SG_HISTORY","seq":0}`, fails: true},
		{in: `{"stream":"SG_HISTORY","seq":99999999999999999999999}`, fails: true},
		{in: `not json`, fails: true},
	} {
		seq, err := ParseAck([]byte(c.in))
		switch {
		case c.conflict:
			if !errors.Is(err, ErrConflict) {
				t.Errorf("%s: %d, %v; want a conflict", c.in, seq, err)
			}
		case c.dup:
			if !errors.Is(err, ErrDuplicate) || seq != c.seq {
				t.Errorf("%s: %d, %v; want %d and a duplicate", c.in, seq, err, c.seq)
			}
		case c.fails:
			if err == nil {
				t.Errorf("%s: %d, no error; want one", c.in, seq)
			}
		case err != nil || seq != c.seq:
			t.Errorf("%s: %d, %v; want %d", c.in, seq, err, c.seq)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:14222":                    "nats://127.0.0.1:14222",
		"nats://u:secret@a:4222,tls://tok3n@b:4222": "nats://u:xxxxx@a:4222,tls://xxxxx@b:4222",
		" nats://u:secret@a:4222 , nats://b:4222":   "nats://u:xxxxx@a:4222,nats://b:4222",
		"nats://u:sec%zzret@a:4222":                 "(unparsable URL with credentials)",
		"":                                          "",
	} {
		if got := RedactURLs(in); got != want || strings.Contains(got, "secret") || strings.Contains(got, "tok3n") {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPlaintextRisk: which servers would get a password or token over a
// nats:// URL without a CA.
func TestPlaintextRisk(t *testing.T) {
	for _, c := range []struct {
		auth ClientAuth
		urls string
		want string
	}{
		{ClientAuth{Token: "t"}, "nats://10.0.0.5:4222", "nats://10.0.0.5:4222"},
		{ClientAuth{User: "u", Password: "p"}, "nats://127.0.0.1:14222,nats://n2:4222,tls://n3:4222", "nats://n2:4222"},
		{ClientAuth{}, "nats://u:secret@n1:4222", "nats://u:xxxxx@n1:4222"},
		{ClientAuth{Token: "t", CAFile: "ca.pem"}, "nats://n1:4222", ""},
		{ClientAuth{Token: "t"}, "tls://n1:4222", ""},
		{ClientAuth{Token: "t"}, "nats://localhost:14222,nats://[::1]:14222", ""},
		{ClientAuth{NKeySeedFile: "seed.nk"}, "nats://n1:4222", ""},
		{ClientAuth{}, "nats://n1:4222", ""},
	} {
		if got := strings.Join(c.auth.plaintextRisk(c.urls), ","); got != c.want {
			t.Errorf("%+v %q: %q, want %q", c.auth, c.urls, got, c.want)
		}
	}
}
