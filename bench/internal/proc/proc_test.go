//go:build linux

package proc

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTerminate(t *testing.T) {
	c, err := Start(exec.Command("sleep", "30"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Exited() || c.State() != nil {
		t.Fatal("exited at once")
	}
	if got := c.Terminate(10 * time.Second); !strings.HasPrefix(got, "stopped with SIGTERM") {
		t.Fatalf("Terminate = %q", got)
	}
	if got := c.Terminate(time.Second); !strings.HasPrefix(got, "exited by itself") {
		t.Fatalf("second Terminate = %q", got)
	}
}

// A child that ignores SIGTERM is killed after the timeout.
func TestTerminateKills(t *testing.T) {
	c, err := Start(exec.Command("sh", "-c", `trap "" TERM; exec sleep 30`), nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the trap be set
	if got := c.Terminate(200 * time.Millisecond); !strings.Contains(got, "killed") {
		t.Fatalf("Terminate = %q", got)
	}
	if !c.Exited() {
		t.Fatal("still running")
	}
}

// read runs to the end of stdout before the child is waited for.
func TestStartRead(t *testing.T) {
	cmd := exec.Command("echo", "hello")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	c, err := Start(cmd, func() { got, _ = io.ReadAll(out) })
	if err != nil {
		t.Fatal(err)
	}
	if !c.WaitOrKill(10 * time.Second) {
		t.Fatal("echo did not exit")
	}
	if string(got) != "hello\n" {
		t.Fatalf("read %q", got)
	}
}

func TestTailBuffer(t *testing.T) {
	tb := NewTailBuffer(4)
	_, _ = tb.Write([]byte("abc"))
	if got := tb.String(); got != "abc" {
		t.Fatalf("String = %q", got)
	}
	_, _ = tb.Write([]byte("defg"))
	if got := tb.String(); got != "[... 3 earlier bytes dropped]\ndefg" {
		t.Fatalf("String = %q", got)
	}
}

func TestReadSelf(t *testing.T) {
	st, err := ReadStatus(os.Getpid())
	if err != nil || st.RSSKiB <= 0 || st.Threads <= 0 {
		t.Fatalf("ReadStatus = %+v, %v", st, err)
	}
	if _, err := ReadCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCPU(-1); err == nil {
		t.Fatal("ReadCPU(-1): no error")
	}
}

// TestFindRepoRoot: from bench's own directory (a module of its own) the
// root is the gateway's module, two levels up from this package.
func TestFindRepoRoot(t *testing.T) {
	root, err := FindRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if want := filepath.Dir(filepath.Dir(filepath.Dir(wd))); root != want {
		t.Errorf("root %s, want %s", root, want)
	}
	for in, want := range map[string]string{
		"module github.com/syncgate/syncgate\n\ngo 1.26\n":      GatewayModule,
		"// c\nmodule \"github.com/syncgate/syncgate/bench\"\n": GatewayModule + "/bench",
		"modules x\n": "",
		"go 1.26\n":   "",
	} {
		if got := modulePath([]byte(in)); got != want {
			t.Errorf("modulePath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMachineCPU reads /proc/stat's cpu line: busy is user, nice,
// system, irq, softirq and steal; total adds idle and iowait.
func TestMachineCPU(t *testing.T) {
	m, err := parseMachineCPU([]byte("cpu  100 5 50 1000 20 3 7 2 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Busy != 1670*time.Millisecond || m.Total != 11870*time.Millisecond {
		t.Fatalf("busy %s total %s, want 1.67s and 11.87s", m.Busy, m.Total)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 3", "cpu 1 2 x 4 5 6 7 8", "cpu 1 -2 3 4 5 6 7 8"} {
		if _, err := parseMachineCPU([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	a, err := ReadMachineCPU()
	if err != nil || a.Total <= 0 || a.Busy > a.Total {
		t.Fatalf("this machine: %+v, %v", a, err)
	}
}
