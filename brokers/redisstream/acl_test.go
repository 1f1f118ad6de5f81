package redisstream_test

import (
	"strings"
	"testing"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/redisstream"
	"github.com/syncgate/syncgate/internal/redistest"
)

// minimalACL is the Redis ACL docs/operations.md gives a node's user for
// the redis-streams backend with the default prefix on a single server or
// shards: its keys (it uses no pub/sub channel), and only the commands the
// node sends (scripts' commands included: Redis checks them against the
// user too).
var minimalACL = []string{"resetkeys", "~sgs*", "resetchannels", "-@all",
	"+auth", "+hello", "+ping", "+evalsha", "+eval", "+script|load", "+xread", "+client|id", "+client|unblock",
	"+hget", "+hmget", "+hset", "+hdel", "+hincrby", "+del", "+expire", "+pexpire", "+pttl", "+time",
	"+xadd", "+xrange", "+xrevrange", "+zadd", "+zrem", "+zrange", "+zrangebyscore"}

// TestConformanceMinimalACL runs the whole conformance suite as an ACL
// user holding exactly the documented permissions: a command or key
// pattern the node needs and the list lacks fails the suite (checked by
// taking out +xread, +client|id, +xrevrange and +time one at a time; not
// +client|unblock: without it a new subscription waits for the running
// XREAD to time out, which the suite does not notice). The list in the
// test is the one in the doc.
func TestConformanceMinimalACL(t *testing.T) {
	redistest.ACLInDoc(t, "../../docs/operations.md", "redis-streams", minimalACL)
	const user, pass = "syncgate", "acl-secret-0123456789"
	srv := redistest.Start(t, redistest.Options{User: user, Password: pass, Rules: minimalACL})
	cfg := testConfig(srv.Addr())
	cfg.Username, cfg.Password = user, pass
	brokertest.Nodes(suiteFeatures, func() brokers.Broker { return redisstream.New(cfg) }).Run(t)
	if _, err := redistest.DoAuth(srv.Addr(), user, pass, "SET", "other", "1"); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("SET outside the prefix: %v, want NOPERM", err)
	}
}
