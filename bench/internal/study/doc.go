// Package study holds the results of the backend study (go run ./bench
// study) as plain values: one measured run (Run), a backend's runs and
// throughput search (Backend, Tput), the whole invocation (Results), and
// the pure functions that judge them: a throughput step's verdict, the
// median of repeated runs, the agreement of the study's latency with the
// minimal probe's. The command (package main) fills them; package report
// prints them. Nothing here does I/O or keeps state; the values are safe
// to share once filled.
package study
