package main

import (
	"bytes"
	"strconv"
	"testing"
)

type cpioEntry struct {
	name         string
	mode         uint64
	data         []byte
	rmaj, rminor uint64
}

// readCPIO parses a newc archive as the kernel does, up to the trailer.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	field := func(i int) uint64 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("header at %d field %d: %v", off, i, err)
		}
		return v
	}
	for {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at %d: %q", off, b[off:off+6])
		}
		mode, size, rmaj, rmin, nsize := field(1), int(field(6)), field(9), field(10), int(field(11))
		name := string(b[off+110 : off+110+nsize-1])
		if b[off+110+nsize-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		d := (off + 110 + nsize + 3) &^ 3
		if name == "TRAILER!!!" {
			if (d+size+3)&^3 != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-d)
			}
			return out
		}
		out = append(out, cpioEntry{name, mode, b[d : d+size], rmaj, rmin})
		off = (d + size + 3) &^ 3
	}
}

func TestCPIORoundTrip(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIO(&buf)
	c.Dir("bin")
	c.File("bin/hello", 0o755, []byte("hello, world\n"))
	c.Symlink("bin/sh", "busybox")
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("x", 0o644, nil)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := readCPIO(t, buf.Bytes())
	want := []cpioEntry{
		{"bin", modeDir | 0o755, nil, 0, 0},
		{"bin/hello", modeFile | 0o755, []byte("hello, world\n"), 0, 0},
		{"bin/sh", modeLink | 0o777, []byte("busybox"), 0, 0},
		{"dev/console", modeChar | 0o600, nil, 5, 1},
		{"x", modeFile | 0o644, nil, 0, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.name != w.name || g.mode != w.mode || !bytes.Equal(g.data, w.data) || g.rmaj != w.rmaj || g.rminor != w.rminor {
			t.Errorf("entry %d: %+v, want %+v", i, g, w)
		}
	}
}

func TestCPIORefusesDuplicates(t *testing.T) {
	c := newCPIO(&bytes.Buffer{})
	c.File("a", 0o644, nil)
	c.File("a", 0o644, nil)
	if err := c.Close(); err == nil {
		t.Fatal("a duplicate name was accepted")
	}
}

func TestModName(t *testing.T) {
	for in, want := range map[string]string{"virtio-rng.ko": "virtio_rng", "virtio_net": "virtio_net"} {
		if got := modName(in); got != want {
			t.Errorf("modName(%q) = %q, want %q", in, got, want)
		}
	}
}
