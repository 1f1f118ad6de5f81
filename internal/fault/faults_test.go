package fault_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/fault"
	"github.com/syncgate/syncgate/internal/testdeps"
)

// The fault-injection check: each deliberate fault breaks one guarantee
// docs/ states, and the test named for it must fail when the package is
// built with the faultinject tag and the fault is switched on. A fault
// that every named test survives means a promise nothing checks.
var faults = []struct {
	name string
	pkg  string // relative to the module root
	run  string // -test.run pattern
	top  string // the top-level test that must fail
	want string // a piece of its failure that names the broken promise
}{
	{fault.NATSFlushNow, "brokers/nats", "^TestServerRestart$", "TestServerRestart", "may be lost"},
	{fault.NATSOutboxDropped, "brokers/nats", "^TestServerRestart$", "TestServerRestart", "may be lost"},
	{fault.NATSFlushNow, "gateway/multinode", "^TestCoreNATSServerRestart$", "TestCoreNATSServerRestart", "may be lost"},
	{fault.JetStreamRefuseOutage, "gateway/multinode", "^TestJetStreamServerRestart$", "TestJetStreamServerRestart", "the outbox must hold them"},
	{fault.JetStreamRefuseOutage, "brokers/jetstream", "^TestServerRestart$/^File$", "TestServerRestart", "the outbox must hold them"},
	{fault.JetStreamOutboxDropped, "brokers/jetstream", "^TestServerRestart$/^File$", "TestServerRestart", "are not stored"},
	{fault.RedisPresenceTTLLong, "brokers/redis/multinode", "^TestNodeCrash$", "TestNodeCrash", "want at most the presence TTL"},
	{fault.CatchUpGap, "gateway", "^TestCatchUpHeldHistory$/^ReadBeforePublishes$", "TestCatchUpHeldHistory", "no gap"},
	{fault.MergeWatermarkOffByOne, "gateway", "^TestCatchUpHeldHistory$/^ReadAfterPublishes$", "TestCatchUpHeldHistory", "no gap"},
	{fault.LiveDedupeOff, "gateway", "^TestCatchUpHeldHistory$/^Redelivered$", "TestCatchUpHeldHistory", "unexpected message"},
	{fault.LiveBeforeReply, "gateway", "^TestCatchUpHeldHistory$/^ReadBeforePublishes$", "TestCatchUpHeldHistory", "came before the sub's reply"},
	{fault.PresenceRefreshSkipped, "gateway", "^TestPresenceOutlivesTTL$", "TestPresenceOutlivesTTL", "op:leave"},
}

// TestFaultsCaught builds each package named above once with the
// faultinject tag and runs each fault's test in a child process. The
// builds use -race when this test was built with it: then every package
// the faults do not touch (nats-server, go-redis, ...) comes from the
// build cache the surrounding `go test -race ./...` fills, and only the
// packages importing internal/fault are compiled again.
func TestFaultsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs test binaries; not in -short")
	}
	covered := map[string]bool{}
	for _, f := range faults {
		covered[f.name] = true
	}
	for _, n := range fault.Names() {
		if !covered[n] {
			t.Errorf("fault %q has no test that must catch it", n)
		}
	}
	goBin := testdeps.Binary(t, "go") // builds the faultinject test binaries
	root := moduleRoot(t, goBin)
	bin := t.TempDir()

	// One binary per package, two builds at a time (the machines running
	// this have few cores).
	binOf := map[string]string{}
	for _, f := range faults {
		binOf[f.pkg] = filepath.Join(bin, strings.ReplaceAll(f.pkg, "/", "_")+".test")
	}
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	var mu sync.Mutex
	built := map[string]bool{}
	for pkg, out := range binOf {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			args := []string{"test", "-c", "-tags", "faultinject", "-o", out}
			if raceBuild {
				args = append(args, "-race")
			}
			cmd := exec.CommandContext(t.Context(), goBin, append(args, "./"+pkg)...)
			cmd.Dir = root
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("building %s with -tags faultinject: %v\n%s", pkg, err, b)
				return
			}
			mu.Lock()
			built[pkg] = true
			mu.Unlock()
		})
	}
	wg.Wait()

	for _, f := range faults {
		if !built[f.pkg] {
			continue
		}
		t.Run(f.name+"@"+f.pkg, func(t *testing.T) {
			t.Parallel()
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			cmd := exec.CommandContext(t.Context(), binOf[f.pkg], "-test.run="+f.run, "-test.count=1", "-test.timeout=2m")
			cmd.Dir = filepath.Join(root, f.pkg) // tests read testdata from their own dir
			cmd.Env = append(os.Environ(), fault.Env+"="+f.name)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if err == nil && strings.Contains(out.String(), "--- SKIP: "+f.top) {
				testdeps.Missing(t, fmt.Sprintf("a dependency of %s (fault %q: it skipped:\n%s)", f.top, f.name, out.Bytes()))
			}
			if err == nil {
				t.Fatalf("fault %q survived: %s (%s, %s) passed with it:\n%s", f.name, f.top, f.pkg, f.run, out.Bytes())
			}
			s := out.String()
			if !strings.Contains(s, "--- FAIL: "+f.top+" ") || !strings.Contains(s, f.want) {
				t.Fatalf("fault %q: %s failed, but not with %q in a --- FAIL of %s (broken for another reason?):\n%s", f.name, f.pkg, f.want, f.top, s)
			}
			t.Logf("fault %q caught by %s in %v", f.name, f.top, time.Since(start).Round(time.Millisecond))
		})
	}
}

// moduleRoot is the directory of the go.mod this package belongs to.
func moduleRoot(t *testing.T, goBin string) string {
	t.Helper()
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		t.Fatal("go env GOMOD: not in a module")
	}
	return filepath.Dir(mod)
}
