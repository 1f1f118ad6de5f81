package natsbase

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseAck(t *testing.T) {
	for _, c := range []struct {
		in       string
		seq      uint64
		conflict bool
		fails    bool
	}{
		{in: `{"stream":"SG_HISTORY","seq":42}`, seq: 42},
		{in: `{"stream":"SG_HISTORY","domain":"x","seq":7}`, seq: 7},
		{in: `{"stream":"SG_HISTORY", "seq": 9}`, seq: 9}, // through encoding/json
		{in: `{"stream":"SG_HISTORY","seq":5,"duplicate":true}`, seq: 5},
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
		case c.fails:
			if err == nil {
				t.Errorf("%s: %d, no error; want one", c.in, seq)
			}
		case err != nil || seq != c.seq:
			t.Errorf("%s: %d, %v; want %d", c.in, seq, err, c.seq)
		}
	}
}

func TestToken(t *testing.T) {
	seen := map[string]string{}
	for _, s := range []string{"", "a", "b", "a.b", "a~2Eb", "a~2eb", "~", "*", ">", "a b", "doc:1", "x=y@z", "a..b", ".", "~~", "\xff"} {
		tok := Token(s)
		if prev, dup := seen[tok]; dup {
			t.Errorf("Token(%q) = Token(%q) = %q", s, prev, tok)
		}
		seen[tok] = s
		if tok == "" || tok == "*" || tok == ">" {
			t.Errorf("Token(%q) = %q: not a literal token", s, tok)
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; c == '.' || c == ' ' || c == '\t' {
				t.Errorf("Token(%q) = %q contains %q", s, tok, c)
			}
		}
		if back, ok := ParseToken(tok); !ok || back != s {
			t.Errorf("ParseToken(Token(%q) = %q) = %q, %v", s, tok, back, ok)
		}
		if got := string(AppendToken(nil, s)); got != tok {
			t.Errorf("AppendToken(%q) = %q, Token gives %q", s, got, tok)
		}
	}
	for _, bad := range []string{"", "a.b", "~2e", "~4", "~41", "a*"} {
		if s, ok := ParseToken(bad); ok {
			t.Errorf("ParseToken(%q) = %q, ok; want not ok", bad, s)
		}
	}
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"", "a.b", "doc:1", "~", "a~2Eb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := Token(s)
		if back, ok := ParseToken(tok); !ok || back != s {
			t.Fatalf("ParseToken(Token(%q) = %q) = %q, %v", s, tok, back, ok)
		}
		if back, ok := ParseToken(s); ok && Token(back) != s {
			t.Fatalf("Token(ParseToken(%q) = %q) = %q", s, back, Token(back))
		}
	})
}

func TestStartServerBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	_, err = StartServer(ServerConfig{Listen: ln.Addr().String(), StoreDir: t.TempDir(), Token: "t"})
	if err == nil || !strings.Contains(err.Error(), "address already in use") || time.Since(start) > 2*time.Second {
		t.Fatalf("StartServer on a busy port: %v after %v, want a quick address-in-use error", err, time.Since(start))
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:14222":                     "nats://127.0.0.1:14222",
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

// TestServerOptionsCredential: the embedded server never runs without a
// credential; half-set or conflicting ones are refused; routes carry it.
func TestServerOptionsCredential(t *testing.T) {
	base := ServerConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}
	for name, edit := range map[string]func(c *ServerConfig){
		"none":             func(*ServerConfig) {},
		"user only":        func(c *ServerConfig) { c.User = "u" },
		"password only":    func(c *ServerConfig) { c.Password = "p" },
		"token and user":   func(c *ServerConfig) { c.Token, c.User, c.Password = "t", "u", "p" },
		"cert without key": func(c *ServerConfig) { c.Token, c.TLSCertFile = "t", "c.pem" },
		"cluster TLS, no CA": func(c *ServerConfig) {
			c.Token, c.TLSCertFile, c.TLSKeyFile, c.ClusterListen, c.Routes = "t", "c", "k", "127.0.0.1:0", []string{"127.0.0.1:1"}
		},
	} {
		c := base
		edit(&c)
		if _, err := ServerOptions(c); err == nil {
			t.Errorf("%s: ServerOptions accepted it", name)
		}
	}
	c := base
	c.Token, c.ClusterListen, c.Routes = "tok", "127.0.0.1:0", []string{"127.0.0.1:6222"}
	opts, err := ServerOptions(c)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Authorization != "tok" || opts.Cluster.Username == "" || opts.Cluster.Password != "tok" {
		t.Fatalf("token %q, cluster user %q password %q", opts.Authorization, opts.Cluster.Username, opts.Cluster.Password)
	}
	if p, _ := opts.Routes[0].User.Password(); p != "tok" {
		t.Fatalf("route URL %v does not carry the credential", opts.Routes[0])
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
