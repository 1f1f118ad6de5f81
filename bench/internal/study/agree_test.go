package study

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		a    Agreement
		ok   bool
		flag string
	}{
		{Agreement{StudyP50: 1, StudyP99: 3, ProbeP50: 1, ProbeP99: 3}, true, ""},
		{Agreement{StudyP50: 1.24, StudyP99: 4.4, ProbeP50: 1, ProbeP99: 3}, true, ""},
		{Agreement{StudyP50: 0.76, StudyP99: 1.6, ProbeP50: 1, ProbeP99: 3}, true, ""},
		{Agreement{StudyP50: 1.3, StudyP99: 3, ProbeP50: 1, ProbeP99: 3}, false, "p50 differs by +30 %"},
		{Agreement{StudyP50: 0.7, StudyP99: 3, ProbeP50: 1, ProbeP99: 3}, false, "p50 differs by -30 %"},
		{Agreement{StudyP50: 1, StudyP99: 12.8, ProbeP50: 1, ProbeP99: 2}, false, "p99 differs by +540 %"},
		{Agreement{StudyP50: 1, StudyP99: 3, ProbeP50: 1, ProbeP99: 3, ProbeLost: 4}, false, "probe lost 4"},
		{Agreement{StudyP50: 1, StudyP99: 3, Error: "boom"}, false, "probe failed: boom"},
		{Agreement{ProbeP50: 1, ProbeP99: 3}, false, "no latency"},
	} {
		got := Check(c.a)
		if got.OK != c.ok || !strings.HasPrefix(got.Flag, c.flag) {
			t.Errorf("Check(%+v) = ok %v flag %q, want %v %q", c.a, got.OK, got.Flag, c.ok, c.flag)
		}
	}
}
