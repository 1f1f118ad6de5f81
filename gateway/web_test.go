package gateway_test

import (
	"strings"
	"testing"
)

// A node serves the JS client and the demo page beside /ws.
func TestWebRoutes(t *testing.T) {
	ts := startServer(t, "epoll", nil)
	if code, body := httpGet(t, "http://"+ts.addr+"/client.js"); code != 200 || !strings.Contains(body, "export class SyncGate") {
		t.Fatalf("/client.js: %d %.80q", code, body)
	}
	if code, body := httpGet(t, "http://"+ts.addr+"/"); code != 200 || !strings.Contains(body, `from "/client.js"`) {
		t.Fatalf("/: %d %.80q", code, body)
	}
	if code, _ := httpGet(t, "http://"+ts.addr+"/nope"); code != 404 {
		t.Fatalf("/nope: %d", code)
	}
}
