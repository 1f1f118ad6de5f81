package report

import (
	"strings"
	"testing"
)

func TestTables(t *testing.T) {
	rows := [][]string{{"backend", "p99"}, {"redis", "1.25"}}
	var md strings.Builder
	MarkdownRows(&md, rows)
	if want := "| backend | p99 |\n|---|---|\n| redis | 1.25 |\n"; md.String() != want {
		t.Fatalf("MarkdownRows:\n%s\nwant:\n%s", md.String(), want)
	}
	var txt strings.Builder
	PrintRows(&txt, rows)
	if want := "  backend   p99\n    redis  1.25\n"; txt.String() != want {
		t.Fatalf("PrintRows: %q, want %q", txt.String(), want)
	}
}

func TestPrintColumns(t *testing.T) {
	var b strings.Builder
	PrintColumns(&b, [][]string{{"fanout", "io=epoll"}, {"deliveries/s", "1044"}, {"lost", "0 (0)"}})
	want := "fanout       | io=epoll\n-------------+---------\ndeliveries/s |     1044\nlost         |    0 (0)\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
