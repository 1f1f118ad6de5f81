package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEffectiveMasksSecrets: no credential set anywhere shows in the
// effective configuration, while every other value does.
func TestEffectiveMasksSecrets(t *testing.T) {
	c := Default()
	c.Redis.Password = "redis-pass-1234567890"
	c.Redis.SentinelPassword = "sentinel-pass-1234567890"
	c.NATS.Password = "nats-pass-1234567890"
	c.NATS.Token = "nats-token-1234567890"
	c.Auth.HMACSecret = "hmac-secret-12345678901234567890123"
	c.Metrics.Token = "metrics-token-1234567890"
	c.NATS.URL = "nats://u:url-pass-1234567890@10.0.0.1:4222,nats://url-token-1234567890@10.0.0.2:4222"
	c.Auth.JWKSURL = "https://j:jwks-pass-1234567890@idp.example.com/keys"
	c.Redis.Addrs = []string{"10.0.0.9:6379"}
	c.API.Keys = []string{"api-key-one-1234567890", "api-key-two-1234567890"}
	c.API.ClusterSecret = "cluster-secret-1234567890123456789012"
	var all strings.Builder
	got := map[string]string{}
	for _, e := range c.Effective() {
		all.WriteString(e.Key + ": " + e.Value + "\n")
		got[e.Key] = e.Value
		if e.Env != "SYNCGATE_"+strings.ToUpper(strings.ReplaceAll(e.Key, ".", "_")) {
			t.Errorf("%s: env %s", e.Key, e.Env)
		}
	}
	for _, secret := range []string{"redis-pass", "sentinel-pass", "nats-pass", "nats-token", "hmac-secret", "metrics-token", "url-pass", "url-token", "jwks-pass", "api-key", "cluster-secret"} {
		if strings.Contains(all.String(), secret) {
			t.Errorf("effective config shows %q:\n%s", secret, all.String())
		}
	}
	for key, want := range map[string]string{
		"redis.password":     `"xxxxx"`,
		"redis.username":     `""`,
		"redis.addrs":        `["10.0.0.9:6379"]`,
		"history.ttl":        "10m0s",
		"history.size":       "1000",
		"redis.cluster":      "false",
		"nats.url":           `"nats://u:xxxxx@10.0.0.1:4222,nats://xxxxx@10.0.0.2:4222"`,
		"auth.jwks_url":      `"https://j:xxxxx@idp.example.com/keys"`,
		"metrics.listen":     `"127.0.0.1:9090"`,
		"metrics.token":      `"xxxxx"`,
		"api.keys":           `["xxxxx", "xxxxx"]`,
		"api.cluster_secret": `"xxxxx"`,
		"nats.token":         `"xxxxx"`,
		"listen":             `":8080"`,
		"broker.type":        `"jetstream"`,
		"auth.hmac_secret":   `"xxxxx"`,
	} {
		if got[key] != want {
			t.Errorf("%s = %s, want %s", key, got[key], want)
		}
	}
	if len(got) != len(settings) {
		t.Errorf("%d entries, want one per key (%d)", len(got), len(settings))
	}
}

// TestSecretKeysCoverSecrets: a new key named like a credential must be
// masked too.
func TestSecretKeysCoverSecrets(t *testing.T) {
	for _, s := range settings {
		name := s.key[strings.LastIndex(s.key, ".")+1:]
		if strings.Contains(name, "password") || strings.Contains(name, "secret") || name == "token" {
			if !secretKeys[s.key] {
				t.Errorf("%s looks like a secret but is not in secretKeys", s.key)
			}
		}
	}
	for k := range secretKeys {
		if _, ok := lookupKey(k); !ok {
			t.Errorf("secretKeys names %s, which is no key", k)
		}
	}
}

func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ok, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Default()
	c.Redis.TLS.CAFile = ok
	if err := c.CheckFiles(); err != nil {
		t.Fatalf("readable file: %v", err)
	}
	c.Auth.PublicKeyFile = filepath.Join(dir, "missing.pem")
	err := c.CheckFiles()
	if err == nil || !strings.Contains(err.Error(), "auth.public_key_file") || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing file: %v, want an error naming auth.public_key_file and the path", err)
	}
}
