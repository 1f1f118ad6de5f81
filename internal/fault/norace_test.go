//go:build !race

package fault_test

// raceBuild: this test binary was built without -race (see race_test.go).
const raceBuild = false
