package multinode_test

import (
	"errors"
	"github.com/syncgate/syncgate/internal/testlog"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
)

// TestNoCredentialInLogsOrMetrics: two gateways share node 1's embedded
// NATS server, which requires a user and password (node 2 has them in
// its URL). Messages cross; nothing any of them logs at debug level, no
// /metrics page and no error of a refused login shows the password.
func TestNoCredentialInLogsOrMetrics(t *testing.T) {
	const user, secret = "syncgate", "pw-7f3a9c-do-not-log"
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	b1 := jetstream.New(jetstream.Config{Log: log, Embedded: jetstream.EmbeddedConfig{
		Listen: "127.0.0.1:0", StoreDir: t.TempDir(), User: user, Password: secret, Log: log,
	}})
	n1 := startNodeLog(t, b1, log, nil)
	url := strings.Replace(b1.ClientURL(), "nats://", "nats://"+user+":"+secret+"@", 1)
	b2 := jetstream.New(jetstream.Config{URL: url, Log: log})
	n2 := startNodeLog(t, b2, log, nil)
	crossNode(t, n1, n2, true)

	// A refused login: the error names the server, not the password.
	bad := jetstream.New(jetstream.Config{URL: strings.Replace(url, secret, secret+"-wrong", 1), Log: log})
	err := bad.Start(t.Context(), brokertest.NewRecorder())
	if err == nil {
		bad.Close()
		t.Fatal("a wrong password was accepted")
	}
	if !errors.Is(err, jetstream.ErrAuth) {
		t.Errorf("wrong password: %v, want ErrAuth", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("the error shows the password: %v", err)
	}

	checkMetrics(t, secret, n1, n2)
	n1.shutdown(t)
	n2.shutdown(t)
	if out := logs.String(); strings.Contains(out, secret) {
		t.Errorf("the logs show the password:\n%s", out)
	} else if !strings.Contains(out, "nats") {
		t.Errorf("nothing was logged (the check would be empty):\n%s", out)
	}
}

// TestNoRedisCredentialInLogsOrMetrics: the same for two gateways on a
// Redis that requires an ACL user, and a restart of that Redis (the nodes
// reconnect and log in again).
func TestNoRedisCredentialInLogsOrMetrics(t *testing.T) {
	const user, secret = "syncgate", "pw-91be4d-do-not-log"
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := redistest.Start(t, redistest.Options{User: user, Password: secret})
	nb := func() *redis.Broker {
		return redis.New(redis.Config{Addrs: []string{srv.Addr()}, Username: user, Password: secret, Logger: log})
	}
	n1, n2 := startNodeLog(t, nb(), log, nil), startNodeLog(t, nb(), log, nil)
	crossNodeEpochs(t, n1, n2, true, false)
	srv.Restart()
	checkMetrics(t, secret, n1, n2)

	bad := redis.New(redis.Config{Addrs: []string{srv.Addr()}, Username: user, Password: secret + "-wrong", Logger: log})
	err := bad.Start(t.Context(), brokertest.NewRecorder())
	if err == nil {
		bad.Close()
		t.Fatal("a wrong password was accepted")
	}
	if !strings.Contains(err.Error(), "WRONGPASS") || strings.Contains(err.Error(), secret) {
		t.Errorf("wrong password: %v, want WRONGPASS and no password", err)
	}
	n1.shutdown(t)
	n2.shutdown(t)
	if out := logs.String(); strings.Contains(out, secret) {
		t.Errorf("the logs show the password:\n%s", out)
	} else if !strings.Contains(out, "redis") {
		t.Errorf("nothing was logged (the check would be empty):\n%s", out)
	}
}

// checkMetrics fails t if a node's /metrics shows secret.
func checkMetrics(t *testing.T, secret string, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		resp, err := http.Get("http://" + n.metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "syncgate_") {
			t.Fatalf("/metrics: %d %.200q", resp.StatusCode, body)
		}
		if strings.Contains(string(body), secret) {
			t.Errorf("/metrics of %s shows the password", n.addr)
		}
	}
}
