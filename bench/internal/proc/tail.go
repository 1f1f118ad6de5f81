//go:build linux

package proc

import (
	"fmt"
	"sync"
)

// TailBuffer keeps the last max bytes written to it.
type TailBuffer struct {
	mu    sync.Mutex
	max   int
	buf   []byte
	total int64
}

// NewTailBuffer keeps the last max bytes.
func NewTailBuffer(max int) *TailBuffer { return &TailBuffer{max: max} }

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total += int64(len(p))
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.total > int64(len(t.buf)) {
		return fmt.Sprintf("[... %d earlier bytes dropped]\n%s", t.total-int64(len(t.buf)), t.buf)
	}
	return string(t.buf)
}
