package redistest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/internal/testcert"
)

// Sentinel is a monitored master with replicas and Sentinel processes.
type Sentinel struct {
	Name      string // the master name sentinels know it by
	Master    *Server
	Replicas  []*Server
	Sentinels []*Server
	tlsFiles  *testcert.Files // nil without TLS
}

// linkPort is the port servers and sentinels reach srv on: its TLS port
// with TLS.
func (s *Sentinel) linkPort(srv *Server) int {
	if s.tlsFiles != nil {
		return srv.tlsPort
	}
	return srv.Port()
}

// TLSAddrs returns the sentinels' TLS addresses (nil without TLS).
func (s *Sentinel) TLSAddrs() []string {
	if s.tlsFiles == nil {
		return nil
	}
	addrs := make([]string, len(s.Sentinels))
	for i, sn := range s.Sentinels {
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(sn.tlsPort))
	}
	return addrs
}

// TLSFiles are the shared CA, certificate and key (zero without TLS).
func (s *Sentinel) TLSFiles() testcert.Files {
	if s.tlsFiles == nil {
		return testcert.Files{}
	}
	return *s.tlsFiles
}

// SentinelOptions configures StartSentinel.
type SentinelOptions struct {
	Name      string // default "mymaster"
	Replicas  int    // default 1
	Sentinels int    // default 3; the quorum is a majority
	// DownAfter is down-after-milliseconds; default 500ms.
	DownAfter time.Duration
	// User and Password: the master and replicas require this ACL user
	// (see Options); replicas and sentinels log in with it.
	User, Password string
	// SentinelPassword, when set, is the sentinels' own password
	// (requirepass in sentinel mode).
	SentinelPassword string
	// TLS: every server and sentinel gets a TLS port with one shared test
	// CA (TLSFiles); replication and the sentinels' links use TLS, and
	// the sentinels name the master by its TLS port. Clients dial the
	// sentinels' TLS ports (TLSAddrs).
	TLS bool
}

// StartSentinel starts a master, its replicas and the sentinels watching
// it, and waits until every sentinel sees the master and its replicas.
func StartSentinel(t testing.TB, opts SentinelOptions) *Sentinel {
	t.Helper()
	if opts.Name == "" {
		opts.Name = "mymaster"
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.Sentinels <= 0 {
		opts.Sentinels = 3
	}
	if opts.DownAfter <= 0 {
		opts.DownAfter = 500 * time.Millisecond
	}
	s := &Sentinel{Name: opts.Name}
	var auth []string // how a replica logs in to its master
	if opts.User != "" {
		auth = []string{"--masteruser", opts.User, "--masterauth", opts.Password}
	}
	node := Options{User: opts.User, Password: opts.Password}
	if opts.TLS {
		f := testcert.Write(t)
		s.tlsFiles = &f
		node.TLS, node.TLSFiles = true, &f
		auth = append(auth, "--tls-replication", "yes")
	}
	// Any of them may become the master: the same arguments for all.
	master := node
	master.Args = auth
	s.Master = Start(t, master)
	for range opts.Replicas {
		r := node
		r.Args = append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(s.linkPort(s.Master))}, auth...)
		s.Replicas = append(s.Replicas, Start(t, r))
	}
	quorum := opts.Sentinels/2 + 1
	for range opts.Sentinels {
		s.Sentinels = append(s.Sentinels, startSentinel(t, s.Name, s.linkPort(s.Master), quorum, opts, s.tlsFiles))
	}
	for _, r := range s.Replicas {
		waitFor(t, 10*time.Second, "replica in sync", func() error {
			out, err := r.Do("INFO", "replication")
			if err != nil {
				return err
			}
			if !strings.Contains(out, "master_link_status:up") {
				return fmt.Errorf("replica %s not linked yet", r.Addr())
			}
			return nil
		})
	}
	for _, sn := range s.Sentinels {
		waitFor(t, 10*time.Second, "sentinel to see replicas and peers", func() error {
			out, err := sn.Do("SENTINEL", "MASTER", s.Name)
			if err != nil {
				return err
			}
			fields := strings.Split(out, "\n")
			get := func(k string) string {
				for i := 0; i+1 < len(fields); i += 2 {
					if fields[i] == k {
						return fields[i+1]
					}
				}
				return ""
			}
			if get("num-slaves") != strconv.Itoa(opts.Replicas) || get("num-other-sentinels") != strconv.Itoa(opts.Sentinels-1) {
				return fmt.Errorf("sentinel %s: %s replicas, %s other sentinels", sn.Addr(), get("num-slaves"), get("num-other-sentinels"))
			}
			return nil
		})
	}
	return s
}

// Addrs returns the sentinels' addresses.
func (s *Sentinel) Addrs() []string {
	addrs := make([]string, len(s.Sentinels))
	for i, sn := range s.Sentinels {
		addrs[i] = sn.Addr()
	}
	return addrs
}

// MasterAddr asks the first reachable sentinel for the current master.
func (s *Sentinel) MasterAddr() (string, error) {
	var err error
	for _, sn := range s.Sentinels {
		var out string
		if out, err = sn.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.Name); err == nil {
			parts := strings.Split(out, "\n")
			if len(parts) == 2 {
				return parts[0] + ":" + parts[1], nil
			}
			err = fmt.Errorf("sentinel %s answered %q", sn.Addr(), out)
		}
	}
	return "", err
}

func startSentinel(t testing.TB, name string, masterPort, quorum int, opts SentinelOptions, tlsFiles *testcert.Files) *Server {
	t.Helper()
	downAfter := opts.DownAfter
	srv := newServer(t, Options{Password: opts.SentinelPassword, TLS: tlsFiles != nil, TLSFiles: tlsFiles})
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if srv.port, err = FreePort(); err != nil {
			break
		}
		if tlsFiles != nil {
			if srv.tlsPort, err = FreePort(); err != nil {
				break
			}
		}
		conf := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
dir %s
logfile sentinel.log
sentinel monitor %s 127.0.0.1 %d %d
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s 5000
sentinel parallel-syncs %s 1
`, srv.port, srv.dir, name, masterPort, quorum, name, downAfter.Milliseconds(), name, name)
		if opts.User != "" {
			conf += fmt.Sprintf("sentinel auth-user %s %s\nsentinel auth-pass %s %s\n", name, opts.User, name, opts.Password)
		}
		if opts.SentinelPassword != "" {
			conf += fmt.Sprintf("requirepass %s\n", opts.SentinelPassword)
		}
		if tlsFiles != nil {
			conf += fmt.Sprintf("tls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients optional\ntls-replication yes\n",
				srv.tlsPort, tlsFiles.Cert, tlsFiles.Key, tlsFiles.CA)
		}
		path := filepath.Join(srv.dir, "sentinel.conf")
		if err = os.WriteFile(path, []byte(conf), 0o644); err != nil {
			break
		}
		if err = srv.launch([]string{path, "--sentinel"}); err == nil {
			return srv
		}
	}
	t.Fatalf("redistest: start sentinel: %v", err)
	return nil
}
