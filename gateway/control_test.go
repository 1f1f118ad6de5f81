package gateway

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestControlVerify: what a node accepts on the control channel: only a
// message signed with its secret, well-formed, fresh and not seen before.
func TestControlVerify(t *testing.T) {
	const secret = "cluster-secret-0123456789abcdef-0123"
	now := time.Now()
	sender, receiver := newControl(secret), newControl(secret)
	msg := func(mut func(*controlMsg)) []byte {
		m := &controlMsg{Op: ctlDisconnect, Node: "n1", TS: now.UnixMilli(), Nonce: randomID(24), User: "ann"}
		if mut != nil {
			mut(m)
		}
		p, err := sender.sign(m)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := msg(nil)
	if m, why := receiver.verify(good, now); m == nil || m.User != "ann" {
		t.Fatalf("a good message: dropped (%s)", why)
	}
	other, err := newControl("another-secret-0123456789abcdef-0123").sign(&controlMsg{Op: ctlDisconnect, Node: "n1", TS: now.UnixMilli(), Nonce: "x", User: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	tampered := msg(nil)
	tampered = bytes.Replace(tampered, []byte(`"ann"`), []byte(`"bob"`), 1)
	unknownField := msg(nil)
	unknownField = append(unknownField[:len(unknownField)-1], []byte(`,"extra":1}`)...)
	for _, tc := range []struct {
		name string
		p    []byte
		why  string
	}{
		{"replayed", good, ctlRejReplay},
		{"another secret", other, ctlRejSignature},
		{"tampered body", tampered, ctlRejSignature},
		{"unsigned", []byte(`{"op":"disconnect","node":"n1","ts":1,"nonce":"a","user":"` + strings.Repeat("a", 64) + `"}`), ctlRejSignature},
		{"short", []byte("abc"), ctlRejSize},
		{"oversized", []byte(strings.Repeat("0", maxControlBytes+1)), ctlRejSize},
		{"stale", msg(func(m *controlMsg) { m.TS = now.Add(-time.Minute).UnixMilli() }), ctlRejStale},
		{"from the future", msg(func(m *controlMsg) { m.TS = now.Add(time.Minute).UnixMilli() }), ctlRejStale},
		{"unknown op", msg(func(m *controlMsg) { m.Op = "shutdown" }), ctlRejDecode},
		{"no user", msg(func(m *controlMsg) { m.User = "" }), ctlRejDecode},
		{"bad channel", msg(func(m *controlMsg) { m.Op, m.Ch = ctlUnsubscribe, "a b" }), ctlRejDecode},
		{"summary of another node", msg(func(m *controlMsg) { m.Op, m.User, m.Summary = ctlSummary, "", &NodeSummary{Node: "n2"} }), ctlRejDecode},
		{"signed unknown field", unknownField, ctlRejSignature},
		{"empty revocations", msg(func(m *controlMsg) { m.Op, m.User = ctlRevocations, "" }), ctlRejDecode},
		{"too many revocations", msg(func(m *controlMsg) {
			m.Op, m.User, m.Revoked = ctlRevocations, "", make([]revocation, maxRevokedPerMsg+1)
			for i := range m.Revoked {
				m.Revoked[i] = revocation{User: "u", Before: 1}
			}
		}), ctlRejDecode},
		{"revocation without time", msg(func(m *controlMsg) { m.Op, m.User, m.Revoked = ctlRevocations, "", []revocation{{User: "u"}} }), ctlRejDecode},
	} {
		if m, why := receiver.verify(tc.p, now); m != nil || why != tc.why {
			t.Errorf("%s: verify = %v, %q; want dropped for %q", tc.name, m, why, tc.why)
		}
	}
	// The largest summary a node makes fits in a control message.
	big := &NodeSummary{Node: "n1", Version: strings.Repeat("v", 255)}
	for i := range maxSummaryChannels {
		name := strings.Repeat("c", 250) + strings.Repeat("0", 5-len(itoa(i))) + itoa(i)
		big.Channels = append(big.Channels, ChannelSummary{Ch: name, Subscribers: 1 << 30})
	}
	p, err := sender.sign(&controlMsg{Op: ctlSummary, Node: "n1", TS: now.UnixMilli(), Nonce: "big", Summary: big})
	if err != nil {
		t.Fatal(err)
	}
	if m, why := receiver.verify(p, now); m == nil {
		t.Fatalf("the largest summary (%d bytes) is dropped: %s", len(p), why)
	}

	// A signed body with an unknown field is refused by the decoder.
	sm := &controlMsg{Op: ctlDisconnect, Node: "n1", TS: now.UnixMilli(), Nonce: "uf", User: "ann"}
	p, _ = sender.sign(sm)
	body := append(p[macHexBytes:len(p)-1:len(p)-1], []byte(`,"extra":1}`)...)
	resigned, _ := sender.signBody(body)
	if m, why := receiver.verify(resigned, now); m != nil || why != ctlRejDecode {
		t.Errorf("signed unknown field: verify = %v, %q; want decode", m, why)
	}
}
