package report

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
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
