//go:build !amd64

package cpu

import "unsafe"

// cas128 is unavailable off amd64: cmpxchg16b falls back to the
// Memory-wide split-lock mutex, and CPUID does not advertise CX16.
func cas128(p unsafe.Pointer, oldLo, oldHi, newLo, newHi uint64) (ok bool, curLo, curHi uint64) {
	panic("cpu: cas128 without amd64")
}

const haveCAS128 = false
