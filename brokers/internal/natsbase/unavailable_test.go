package natsbase

import "testing"

// TestIsUnavailable: a publish ack saying JetStream is temporarily
// unavailable (a stream without quorum or leader) reads as IsUnavailable,
// which the jetstream backend treats as an outage with the write's outcome
// unknown; other refusals (insufficient resources included) do not.
func TestIsUnavailable(t *testing.T) {
	for _, c := range []struct {
		ack  string
		want bool
	}{
		{`{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`, true},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"SG_HISTORY","seq":0}`, false},
		{`{"error":{"code":503,"err_code":10163,"description":"expected last sequence per subject temporarily not ready"}}`, true},
		{`{"error":{"code":503,"err_code":10023,"description":"insufficient resources"}}`, false},
		{`{"error":{"code":400,"err_code":10054,"description":"maximum messages per subject exceeded"}}`, false},
	} {
		_, err := ParseAck([]byte(c.ack))
		if err == nil {
			t.Fatalf("ParseAck(%s) succeeded", c.ack)
		}
		if got := IsUnavailable(err); got != c.want {
			t.Errorf("IsUnavailable(%v) = %v, want %v", err, got, c.want)
		}
	}
}
