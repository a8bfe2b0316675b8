//go:build !(linux && amd64)

package native

import "errors"

// Supported reports whether Run can execute code on this platform.
func Supported() bool { return false }

// MemBase returns the host address of the buffer Run copies State.Mem into.
func MemBase() uint64 { return 0 }

// CodeAddr returns the address at which Run places the code.
func CodeAddr() uint64 { return 0 }

// Run is only implemented on linux/amd64.
func Run(code []byte, st *State) error { return errors.New("native: not supported on this platform") }
