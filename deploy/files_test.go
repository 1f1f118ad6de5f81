package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/gateway"
	"github.com/syncgate/syncgate/gateway/serverapi"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/redistest"
	"github.com/syncgate/syncgate/internal/testdeps"
	"github.com/syncgate/syncgate/internal/wstest"
)

// TestPrometheusRules: promtool accepts the rules and their unit tests
// pass (the alerts fire on the series they are for, and not on others).
func TestPrometheusRules(t *testing.T) {
	bin := testdeps.Binary(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "syncgate-rules.yml"},
		{"test", "rules", "syncgate-rules.test.yml"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

var (
	metricName = regexp.MustCompile(`\bsyncgate_[a-z_]+`)
	recordName = regexp.MustCompile(`\bsyncgate:[a-z0-9_:]+`)
)

// TestRulesAndDashboardUseExportedMetrics: every metric the rules and the
// dashboard name is one a node exports (a renamed metric fails here, not
// silently on the dashboard), and every recorded series they use is
// recorded.
func TestRulesAndDashboardUseExportedMetrics(t *testing.T) {
	exported := scrapeNames(t)

	var rules struct {
		Groups []struct {
			Rules []struct{ Record, Alert, Expr string }
		}
	}
	b, err := os.ReadFile("prometheus/syncgate-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("rules: %v", err)
	}
	recorded := map[string]bool{}
	var exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
			exprs = append(exprs, r.Expr)
		}
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	b, err = os.ReadFile("grafana/syncgate-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			if !exported[m] {
				t.Errorf("%q names %s, which a node does not export", e, m)
			}
		}
		for _, r := range recordName.FindAllString(e, -1) {
			if !recorded[r] {
				t.Errorf("%q uses %s, which no rule records", e, r)
			}
		}
	}
	for _, want := range []string{"syncgate_broker_up", "syncgate_outbox_messages", "syncgate_slow_consumer_disconnects_total",
		"syncgate_limit_rejections_total", "syncgate_catchup_total", "syncgate_publish_duration_seconds_bucket",
		"syncgate_proxy_errors_total", "syncgate_proxy_queue_full_total", "syncgate_proxy_duration_seconds_bucket",
		"syncgate_proxy_queued_bytes", "syncgate_api_requests_total", "syncgate_control_rejected_total"} {
		if !strings.Contains(strings.Join(exprs, "\n"), want) {
			t.Errorf("no rule or panel uses %s", want)
		}
	}
}

// scrapeNames runs a node on a real Redis (a backend with an outbox), with
// an event proxy hook and the server API configured, and returns the
// metric names its /metrics lists.
func scrapeNames(t *testing.T) map[string]bool {
	t.Helper()
	rds := redistest.Start(t, redistest.Options{})
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Broker.Type = "redis"
	cfg.Proxy.Publish.URL = "http://127.0.0.1:1/publish" // never called
	srv, err := gateway.New(cfg.Gateway(), redis.New(redis.Config{Addrs: []string{rds.Addr()}}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := serverapi.New(serverapi.Config{Keys: []string{"scrape-test-key-0123456789"}}, srv, nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeMetrics(ln) }()
	addr, served := wstest.Serve(t, srv, cfg.Listen)
	defer func() {
		ctx, cancel := contextWithTimeout()
		defer cancel()
		_ = srv.Shutdown(ctx)
		for _, c := range []<-chan error{done, served} {
			if err := <-c; !errors.Is(err, gateway.ErrServerClosed) {
				t.Errorf("serve: %v", err)
			}
		}
	}()
	// A labelled counter lists nothing until it counts once: make the node
	// disconnect a client (a text frame that is not UTF-8: bad_request).
	c := wstest.Dial(t, "ws://"+addr+"/ws")
	c.SendRaw("\xff")
	if err := c.WaitClosed(); err == nil {
		t.Fatal("the node kept a client that sent invalid UTF-8")
	}
	resp, err := (&http.Client{Timeout: wait}).Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	names := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if m := metricName.FindString(line); m != "" && strings.HasPrefix(line, m) {
			names[m] = true
		}
	}
	if !names["syncgate_connections"] {
		t.Fatalf("/metrics lists no syncgate_connections:\n%s", body)
	}
	return names
}

// TestProxyTimeouts: the shipped proxies keep a quiet WebSocket or SSE
// stream open for more than 2 x client.ping_interval.
func TestProxyTimeouts(t *testing.T) {
	least := 2 * config.Default().Client.PingInterval
	nginx, err := os.ReadFile("nginx/syncgate.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, loc := range []string{"location = /ws {", "location = /sse {"} {
		i := bytes.Index(nginx, []byte(loc))
		if i < 0 {
			t.Fatalf("nginx: no %q", loc)
		}
		block := string(nginx[i:])
		block = block[:strings.Index(block, "}")]
		for _, d := range []string{"proxy_read_timeout", "proxy_send_timeout"} {
			if got := directive(t, block, d); got <= least {
				t.Errorf("nginx %s %s %v, want above %v", loc, d, got, least)
			}
		}
	}
	haproxy, err := os.ReadFile("haproxy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"timeout tunnel", "timeout client", "timeout server"} {
		if got := directive(t, string(haproxy), d); got <= least {
			t.Errorf("haproxy %s %v, want above %v", d, got, least)
		}
	}
	if !strings.Contains(string(haproxy), "option httpchk GET /readyz") {
		t.Error("haproxy does not check /readyz")
	}
}

// directive is the duration after name at the start of a line of s.
func directive(t *testing.T, s, name string) time.Duration {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(name) + `\s+(\d+)(s|m)\b`).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no %q with a duration in seconds or minutes", name)
	}
	n, _ := strconv.Atoi(m[1])
	if m[2] == "m" {
		return time.Duration(n) * time.Minute
	}
	return time.Duration(n) * time.Second
}

// TestSystemdUnit: systemd-analyze verify accepts the unit (where systemd
// is installed, which make test requires), and its stop timeout and file
// limit fit the node's defaults.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("systemd/syncgate.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	def := config.Default()
	if got := directive(t, strings.ReplaceAll(unit, "=", " "), "TimeoutStopSec"); got <= def.Server.DrainWindow+10*time.Second {
		t.Errorf("TimeoutStopSec %v, want above server.drain_window + 10 s (%v)", got, def.Server.DrainWindow+10*time.Second)
	}
	m := regexp.MustCompile(`(?m)^LimitNOFILE=(\d+)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("no LimitNOFILE")
	}
	if n, _ := strconv.Atoi(m[1]); n <= def.Server.MaxConnections {
		t.Errorf("LimitNOFILE %d, want above server.max_connections %d", n, def.Server.MaxConnections)
	}

	bin := testdeps.Binary(t, "systemd-analyze")
	// verify wants ExecStart's binary to exist: this test binary stands in.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(unit, "ExecStart=/usr/local/bin/syncgate ") {
		t.Fatal("ExecStart no longer runs /usr/local/bin/syncgate, which the test replaces")
	}
	path := filepath.Join(t.TempDir(), "syncgate.service")
	writeFile(t, path, strings.ReplaceAll(unit, "ExecStart=/usr/local/bin/syncgate ", "ExecStart="+self+" "))
	out, err := exec.Command(bin, "verify", path).CombinedOutput()
	// verify exits 0 on unknown keys and bad values, printing them.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestKubernetesManifests parses the manifests and checks what the docs
// promise: readiness on /readyz, a grace period above preStop + drain, a
// PodDisruptionBudget, and a ConfigMap the node loads (with the Secret's
// variable names) without error.
func TestKubernetesManifests(t *testing.T) {
	docs := map[string]map[string]any{}
	for _, f := range []string{"kubernetes/syncgate.yaml", "kubernetes/redis.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var d map[string]any
			if err := dec.Decode(&d); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			kind, _ := d["kind"].(string)
			name, _ := dig(d, "metadata", "name").(string)
			if kind == "" || name == "" || d["apiVersion"] == nil {
				t.Fatalf("%s: a document without apiVersion, kind or metadata.name: %v", f, d)
			}
			docs[kind+"/"+name] = d
		}
	}
	for _, want := range []string{"Deployment/syncgate", "Service/syncgate", "ConfigMap/syncgate", "PodDisruptionBudget/syncgate", "StatefulSet/redis", "Service/redis"} {
		if docs[want] == nil {
			t.Errorf("no %s", want)
		}
	}
	dep := docs["Deployment/syncgate"]
	if dep == nil {
		t.FailNow()
	}
	pod := dig(dep, "spec", "template", "spec").(map[string]any)
	c := dig(pod, "containers").([]any)[0].(map[string]any)
	if p := dig(c, "readinessProbe", "httpGet", "path"); p != "/readyz" {
		t.Errorf("readiness probe on %v, want /readyz", p)
	}
	if p := dig(c, "livenessProbe", "httpGet", "path"); p != "/healthz" {
		t.Errorf("liveness probe on %v, want /healthz", p)
	}
	preStop, _ := dig(c, "lifecycle", "preStop", "sleep", "seconds").(int)
	if preStop <= 0 {
		t.Error("no preStop sleep")
	}

	cmYAML, _ := dig(docs["ConfigMap/syncgate"], "data", "config.yaml").(string)
	file := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, file, cmYAML)
	env := []string{"SYNCGATE_AUTH_HMAC_SECRET=" + strings.Repeat("s", 32), "SYNCGATE_METRICS_TOKEN=" + strings.Repeat("m", 16), "SYNCGATE_REDIS_PASSWORD=p",
		"SYNCGATE_API_KEYS=" + strings.Repeat("k", 48), "SYNCGATE_API_CLUSTER_SECRET=" + strings.Repeat("c", 64)}
	cfg, err := config.LoadFrom(file, env)
	if err != nil {
		t.Fatalf("the ConfigMap's config.yaml with the Secret's variables: %v", err)
	}
	// Several replicas: server API actions must reach every node.
	if cfg.API.Listen == "off" || cfg.API.ClusterSecret == "" {
		t.Errorf("api.listen %q, cluster secret set %v: want the server API on, with api.cluster_secret", cfg.API.Listen, cfg.API.ClusterSecret != "")
	}
	grace, _ := pod["terminationGracePeriodSeconds"].(int)
	if need := time.Duration(preStop)*time.Second + cfg.Server.DrainWindow + 10*time.Second; time.Duration(grace)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d, want above preStop + server.drain_window + 10 s = %v", grace, need)
	}
	if dig(docs["PodDisruptionBudget/syncgate"], "spec", "maxUnavailable") != 1 {
		t.Error("the PodDisruptionBudget lets more than one node drain at once")
	}
}

// dig follows keys through nested YAML maps; nil when one is missing.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
