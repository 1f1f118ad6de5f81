package web_test

import (
	"path/filepath"
	"testing"
	"time"
)

// TestClientJSWasRule: client.js applies provisional positions and `was`
// by the step table of the Go client's TestWasRule
// (client/testdata/was_steps.json): two outages of its node, another
// node's provisional position, redeliveries in between.
func TestClientJSWasRule(t *testing.T) {
	steps, err := filepath.Abs(filepath.Join("..", "client", "testdata", "was_steps.json"))
	if err != nil {
		t.Fatal(err)
	}
	runClientJS(t, "wasrule.test.mjs", 30*time.Second, "STEPS="+steps)
}
