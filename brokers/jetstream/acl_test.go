package jetstream_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
)

// The NATS permissions docs/operations.md gives a node's user for the
// jetstream backend with the default prefix: its subjects, the JetStream
// API, its snapshot bucket, reply inboxes and its stream's leader
// advisories.
var (
	minimalPub = []string{"sg.>", "$JS.API.>", "$KV.SG_HISTORY_SNAP.>"}
	minimalSub = []string{"sg.>", "_INBOX.>", "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.SG_HISTORY"}
)

// TestConformanceMinimalPermissions runs the conformance suite (file
// storage) as a NATS user allowed exactly the documented subjects: one the
// node needs and the lists lack fails the suite (checked for the snapshot
// bucket, the inboxes and the API; not for the leader advisory, which a
// single server never sends). The lists in the test are the ones in the
// doc.
func TestConformanceMinimalPermissions(t *testing.T) {
	redistest.ACLInDoc(t, "../../docs/operations.md", "jetstream publish", minimalPub)
	redistest.ACLInDoc(t, "../../docs/operations.md", "jetstream subscribe", minimalSub)
	const user, pass = "syncgate", "nats-secret-0123456789"
	srv := natstest.RunServer(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: user, Password: pass, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: minimalPub},
			Subscribe: &server.SubjectPermission{Allow: minimalSub},
		}}}
	})
	cfg := jetstream.Config{URL: srv.URL(), Storage: jetstream.FileStorage, HistorySize: suiteHistory,
		Auth: jetstream.ClientAuth{User: user, Password: pass}}
	newBroker := func(t *testing.T) brokers.Broker { return jetstream.New(cfg) }
	warmUp(t, cfg)
	brokertest.Suite{
		Features: brokertest.Features{
			History: true, HistorySize: suiteHistory, Epoch: true, Presence: true, Pinger: true, Snapshots: true,
		},
		New: newBroker,
		NewPair: func(t *testing.T) (brokers.Broker, brokers.Broker) {
			return newBroker(t), newBroker(t)
		},
		PresenceTTL: 1500 * time.Millisecond,
		Settle:      20 * time.Millisecond,
	}.Run(t)
}
