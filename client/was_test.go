package client

import (
	"encoding/json"
	"os"
	"testing"
)

// wasSteps is the step table of the provisional-position rule, shared
// with web/client.js's test (TestClientJSWasRule) so the two clients
// cannot drift apart.
type wasSteps struct {
	Start Position `json:"start"`
	Steps []struct {
		Msg     frame    `json:"msg"`
		Applied bool     `json:"applied"`
		Pos     Position `json:"pos"` // where the subscription resumes from afterwards
	} `json:"steps"`
}

// TestWasRule: real and provisional positions are deduplicated apart; a
// msg that comes back with `was` naming a provisional position already
// delivered only moves the position; one naming a provisional position
// never delivered here is a new message; redeliveries are dropped even
// when provisional messages came in between (testdata/was_steps.json:
// two outages of this node and another node's provisional position).
func TestWasRule(t *testing.T) {
	raw, err := os.ReadFile("testdata/was_steps.json")
	if err != nil {
		t.Fatal(err)
	}
	var tab wasSteps
	if err := json.Unmarshal(raw, &tab); err != nil {
		t.Fatal(err)
	}
	if len(tab.Steps) < 10 {
		t.Fatalf("%d steps in testdata/was_steps.json", len(tab.Steps))
	}
	s := &Subscription{ch: "doc", wake: make(chan struct{}), seq: tab.Start.Seq, epoch: tab.Start.Epoch, known: true, real: tab.Start}
	for i, st := range tab.Steps {
		if got := s.deliverLocked(&st.Msg); got != st.Applied {
			t.Errorf("step %d (%s): delivered %v, want %v", i, st.Msg.Data, got, st.Applied)
		}
		if got := (Position{s.seq, s.epoch}); got != st.Pos {
			t.Errorf("step %d (%s): position %v, want %v", i, st.Msg.Data, got, st.Pos)
		}
	}
}
