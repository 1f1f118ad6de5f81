package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/syncgate/syncgate/internal/config"
)

func TestVersionText(t *testing.T) {
	out := versionText()
	for _, want := range []string{"syncgate ", "\ncommit ", runtime.Version()} {
		if !strings.Contains(out, want) {
			t.Errorf("--version output %q lacks %q", out, want)
		}
	}
	version, commit = "v9.9.9", "0123abc"
	defer func() { version, commit = "", "" }()
	if out := versionText(); !strings.HasPrefix(out, "syncgate v9.9.9\ncommit 0123abc\n") {
		t.Errorf("with ldflags: %q", out)
	}
}

func TestParseArgs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(file, []byte("listen: \":9000\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want command
		err  string
	}{
		{args: nil, want: command{}}, // config: checked below
		{args: []string{"--config", file}, want: command{config: file}},
		{args: []string{"-config=" + file}, want: command{config: file}},
		{args: []string{"check", "--config", file}, want: command{check: true, config: file}},
		{args: []string{"--version"}, want: command{version: true}},
		{args: []string{"--help"}, want: command{help: true}},
		{args: []string{"-h"}, want: command{help: true}},
		{args: []string{"--config", filepath.Join(dir, "missing.yaml")}, want: command{config: filepath.Join(dir, "missing.yaml")}},
		{args: []string{"--bogus"}, err: "bogus"},
		{args: []string{"serve"}, err: `unexpected argument "serve"`},
	} {
		got, err := parseArgs(tc.args, io.Discard)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want one with %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if tc.args == nil || (tc.want.version || tc.want.help) {
			tc.want.config = got.config // the default depends on the working directory
		}
		if got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.args, got, tc.want)
		}
	}
	// The repository's config.yaml is the default file.
	if got, _ := parseArgs(nil, io.Discard); got.config != "config.yaml" {
		t.Errorf("no flags in the repository root: config %q, want config.yaml", got.config)
	}
}

func TestHelpNamesEnvConvention(t *testing.T) {
	for _, want := range []string{"SYNCGATE_<KEY>", "SYNCGATE_HISTORY_TTL", "check", "--version", "--config"} {
		if !strings.Contains(usage, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// TestCheck: the effective config with secrets masked and the variable
// that set each overridden key; a bad value fails naming its key.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(file, []byte("broker:\n  type: redis\nredis:\n  password: file-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	env := []string{"SYNCGATE_LISTEN=127.0.0.1:9001", "SYNCGATE_METRICS_TOKEN=env-secret-0123456789", "HOME=/x"}
	if err := check(file, env, &out); err != nil {
		t.Fatalf("check: %v", err)
	}
	s := out.String()
	for _, want := range []string{
		`listen: "127.0.0.1:9001"  # from SYNCGATE_LISTEN`,
		`broker.type: "redis"` + "\n",
		`redis.password: "xxxxx"` + "\n",
		`metrics.token: "xxxxx"  # from SYNCGATE_METRICS_TOKEN`,
		"# config OK",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("check output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "secret-0123456789") {
		t.Errorf("check output shows a secret:\n%s", s)
	}

	for _, tc := range []struct {
		path string
		env  []string
		want string
	}{
		{file, []string{"SYNCGATE_HISTORY_TTL=ten"}, `history.ttl (env SYNCGATE_HISTORY_TTL): want a Go duration`},
		{file, []string{"SYNCGATE_HISTROY_TTL=1m"}, "SYNCGATE_HISTROY_TTL"},
		{filepath.Join(dir, "missing.yaml"), nil, "missing.yaml"},
		{file, []string{"SYNCGATE_AUTH_PUBLIC_KEY_FILE=" + filepath.Join(dir, "nokey.pem")}, "auth.public_key_file"},
	} {
		out.Reset()
		err := check(tc.path, tc.env, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("check %s %q: %v, want an error with %q", tc.path, tc.env, err, tc.want)
		}
		if strings.Contains(out.String(), "config OK") {
			t.Errorf("check %q printed OK on error", tc.env)
		}
	}
}

// TestStartupLine: the startup line names the listeners, broker and auth,
// and no secret.
func TestStartupLine(t *testing.T) {
	cfg := config.Default()
	cfg.NATS.URL = "nats://u:url-secret-0123456789@10.0.0.1:4222"
	cfg.NATS.User, cfg.NATS.Password = "u", "url-secret-0123456789"
	cfg.Metrics.Token = "metrics-secret-0123456789"
	cfg.API.Keys = []string{"api-key-secret-0123456789"}
	cfg.API.ClusterSecret = "cluster-secret-0123456789-0123456789"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	line := fmt.Sprintln(startupAttrs(cfg, "n1", ln, ln, ln)...)
	for _, want := range []string{"http://" + ln.Addr().String(), "/metrics (token)", "/api/<method> (apikey)", "control on, signed", "jetstream", "nats://u:xxxxx@10.0.0.1:4222", "auth off"} {
		if !strings.Contains(line, want) {
			t.Errorf("startup line %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "secret") {
		t.Errorf("startup line shows a secret: %s", line)
	}
}

// TestHealth: syncgate health asks the node at its listen port, on
// loopback when listen names no host, and fails unless it answers 200.
func TestHealth(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	file := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(file, []byte("listen: \":"+port+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := health(file, false); err != nil {
		t.Errorf("health: %v", err)
	}
	if err := health(file, true); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("health --ready against a 503: %v, want an error", err)
	}
	srv.Close()
	if err := health(file, false); err == nil {
		t.Error("health with nothing listening: no error")
	}
}

// TestDeployCommandLines: the command lines the shipped deploy files run
// (image entrypoint and healthcheck, systemd ExecStart, Kubernetes args)
// use flags and subcommands this binary has.
func TestDeployCommandLines(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var lines [][]string
	docker := read("deploy/Dockerfile")
	jsonArgs := func(directive string) []string {
		m := regexp.MustCompile(`(?m)^` + directive + `\s*(\[.*\])\s*$`).FindStringSubmatch(docker)
		if m == nil {
			t.Fatalf("Dockerfile: no %s [...]", directive)
		}
		var args []string
		if err := json.Unmarshal([]byte(m[1]), &args); err != nil {
			t.Fatalf("Dockerfile %s: %v", directive, err)
		}
		return args
	}
	entry, cmd := jsonArgs("ENTRYPOINT"), jsonArgs("CMD")
	if len(entry) != 1 || entry[0] != "/usr/local/bin/syncgate" {
		t.Errorf("ENTRYPOINT %q", entry)
	}
	lines = append(lines, cmd)
	hc := regexp.MustCompile(`(?m)^\s*CMD\s*(\[.*"health".*\])\s*$`).FindStringSubmatch(docker)
	if hc == nil {
		t.Fatal("Dockerfile: no HEALTHCHECK CMD running syncgate health")
	}
	var hcArgs []string
	if err := json.Unmarshal([]byte(hc[1]), &hcArgs); err != nil {
		t.Fatal(err)
	}
	lines = append(lines, hcArgs[1:])

	exec := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/syncgate (.*)$`).FindStringSubmatch(read("deploy/systemd/syncgate.service"))
	if exec == nil {
		t.Fatal("systemd: no ExecStart=/usr/local/bin/syncgate ...")
	}
	lines = append(lines, strings.Fields(exec[1]))

	k8s := read("deploy/kubernetes/syncgate.yaml")
	argsLine := regexp.MustCompile(`(?m)^\s*args:\s*(\[.*\])\s*$`).FindStringSubmatch(k8s)
	if argsLine == nil {
		t.Fatal("kubernetes: no args: [...]")
	}
	var k8sArgs []string
	if err := json.Unmarshal([]byte(argsLine[1]), &k8sArgs); err != nil {
		t.Fatalf("kubernetes args: %v", err)
	}
	lines = append(lines, k8sArgs)

	for _, args := range lines {
		c, err := parseArgs(args, io.Discard)
		if err != nil || c.help || c.version {
			t.Errorf("%q: %+v, %v", args, c, err)
		}
		if !c.check && c.config != "/etc/syncgate/config.yaml" {
			t.Errorf("%q: config %q, want /etc/syncgate/config.yaml", args, c.config)
		}
	}
	if !strings.Contains(docker, "COPY config.yaml /etc/syncgate/config.yaml") {
		t.Error("the image does not ship a config at /etc/syncgate/config.yaml")
	}
	if !strings.Contains(docker, "-X main.version=${VERSION} -X main.commit=${COMMIT}") {
		t.Error("the image build does not stamp main.version and main.commit")
	}
}
