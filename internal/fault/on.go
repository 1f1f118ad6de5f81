//go:build faultinject

package fault

import "os"

// On reports whether the named fault is injected: whether Env names it.
func On(name string) bool { return os.Getenv(Env) == name }
