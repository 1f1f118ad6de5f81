package docbackend_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/examples/docbackend"
)

// TestStore: redeliveries change nothing, a gap is counted, a new epoch
// continues from the state, and the file holds the state with its
// position across a reopen.
func TestStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs.json")
	s, err := docbackend.OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	set := func(v string) docbackend.Edit {
		return docbackend.Edit{Set: map[string]json.RawMessage{"f": json.RawMessage(v)}}
	}
	steps := []struct {
		seq     uint64
		epoch   string
		v       string
		applied bool
	}{
		{1, "e1", "1", true},
		{2, "e1", "2", true},
		{2, "e1", "20", false}, // redelivered
		{1, "e1", "10", false}, // redelivered
		{5, "e1", "5", true},   // 3 and 4 lost: a gap of 2
		{1, "e2", "6", true},   // the broker started a new epoch
	}
	for _, st := range steps {
		ok, err := s.Apply("x", brokers.Position{Seq: st.seq, Epoch: st.epoch}, set(st.v), "tok"+st.v)
		if err != nil || ok != st.applied {
			t.Fatalf("apply %+v: %v %v", st, ok, err)
		}
	}
	re, err := docbackend.OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := re.Doc("x")
	if !ok || d.Seq != 1 || d.Epoch != "e2" || string(d.State["f"]) != "6" || d.Gaps != 2 {
		t.Fatalf("reopened doc %+v", d)
	}
	r := re.Resume(docbackend.DefaultChannelPrefix)
	if p, ok := r.Channel("doc:x"); r.After != "tok6" || !ok || p != (brokers.Position{Seq: 1, Epoch: "e2"}) {
		t.Fatalf("resume %q %v %v", r.After, p, ok)
	}
	if _, ok := r.Channel("doc:y"); ok {
		t.Fatal("position of an unknown document")
	}
}
