package web_test

import (
	"testing"
	"time"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/brokers/jetstream"
	"github.com/syncgate/syncgate/internal/config"
	"github.com/syncgate/syncgate/internal/natstest"
)

// TestClientJSOutage: client.js through a JetStream outage under its node
// (web/e2e/outage.test.mjs). The subscriber on the publishing node applies
// each outage publish once, though it gets it twice (provisional, then
// real with `was`), and ends on the real position; a client resubscribing
// afterwards from a provisional position is answered recovered: true and
// applies only what it had not.
func TestClientJSOutage(t *testing.T) {
	srv := natstest.RunServer(t)
	url := startNode(t, func(config.Config) brokers.Broker {
		return jetstream.New(jetstream.Config{URL: srv.URL()})
	}, nil)
	runClientJSControl(t, "outage.test.mjs", 2*time.Minute, func(req string) string {
		switch req {
		case "down":
			srv.Shutdown()
		case "up":
			srv.Restart(t)
		default:
			return "unknown request " + req
		}
		return "ok"
	}, "WS_URL="+url, "CH=doc.outage")
}
