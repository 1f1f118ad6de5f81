//go:build !linux

package redistest

import "syscall"

// sysProcAttr: without Pdeathsig, servers are killed at test cleanup only.
func sysProcAttr() *syscall.SysProcAttr { return nil }
