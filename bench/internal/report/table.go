package report

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

// PrintRows prints rows as a right-aligned text table, the first row the
// header.
func PrintRows(w io.Writer, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
}

// MarkdownRows prints rows as a Markdown table, the first row the header.
func MarkdownRows(w io.Writer, rows [][]string) {
	for i, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
		if i == 0 {
			fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(r)))
		}
	}
}

// MarkdownColumns renders cells (a header line, then rows) as a markdown
// table; the header's first cell is left empty.
func MarkdownColumns(cells [][]string) string {
	if len(cells) == 0 {
		return ""
	}
	var b strings.Builder
	line := func(cs []string) {
		b.WriteString("|")
		for _, c := range cs {
			b.WriteString(" " + MDEscape(c) + " |")
		}
		b.WriteString("\n")
	}
	head := append([]string{""}, cells[0][1:]...)
	line(head)
	b.WriteString("|" + strings.Repeat(" --- |", len(head)) + "\n")
	for _, cs := range cells[1:] {
		line(cs)
	}
	return b.String()
}

// MDEscape keeps a cell on one line and its pipes out of the table syntax.
func MDEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// Clip cuts s to n bytes, marking the cut with "...".
func Clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// PrintColumns prints cells (a header line, then rows) as a text table:
// the first column (the labels) left-aligned, the others right-aligned,
// a rule under the header.
func PrintColumns(w io.Writer, cells [][]string) {
	if len(cells) == 0 {
		return
	}
	widths := make([]int, len(cells[0]))
	for _, line := range cells {
		for i, c := range line {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for n, line := range cells {
		fmt.Fprintf(w, "%-*s", widths[0], line[0])
		for i, c := range line[1:] {
			fmt.Fprintf(w, " | %*s", widths[i+1], c)
		}
		fmt.Fprintln(w)
		if n == 0 {
			sep := strings.Repeat("-", widths[0])
			for _, wd := range widths[1:] {
				sep += "-+-" + strings.Repeat("-", wd)
			}
			fmt.Fprintln(w, sep)
		}
	}
}
