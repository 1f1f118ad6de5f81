// Package testdeps is what a test does when a program it needs (redis-server,
// node, a proxy, Chromium) is not installed: `make test` sets
// TEST_REQUIRE_DEPS, so there a missing program fails the run instead of
// hiding the tests behind a skip; elsewhere (a plain `go test` on a
// developer's machine) the test is skipped. scripts/deps.sh installs them
// all.
package testdeps

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Required reports whether a missing dependency fails the test
// (TEST_REQUIRE_DEPS or CI set) rather than skipping it.
func Required() bool {
	return os.Getenv("TEST_REQUIRE_DEPS") != "" || os.Getenv("CI") != ""
}

// Missing ends t for want of what: it fails t when Required, else skips it.
func Missing(t testing.TB, what string) {
	t.Helper()
	msg := what + " is missing (scripts/deps.sh installs it)"
	if Required() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Binary finds the program name on PATH or in /usr/sbin (where nginx and
// haproxy live, often not on a user's PATH), or ends t with Missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := filepath.Join("/usr/sbin", name)
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return p
	}
	Missing(t, name)
	return ""
}

// Node returns the command that runs node with a WebSocket global: node
// 22+, or 20/21 with --experimental-websocket. Without one it ends t with
// Missing.
func Node(t testing.TB) []string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		for _, flags := range [][]string{nil, {"--experimental-websocket"}} {
			args := append(append([]string{node}, flags...), "-e", `process.exit(typeof WebSocket === "function" ? 0 : 1)`)
			if exec.Command(args[0], args[1:]...).Run() == nil {
				return append([]string{node}, flags...)
			}
		}
	}
	Missing(t, "node (with a WebSocket global)")
	return nil
}
