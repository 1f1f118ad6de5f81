//go:build !faultinject

package fault

// On reports whether the named fault is injected: never, in this build.
func On(name string) bool { return false }
