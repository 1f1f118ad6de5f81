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
