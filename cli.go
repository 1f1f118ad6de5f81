package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/syncgate/syncgate/internal/config"
)

// version and commit are set at build time:
//
//	go build -ldflags "-X main.version=v1.2.0 -X main.commit=$(git rev-parse HEAD)"
//
// Left empty, they come from the module and VCS data Go stamps into the
// binary (go build in a git checkout).
var version, commit string

const usage = `syncgate runs one node of the syncgate WebSocket sync gateway.

Usage:
  syncgate [--config FILE]          run a node
  syncgate check [--config FILE]    validate the config file and the SYNCGATE_*
                                    environment, print the effective config
                                    (secrets masked); exit 1 on any error
  syncgate health [--ready] [--config FILE]
                                    ask the node on this host (at its listen
                                    port) for /healthz, or /readyz with
                                    --ready; exit 0 on 200 (a container
                                    healthcheck: the image has no shell)
  syncgate --version                print version, commit and Go version
  syncgate --help                   print this help

Flags:
  --config FILE   the YAML config file (default config.yaml; when it is absent
                  and --config is not given, defaults and environment only)

Environment: every config key can be overridden by SYNCGATE_<KEY>, the key
upper-cased with dots as underscores: listen is SYNCGATE_LISTEN, history.ttl is
SYNCGATE_HISTORY_TTL, nats.token is SYNCGATE_NATS_TOKEN. An empty variable
counts as unset; a SYNCGATE_* variable that names no key is an error. The
repository's config.yaml lists every key with its default; put secrets in the
environment rather than the file.

Signals: SIGTERM or SIGINT drains the node over server.drain_window, then exits 0.
`

// command is what the command line asks for.
type command struct {
	check, health, version, help bool
	ready                        bool   // health: /readyz instead of /healthz
	config                       string // the file to load, "" for none
}

// parseArgs reads the command line (without the program name). A missing
// config.yaml is fine unless --config named it.
func parseArgs(args []string, stderr io.Writer) (command, error) {
	var c command
	if len(args) > 0 && (args[0] == "check" || args[0] == "health") {
		c.check, c.health = args[0] == "check", args[0] == "health"
		args = args[1:]
	}
	fs := flag.NewFlagSet("syncgate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	path := fs.String("config", "config.yaml", "")
	fs.BoolVar(&c.version, "version", false, "")
	if c.health {
		fs.BoolVar(&c.ready, "ready", false, "")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.help = true
			return c, nil
		}
		return c, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "config" })
	c.config = *path
	if _, err := os.Stat(*path); errors.Is(err, os.ErrNotExist) && !given {
		c.config = "" // no config.yaml in this directory: defaults and env only
	}
	return c, nil
}

// versionText is the --version output: version, commit, Go version.
func versionText() string {
	v, c, dirty, goVersion := version, commit, false, "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		goVersion = info.GoVersion
		if v == "" && info.Main.Version != "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if c == "" {
					c = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true" && commit == ""
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if c == "" {
		c = "unknown"
	} else if dirty {
		c += "-dirty"
	}
	return fmt.Sprintf("syncgate %s\ncommit %s\n%s\n", v, c, goVersion)
}

// check loads the config as the node would, checks that the files it names
// can be read, and prints the effective config (secrets masked) with the
// environment variable that set each overridden key.
func check(path string, environ []string, stdout io.Writer) error {
	cfg, err := config.LoadFrom(path, environ)
	if err != nil {
		return err
	}
	if err := cfg.CheckFiles(); err != nil {
		return err
	}
	set := make(map[string]bool)
	for _, kv := range environ {
		if name, v, _ := strings.Cut(kv, "="); v != "" {
			set[name] = true
		}
	}
	src := "defaults"
	if path != "" {
		src = path
	}
	fmt.Fprintf(stdout, "# effective config: %s + environment; secrets shown as %s\n", src, config.Masked)
	for _, e := range cfg.Effective() {
		if set[e.Env] {
			fmt.Fprintf(stdout, "%s: %s  # from %s\n", e.Key, e.Value, e.Env)
			continue
		}
		fmt.Fprintf(stdout, "%s: %s\n", e.Key, e.Value)
	}
	fmt.Fprintln(stdout, "# config OK")
	return nil
}

// health asks the node on this host for /healthz (or /readyz): at the
// port of its listen key, on loopback when listen names no host.
func health(path string, ready bool) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %q: %w", cfg.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	scheme, tr := "http", &http.Transport{DisableKeepAlives: true}
	if cfg.Server.TLS.CertFile != "" {
		// The node's own certificate, asked on its own address: what is
		// checked is that it answers, not who it is.
		scheme, tr.TLSClientConfig = "https", &tls.Config{InsecureSkipVerify: true} //nolint:gosec
	}
	url := scheme + "://" + net.JoinHostPort(host, port) + "/healthz"
	if ready {
		url = scheme + "://" + net.JoinHostPort(host, port) + "/readyz"
	}
	resp, err := (&http.Client{Timeout: 3 * time.Second, Transport: tr}).Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
