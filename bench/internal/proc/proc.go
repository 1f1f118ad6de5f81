//go:build linux

// Package proc starts, stops and measures bench's child processes. Every
// child runs in its own process group (a Ctrl-C in the terminal reaches
// only bench, which then stops the children in order) with a parent-death
// signal (the kernel kills it if bench dies), and is stopped by its PID:
// SIGTERM, then SIGKILL after a timeout. ReadStatus and ReadCPU read a
// process's memory and CPU time from /proc.
package proc

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Attr is the SysProcAttr of every child: its own process group and
// SIGKILL at the parent's death. Start sets it; commands run otherwise
// (exec.Cmd.CombinedOutput) set it themselves.
func Attr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// Child is a started process, waited for in the background.
type Child struct {
	cmd    *exec.Cmd
	pid    int
	done   chan struct{} // closed once the process has exited
	stopMu sync.Mutex
}

// Start starts cmd with Attr and waits for it in the background; Done is
// closed once it has exited. read, if not nil, runs first in the waiting
// goroutine: it reads a StdoutPipe to its end, which exec requires before
// Wait.
func Start(cmd *exec.Cmd, read func()) (*Child, error) {
	cmd.SysProcAttr = Attr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &Child{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		if read != nil {
			read()
		}
		_ = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// PID is the child's process id.
func (c *Child) PID() int { return c.pid }

// Done is closed once the child has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Exited reports whether the child has exited.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// State is how the child ended; nil before it has exited.
func (c *Child) State() *os.ProcessState {
	if !c.Exited() {
		return nil
	}
	return c.cmd.ProcessState
}

// Kill sends SIGKILL to the child (by PID) unless it has exited, and waits
// for it.
func (c *Child) Kill() {
	if c.Exited() {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

// WaitOrKill waits up to timeout for the child to exit and kills it then.
// It reports whether the child exited by itself.
func (c *Child) WaitOrKill(timeout time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(timeout):
		c.Kill()
		return false
	}
}

// Terminate sends SIGTERM and SIGKILL after timeout; it reports how the
// child ended.
func (c *Child) Terminate(timeout time.Duration) string {
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	if c.Exited() {
		return "exited by itself: " + c.cmd.ProcessState.String()
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	if c.WaitOrKill(timeout) {
		return "stopped with SIGTERM: " + c.cmd.ProcessState.String()
	}
	return fmt.Sprintf("did not stop within %s of SIGTERM; killed", timeout)
}

// FreePort is a loopback TCP port free at the time of the call.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// GatewayModule is the module path of the gateway bench measures; bench
// is a module of its own inside the gateway's repository.
const GatewayModule = "github.com/syncgate/syncgate"

// FindRepoRoot walks up from the working directory to the directory whose
// go.mod is the gateway's (GatewayModule), passing bench's own go.mod.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && modulePath(b) == GatewayModule {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod of module %s in %s or any parent: run bench from inside the repository", GatewayModule, dir)
		}
	}
}

// modulePath is the path on the module line of a go.mod file ("" if none).
func modulePath(gomod []byte) string {
	for line := range strings.Lines(string(gomod)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// BuildGateway runs `go build -o <dir>/syncgate .` in the repository root
// and returns the binary's path.
func BuildGateway(ctx context.Context, root, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "syncgate")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the gateway: %v\n%s", err, out)
	}
	return bin, nil
}

// Indent indents every line of s by two spaces (for a child's stderr in
// an error).
func Indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}
