// Package testlog holds what tests need to read a logger's output while
// the code under test still writes to it.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer is a log sink safe for several goroutines: a slog handler may
// write to it while the test reads String.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
