package gateway_test

import (
	"strings"
	"testing"

	"github.com/syncgate/syncgate/gateway"
)

// TestConfigValidate: the zero Config is valid (every field defaults), and
// a bad field is named with its config key.
func TestConfigValidate(t *testing.T) {
	if err := (gateway.Config{}).Validate(); err != nil {
		t.Fatalf("zero Config: %v", err)
	}
	var c gateway.Config
	c.Client.MaxMessageSize = 100
	c.Server.IO = "threads"
	c.Server.TLSCertFile = "cert.pem"
	err := c.Validate()
	if err == nil {
		t.Fatal("a bad Config passed Validate")
	}
	for _, want := range []string{"Client.MaxMessageSize (client.max_message_size)", "Server.IO (server.io)", "server.tls.cert_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if _, err := gateway.New(c, nil, nil); err == nil {
		t.Error("New accepted a Config that fails Validate")
	}
}
