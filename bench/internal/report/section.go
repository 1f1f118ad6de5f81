// section.go rewrites one generated section of a Markdown document: the
// text between the markers
//
//	<!-- bench:NAME -->
//	<!-- /bench:NAME -->
//
// Everything outside the markers is left as it is, so the prose around a
// generated table stays hand-written.

package report

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// SectionMarkers are the lines that open and close section name of a
// generated Markdown document.
func SectionMarkers(name string) (begin, end string) {
	return "<!-- bench:" + name + " -->", "<!-- /bench:" + name + " -->"
}

// ReplaceSection returns doc with the text between the markers of section
// name replaced by body. The markers must each appear exactly once, begin
// before end, on lines of their own.
func ReplaceSection(doc, name, body string) (string, error) {
	begin, end := SectionMarkers(name)
	if strings.Count(doc, begin) != 1 || strings.Count(doc, end) != 1 {
		return "", fmt.Errorf("want exactly one %q and one %q, found %d and %d",
			begin, end, strings.Count(doc, begin), strings.Count(doc, end))
	}
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if j < i {
		return "", fmt.Errorf("%q comes before %q", end, begin)
	}
	if (i > 0 && doc[i-1] != '\n') || !strings.HasPrefix(doc[i+len(begin):], "\n") || (doc[j-1] != '\n') {
		return "", errors.New("the section markers must be on lines of their own")
	}
	body = strings.TrimRight(body, "\n")
	if body != "" {
		body += "\n"
	}
	return doc[:i+len(begin)] + "\n" + body + doc[j:], nil
}

// RewriteSection replaces section name of the markdown file at path.
func RewriteSection(path, name, body string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc, err := ReplaceSection(string(b), name, body)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if doc == string(b) {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), st.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
