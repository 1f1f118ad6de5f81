package gateway

import (
	"testing"

	"github.com/gobwas/ws"
)

// TestValidClose pins the close codes a client may send (RFC 6455 section
// 7.4) over the whole uint16 range, now that gobwas/ws's check decides
// them: 1000-1003, 1007-1011 and 3000-4999, with a UTF-8 reason.
func TestValidClose(t *testing.T) {
	for c := range 1 << 16 {
		code := ws.StatusCode(c)
		want := code >= 1000 && code <= 1003 || code >= 1007 && code <= 1011 || code >= 3000 && code <= 4999
		if got := validClose(code, "bye"); got != want {
			t.Errorf("close code %d: valid=%v, want %v", c, got, want)
		}
	}
	if validClose(ws.StatusNormalClosure, "\xff") {
		t.Error("a reason that is not UTF-8 was accepted")
	}
}
