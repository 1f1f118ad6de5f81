package nats_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/brokertest"
	"github.com/syncgate/syncgate/brokers/nats"
	"github.com/syncgate/syncgate/internal/natstest"
	"github.com/syncgate/syncgate/internal/redistest"
)

// The NATS permissions docs/operations.md gives a node's user for the
// nats backend with the default prefix: its subjects, the JetStream API
// (its presence stream) and reply inboxes.
var (
	minimalPub = []string{"sg.>", "$JS.API.>"}
	minimalSub = []string{"sg.>", "_INBOX.>"}
)

// TestConformanceMinimalPermissions runs the conformance suite as a NATS
// user allowed exactly the documented subjects: one the node needs and
// the lists lack fails the suite (checked by taking out each of them).
// The lists in the test are the ones in the doc.
func TestConformanceMinimalPermissions(t *testing.T) {
	redistest.ACLInDoc(t, "../../docs/operations.md", "nats publish", minimalPub)
	redistest.ACLInDoc(t, "../../docs/operations.md", "nats subscribe", minimalSub)
	const user, pass = "syncgate", "nats-secret-0123456789"
	srv := natstest.RunServer(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: user, Password: pass, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: minimalPub},
			Subscribe: &server.SubjectPermission{Allow: minimalSub},
		}}}
	})
	cfg := nats.Config{URL: srv.URL(), Auth: nats.ClientAuth{User: user, Password: pass}}
	newBroker := func(t *testing.T) brokers.Broker { return nats.New(cfg) }
	b := nats.New(cfg)
	if err := b.Start(t.Context(), brokertest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	brokertest.Suite{
		Features:    brokertest.Features{Presence: true, Pinger: true},
		New:         newBroker,
		PresenceTTL: 1500 * time.Millisecond,
		Settle:      20 * time.Millisecond,
	}.Run(t)
}
