//go:build race

package pooltest

// raceBuild: under -race, bin/godwit (agents, controller, VMMs) is built
// with the race detector too, and a "DATA RACE" in any of their logs fails
// the test.
const raceBuild = true
