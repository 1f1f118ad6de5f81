// Package redistest starts real redis-server processes for tests: a single
// server, a Redis Cluster of several masters, or a master with replicas and
// Sentinels. Every server listens on a free 127.0.0.1 port, keeps its files
// in a test temporary directory, and is killed (by PID) at test cleanup.
//
// The redis-server binary is found on PATH, or at $REDIS_SERVER. Tests that
// need it call Start (or a sibling), which skips the test when no binary is
// found and TEST_REQUIRE_DEPS is unset, and fails it otherwise.
//
// Servers start with persistence off (--save "" --appendonly no) unless
// Options.AOF is set. Nothing here starts a goroutine, except a Proxy (a
// network partition in front of a server), whose goroutines stop at test
// cleanup.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/testcert"
	"github.com/syncgate/syncgate/internal/testdeps"
)

// Options configures a server started by Start.
type Options struct {
	// AOF turns on the append-only file with appendfsync always, so a
	// server killed with SIGKILL and restarted keeps every acknowledged
	// write.
	AOF bool
	// Args are extra redis-server arguments, e.g. "--maxmemory", "10mb".
	Args []string
	// Port is the port to listen on; 0 picks a free one.
	Port int
	// Dir is the working directory; empty means a new t.TempDir().
	Dir string
	// User and Password, when set, create an ACL user with every
	// permission and turn the default user off: a client must log in
	// (AUTH user password) before any command. Password alone is the
	// default user's password (requirepass).
	User, Password string
	// Rules, with User, are the user's ACL rules instead of every
	// permission ("~*", "&*", "+@all"), e.g. "~sg*", "-@all", "+ping".
	Rules []string
	// TLS adds a TLS port (TLSAddr) with a certificate, key and CA
	// generated into Dir (TLSFiles); clients may present a certificate
	// signed by that CA, and need not. The plain port stays open for
	// the helpers here.
	TLS bool
	// TLSFiles, with TLS, are used instead of generating certificates
	// (servers that must trust each other share them).
	TLSFiles *testcert.Files
}

// Server is one redis-server process.
type Server struct {
	t    testing.TB
	opts Options
	bin  string
	port int
	dir  string

	tlsPort  int
	tlsFiles testcert.Files

	mu  sync.Mutex
	cmd *exec.Cmd // nil while stopped
}

// Binary returns the redis-server binary to use, or "" when there is none.
func Binary() string {
	if p := os.Getenv("REDIS_SERVER"); p != "" {
		return p
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return ""
	}
	return p
}

// Require skips (or, under make test, fails: see testdeps) t when no
// redis-server binary is available, and returns the binary.
func Require(t testing.TB) string {
	t.Helper()
	bin := Binary()
	if bin == "" {
		testdeps.Missing(t, "redis-server")
	}
	return bin
}

// Start starts a redis-server and registers its kill at cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := newServer(t, opts)
	if err := s.start(); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return s
}

func newServer(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Require(t)
	dir := opts.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	s := &Server{t: t, opts: opts, bin: bin, port: opts.Port, dir: dir}
	t.Cleanup(s.Kill)
	if opts.TLS && opts.TLSFiles != nil {
		s.tlsFiles = *opts.TLSFiles
	} else if opts.TLS {
		f, err := testcert.WriteDir(dir)
		if err != nil {
			t.Fatalf("redistest: certificates: %v", err)
		}
		s.tlsFiles = f
	}
	return s
}

// TLSAddr is the TLS port's address, 127.0.0.1:port ("" without TLS).
func (s *Server) TLSAddr() string {
	if !s.opts.TLS {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tlsPort))
}

// TLSFiles are the server's CA, certificate and key (the certificate
// also works as a client certificate).
func (s *Server) TLSFiles() testcert.Files { return s.tlsFiles }

// Addr is the server's address, 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the server's port.
func (s *Server) Port() int { return s.port }

// Dir is the server's working directory (AOF, config and log files).
func (s *Server) Dir() string { return s.dir }

// PID is the process id, or 0 while the server is stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *Server) args() []string {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--logfile", "redis.log",
		"--protected-mode", "no",
		// Replicas sync at once (Redis 7 waits 5s for more replicas).
		"--repl-diskless-sync-delay", "0",
	}
	if s.opts.AOF {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	switch {
	case s.opts.User != "":
		rules := s.opts.Rules
		if rules == nil {
			rules = []string{"~*", "&*", "+@all"}
		}
		args = append(args, "--user", "default", "off",
			"--user", s.opts.User, "on", ">"+s.opts.Password)
		args = append(args, rules...)
	case s.opts.Password != "":
		args = append(args, "--requirepass", s.opts.Password)
	}
	if s.opts.TLS {
		args = append(args, "--tls-port", strconv.Itoa(s.tlsPort),
			"--tls-cert-file", s.tlsFiles.Cert, "--tls-key-file", s.tlsFiles.Key,
			"--tls-ca-cert-file", s.tlsFiles.CA, "--tls-auth-clients", "optional")
	}
	return append(args, s.opts.Args...)
}

// start launches the process and waits until it answers PING. With port
// 0 it picks a free port, retrying when another process takes it first.
func (s *Server) start() error {
	pick := s.port == 0
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if pick {
			if s.port, err = FreePort(); err != nil {
				return err
			}
			if s.opts.TLS {
				if s.tlsPort, err = FreePort(); err != nil {
					return err
				}
			}
		}
		if err = s.launch(s.args()); err == nil {
			return nil
		}
		if !pick {
			break
		}
	}
	return err
}

// launch runs bin with args in s.dir and waits for the server to answer.
func (s *Server) launch(args []string) error {
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	// Files, not pipes: no copying goroutines.
	cmd.Stdout, cmd.Stderr = nil, nil
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	if err := WaitReady(s.Addr(), 10*time.Second); err != nil {
		s.Kill()
		return fmt.Errorf("redis-server on port %d: %w; log:\n%s", s.port, err, s.Log())
	}
	return nil
}

// Kill stops the server with SIGKILL (no shutdown, no save) and waits for
// the process to exit. Killing a stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// Pause stops the server with SIGSTOP: its connections stay open but it
// answers nothing (a hung process), until Resume. Kill works on a paused
// server.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Restart starts a killed server again on the same port and directory (an
// AOF server reloads its data).
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		// The port may linger briefly after the kill.
		if err = s.launch(s.args()); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart: %v", err)
}

// Log returns the server's log file.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return string(b)
}

// Do sends one command and returns its reply rendered as text (see Do),
// logged in as Options.User when set.
func (s *Server) Do(args ...string) (string, error) {
	if s.opts.User != "" || s.opts.Password != "" {
		return DoAuth(s.Addr(), s.opts.User, s.opts.Password, args...)
	}
	return Do(s.Addr(), args...)
}

// CheckPTTL fails the test unless key's PTTL is want minus at most the
// time since its last use (2 s, or half of want when shorter).
func (s *Server) CheckPTTL(key string, want time.Duration) {
	s.t.Helper()
	ms, err := strconv.ParseInt(s.MustDo("PTTL", key), 10, 64)
	if err != nil {
		s.t.Fatal(err)
	}
	got := time.Duration(ms) * time.Millisecond
	if got > want || got < want-min(2*time.Second, want/2) {
		s.t.Fatalf("PTTL %s = %v, want %v (minus the time since the last use)", key, got, want)
	}
}

// MustDo is Do that fails the test on error.
func (s *Server) MustDo(args ...string) string {
	s.t.Helper()
	out, err := s.Do(args...)
	if err != nil {
		s.t.Fatalf("redistest: %s on %s: %v", strings.Join(args, " "), s.Addr(), err)
	}
	return out
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitReady polls addr with PING until it answers PONG or timeout passes.
func WaitReady(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for wait := 2 * time.Millisecond; time.Now().Before(deadline); wait = min(2*wait, 50*time.Millisecond) {
		var out string
		if out, err = Do(addr, "PING"); err == nil && out == "PONG" {
			return nil
		}
		if err != nil && strings.HasPrefix(err.Error(), "NOAUTH") {
			return nil // up, and wants a login
		}
		if err == nil {
			err = fmt.Errorf("PING answered %q", out)
		}
		time.Sleep(wait)
	}
	return err
}

// Do opens a connection to addr, sends one command and returns the reply:
// a status or bulk string as is, an integer in decimal, an array as its
// elements joined by newlines (nested arrays flattened), nil as "". A
// Redis error reply is returned as an error.
func Do(addr string, args ...string) (string, error) {
	return do(addr, nil, args)
}

// DoAuth is Do logged in as user with password (AUTH first, on the same
// connection); an empty user sends AUTH password.
func DoAuth(addr, user, password string, args ...string) (string, error) {
	if user == "" {
		return do(addr, []string{"AUTH", password}, args)
	}
	return do(addr, []string{"AUTH", user, password}, args)
}

func do(addr string, auth, args []string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	for _, cmd := range [][]string{auth, args} {
		if cmd == nil {
			continue
		}
		fmt.Fprintf(&b, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	if auth != nil {
		var ok []string
		if err := readReply(r, &ok); err != nil {
			return "", fmt.Errorf("AUTH: %w", err)
		}
	}
	var out []string
	if err := readReply(r, &out); err != nil {
		return "", err
	}
	return strings.Join(out, "\n"), nil
}

func readReply(r *bufio.Reader, out *[]string) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return errors.New("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		*out = append(*out, line[1:])
	case '-':
		return errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return err
		}
		if n < 0 {
			*out = append(*out, "")
			return nil
		}
		buf := make([]byte, n+2)
		if _, err := readFull(r, buf); err != nil {
			return err
		}
		*out = append(*out, string(buf[:n]))
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return err
		}
		for range n {
			if err := readReply(r, out); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

func readFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ACLInDoc fails the test unless the document at path (docs/operations.md)
// shows rules, space-separated in one code span, as the ACL of backend's
// user: a test that runs with a narrowed user checks the list it proves
// is the one the operator is told to use.
func ACLInDoc(t testing.TB, path, backend string, rules []string) {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "`" + strings.Join(rules, " ") + "`"; !strings.Contains(string(doc), want) {
		t.Fatalf("%s does not give the %s user's ACL as the test has it: %s", path, backend, want)
	}
}
