package config

import (
	"reflect"
	"testing"

	"github.com/syncgate/syncgate/gateway"
)

// TestGatewayDefaults: the file's defaults and the gateway's own are the
// same values, so a node without config.yaml and a program that builds a
// gateway.Config{} run alike.
func TestGatewayDefaults(t *testing.T) {
	got := Default().Gateway().WithDefaults()
	want := gateway.Config{}.WithDefaults()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("config.yaml's defaults, mapped:\n%+v\ngateway's defaults:\n%+v", got, want)
	}
	if err := Default().Gateway().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestZeroMeansNone: the keys whose 0 means "no cap" (or "none") keep that
// meaning in the gateway's and the backends' Config, where 0 means the
// default.
func TestZeroMeansNone(t *testing.T) {
	c := Default()
	c.Client.MaxConnectionsPerUser = 0
	c.Client.PublishRate = 0
	c.Client.ControlFrameRate = 0
	c.Server.MaxConnections = 0
	c.Server.MaxHTTPConnections = 0
	c.Server.AcceptRate = 0
	c.Presence.JoinLeaveLimit = 0
	g := c.Gateway().WithDefaults()
	def := gateway.Config{}.WithDefaults()
	for name, v := range map[string][2]int{
		"client.max_connections_per_user": {g.Client.MaxConnectionsPerUser, def.Client.MaxConnectionsPerUser},
		"client.publish_rate":             {g.Client.PublishRate, def.Client.PublishRate},
		"client.control_frame_rate":       {g.Client.ControlFrameRate, def.Client.ControlFrameRate},
		"server.max_connections":          {g.Server.MaxConnections, def.Server.MaxConnections},
		"server.max_http_connections":     {g.Server.MaxHTTPConnections, def.Server.MaxHTTPConnections},
		"server.accept_rate":              {g.Server.AcceptRate, def.Server.AcceptRate},
		"presence.join_leave_limit":       {g.Presence.JoinLeaveLimit, def.Presence.JoinLeaveLimit},
	} {
		if v[0] != 0 || v[1] == 0 {
			t.Errorf("%s: 0 runs the gateway with %d (want 0: no cap); the default is %d", name, v[0], v[1])
		}
	}
	c.Presence.JoinLeave = false
	if !c.Gateway().Presence.NoJoinLeave {
		t.Error("presence.join_leave false left join/leave events on")
	}

	c.History.Size, c.NATS.OutboxSize, c.Redis.OutboxSize = 0, 0, 0
	js := c.JetStream(nil)
	rb, err := c.RedisBroker(nil)
	if err != nil {
		t.Fatal(err)
	}
	nb := c.NATSBroker(nil)
	if js.HistorySize >= 0 || rb.HistorySize >= 0 {
		t.Errorf("history.size 0: jetstream %d, redis %d, want negative (none)", js.HistorySize, rb.HistorySize)
	}
	if js.OutboxSize >= 0 || nb.OutboxSize >= 0 || rb.OutboxSize >= 0 {
		t.Errorf("outbox_size 0: jetstream %d, nats %d, redis %d, want negative (none)", js.OutboxSize, nb.OutboxSize, rb.OutboxSize)
	}
}
