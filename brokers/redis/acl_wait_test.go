package redis_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redis"
	"github.com/syncgate/syncgate/internal/redistest"
)

// waitACLSentence is how docs/operations.md adds WAIT to the minimal ACL.
const waitACLSentence = "`redis.wait_replicas` above 0 adds `+wait`"

// startACLReplicated starts a master whose only usable user for the node
// holds exactly rules, and one replica of it in sync (the replica logs
// in to the master as a second user that may only replicate). It
// returns the master.
func startACLReplicated(t *testing.T, user, pass string, rules []string) *redistest.Server {
	t.Helper()
	const replUser, replPass = "replica", "repl-secret-0123456789"
	master := redistest.Start(t, redistest.Options{User: user, Password: pass, Rules: rules,
		Args: []string{"--user", replUser, "on", ">" + replPass, "-@all", "+psync", "+replconf", "+ping"}})
	replica := redistest.Start(t, redistest.Options{Args: []string{"--masteruser", replUser, "--masterauth", replPass}})
	host, port, _ := strings.Cut(master.Addr(), ":")
	replica.MustDo("REPLICAOF", host, port)
	brokertest.Eventually(t, 10*time.Second, "the replica in sync", func() bool {
		out, err := replica.Do("INFO", "replication")
		return err == nil && strings.Contains(out, "master_link_status:up")
	})
	return master
}

// TestConformanceMinimalACLWait runs the whole conformance suite with
// redis.wait_replicas 1 against a master with one replica, as a user
// holding exactly the documented minimal list plus +wait (the addition
// docs/operations.md gives for wait_replicas above 0); then checks that
// the same list without +wait cannot publish at all (the WAIT is
// refused, so no publication is acked).
func TestConformanceMinimalACLWait(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(strings.Fields(string(doc)), " "), waitACLSentence) {
		t.Fatalf("docs/operations.md no longer says %s", waitACLSentence)
	}
	const user, pass = "syncgate", "acl-secret-0123456789"
	withWait := append(slices.Clone(minimalACL), "+wait")
	master := startACLReplicated(t, user, pass, withWait)
	cfg := testConfig(master.Addr())
	cfg.Username, cfg.Password = user, pass
	cfg.WaitReplicas = 1
	brokertest.Nodes(suiteFeatures, func() brokers.Broker { return redis.New(cfg) }).Run(t)

	t.Run("without +wait", func(t *testing.T) {
		master := startACLReplicated(t, user, pass, minimalACL)
		cfg := testConfig(master.Addr())
		cfg.Username, cfg.Password = user, pass
		cfg.WaitReplicas = 1
		br := redis.New(cfg)
		brokertest.StartBench(t, br)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if pos, err := br.Publish(ctx, "doc:wait", []byte(`{}`)); err == nil {
			t.Fatalf("published at %+v without +wait; want the publication refused or held", pos)
		} else {
			t.Logf("without +wait: %v", err)
		}
	})
}
