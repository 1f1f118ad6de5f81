package brokers_test

import (
	"testing"

	"github.com/syncgate/syncgate/brokers"
)

func TestProvisionalEpoch(t *testing.T) {
	for _, tc := range []struct {
		base brokers.Position
		want bool
	}{
		{brokers.Position{Seq: 41, Epoch: "h2c9v1k0"}, true},
		{brokers.Position{Seq: 0, Epoch: "e.with.dots"}, true},
		{brokers.Position{}, false},                        // no real position known
		{brokers.Position{Seq: 3, Epoch: "~other"}, false}, // never chains provisional epochs
	} {
		e := brokers.ProvisionalEpoch("k3v0", tc.base)
		if !brokers.IsProvisional(e) {
			t.Errorf("ProvisionalEpoch(%v) = %q, not provisional", tc.base, e)
		}
		got, ok := brokers.ProvisionalBase(e)
		if ok != tc.want || (ok && got != tc.base) {
			t.Errorf("ProvisionalBase(%q) = %v, %v; want %v, %v", e, got, ok, tc.base, tc.want)
		}
	}
	for _, e := range []string{"h2c9v1k0", "", "~", "~k3", "~k3.x.e", "~k3.1.", "~k3.1.~e", "~k3.-1.e"} {
		if p, ok := brokers.ProvisionalBase(e); ok {
			t.Errorf("ProvisionalBase(%q) = %v, want none", e, p)
		}
	}
	if brokers.IsProvisional("h2c9v1k0") {
		t.Error("a real epoch reported provisional")
	}
}
