// Package report prints bench's results: text and Markdown tables
// (PrintRows, MarkdownRows), SVG plots (gonum/plot), and for the backend
// study (package study's Results) its tables, its JSON file, its
// generated document docs/benchmarks-study.md and the reading written
// from the numbers. It only reads the results it is given; it writes
// files only where its callers say.
package report
