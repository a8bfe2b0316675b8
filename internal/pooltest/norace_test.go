//go:build !race

package pooltest

const raceBuild = false
