package cpu

import "unsafe"

// cas128 is lock cmpxchg16b on the 16-byte-aligned host address p: it
// stores newHi:newLo if p holds oldHi:oldLo, and returns what p held.
//
//go:noescape
func cas128(p unsafe.Pointer, oldLo, oldHi, newLo, newHi uint64) (ok bool, curLo, curHi uint64)

const haveCAS128 = true
