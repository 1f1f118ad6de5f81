package report

import (
	"strings"
	"testing"
)

func TestReplaceSection(t *testing.T) {
	doc := "# T\n\nprose before\n<!-- bench:conns -->\nold table\n<!-- /bench:conns -->\nprose after\n<!-- bench:fanout -->\n<!-- /bench:fanout -->\n"
	got, err := ReplaceSection(doc, "conns", "new table\n\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# T\n\nprose before\n<!-- bench:conns -->\nnew table\n<!-- /bench:conns -->\nprose after\n<!-- bench:fanout -->\n<!-- /bench:fanout -->\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	again, err := ReplaceSection(got, "conns", "new table")
	if err != nil || again != got {
		t.Errorf("rewriting with the same body changed the document: %v\n%s", err, again)
	}
	if got, err = ReplaceSection(doc, "fanout", "x"); err != nil || !strings.Contains(got, "<!-- bench:fanout -->\nx\n<!-- /bench:fanout -->") {
		t.Errorf("empty section: %v\n%s", err, got)
	}
	for name, d := range map[string]string{
		"missing":   "no markers\n",
		"twice":     doc + "<!-- bench:conns -->\n",
		"reversed":  "<!-- /bench:conns -->\n<!-- bench:conns -->\n",
		"mid-line":  "a <!-- bench:conns -->\n<!-- /bench:conns -->\n",
		"only open": "<!-- bench:conns -->\n",
	} {
		if _, err := ReplaceSection(d, "conns", "x"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// "conns" must not match inside "conns-gateways".
	d2 := "<!-- bench:conns-gateways -->\nA\n<!-- /bench:conns-gateways -->\n"
	if _, err := ReplaceSection(d2, "conns", "x"); err == nil {
		t.Error("section conns matched the markers of conns-gateways")
	}
}

func TestMarkdownColumns(t *testing.T) {
	got := MarkdownColumns([][]string{{"conns", "io=epoll"}, {"a | b", "1\n2"}})
	want := "|  | io=epoll |\n| --- | --- |\n| a \\| b | 1 2 |\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
