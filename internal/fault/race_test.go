//go:build race

package fault_test

// raceBuild: this test binary was built with -race; the faultinject
// binaries are too, so they reuse the race-built packages of the same run.
const raceBuild = true
