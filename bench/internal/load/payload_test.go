package load

import (
	"encoding/json"
	"strings"
	"testing"
)

// msg is the payload as encoding/json sees it.
type msg struct {
	I int   `json:"i"`
	T int64 `json:"t"`
}

func TestScanMsg(t *testing.T) {
	// What encoding/json makes and what appendStudyMsg makes agree, and
	// both scan back.
	for _, m := range []msg{{0, 0}, {7, 1733300000123456789}, {49_999_999, 1}} {
		want, _ := json.Marshal(m)
		got := AppendMsg(nil, m.I, m.T)
		if string(got) != string(want) {
			t.Fatalf("appendStudyMsg = %s, json = %s", got, want)
		}
		i, ts, ok := ScanMsg(got)
		if !ok || i != m.I || ts != m.T {
			t.Fatalf("scan %s = %d %d %v", got, i, ts, ok)
		}
	}
	good := map[string][2]int64{
		` { "t" : 5 , "i" : 3 } `: {3, 5},
		"{\"i\":1,\n\"t\":2}":     {1, 2},
	}
	for in, w := range good {
		i, ts, ok := ScanMsg([]byte(in))
		if !ok || int64(i) != w[0] || ts != w[1] {
			t.Errorf("scan %q = %d %d %v, want %v", in, i, ts, ok, w)
		}
	}
	bad := []string{
		``, `{}`, `{"i":1}`, `{"t":1}`, `{"i":1,"t":2,"x":3}`, `{"i":1,"i":2}`, `{"i":-1,"t":2}`,
		`{"i":"1","t":2}`, `{"i":1,"t":2}x`, `{"i":1,"t":2`, `{"i":1.5,"t":2}`, `[1,2]`,
		`{"i":1,"t":12345678901234567890}`, `{"ii":1,"t":2}`, `{"i" 1,"t":2}`,
		strings.Repeat(`{`, 100),
	}
	for _, in := range bad {
		if i, ts, ok := ScanMsg([]byte(in)); ok {
			t.Errorf("scan %q = %d %d, want not ok", in, i, ts)
		}
	}
}
