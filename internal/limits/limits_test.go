package limits

import (
	"math/big"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/memory"
)

func TestParseMem(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		err  string
	}{
		{"256", 256 << 20, ""},
		{"256M", 256 << 20, ""},
		{"256MiB", 256 << 20, ""},
		{"256mib", 256 << 20, ""},
		{"1G", 1 << 30, ""},
		{"1g", 1 << 30, ""},
		{"1T", 1 << 40, ""},
		{"1TiB", 1 << 40, ""},
		{"33554432B", 32 << 20, ""},
		{"32768K", 32 << 20, ""},
		{"17179869185G", 0, "too large"},
		{"18446744073709551616", 0, "too large"},
		{"1GMIB", 0, `unknown unit "GMIB"`},
		{"1MB", 0, `unknown unit "MB"`},
		{"0", 0, "too little"},
		{"2T", 0, "too much: at most 1T"},
		{"3M", 0, "too little: give at least 32M"},
		{"33M", 0, "not a multiple of 2M"},
		{"", 0, "not a size"},
		{"-1G", 0, "not a size"},
		{" 1G", 0, "not a size"},
		{"1 G", 0, `unknown unit " G"`},
		{"1.5G", 0, `unknown unit ".5G"`},
		{"G", 0, "not a size"},
	} {
		got, err := ParseMem(c.in)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("ParseMem(%q): %v", c.in, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("ParseMem(%q) = %d, %v; want an error with %q", c.in, got, err, c.err)
		case c.err == "" && got != c.want:
			t.Errorf("ParseMem(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestParseBandwidth(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "100M": 100 << 20, "100M/s": 100 << 20, "12345": 12345, "1g/s": 1 << 30} {
		if got, err := ParseBandwidth(in); err != nil || got != want {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fast", "1M/h", "-5", "100Mbit"} {
		if got, err := ParseBandwidth(in); err == nil {
			t.Errorf("ParseBandwidth(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseDuration(t *testing.T) {
	if d, err := ParseDuration("300ms", time.Millisecond, time.Minute); err != nil || d != 300*time.Millisecond {
		t.Errorf("300ms: %v, %v", d, err)
	}
	for in, want := range map[string]string{"0s": "want 1ms to 1m0s", "2m": "want 1ms to 1m0s", "5": "not a duration", "-1s": "want 1ms"} {
		if _, err := ParseDuration(in, time.Millisecond, time.Minute); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDuration(%q): %v, want %q", in, err, want)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"vm1", "a", "web-1.prod_x", "0abc", strings.Repeat("a", 63)} {
		if err := CheckName("VM", ok); err != nil {
			t.Errorf("CheckName(%q): %v", ok, err)
		}
	}
	for in, want := range map[string]string{
		"":                      "a VM name is required",
		"VM1":                   "lower-case",
		"-a":                    "starting with a letter or digit",
		"a/b":                   "lower-case",
		"..":                    "starting with",
		"é":                     "lower-case",
		strings.Repeat("a", 64): "at most 63",
	} {
		if err := CheckName("VM", in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckName(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestVMCheck(t *testing.T) {
	good := VM{Name: "vm1", MemBytes: 512 << 20, VCPUs: 2, TAP: "tap0", MAC: net.HardwareAddr{0x52, 0x54, 0, 1, 2, 3}}
	if err := good.Check(); err != nil {
		t.Fatalf("good VM refused: %v", err)
	}
	bad := VM{Name: "Vm", MemBytes: 3 << 20, VCPUs: 17, TAP: "a-very-long-tap-name", MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}, Cmdline: strings.Repeat("x", 5000)}
	err := bad.Check()
	if err == nil {
		t.Fatal("bad VM accepted")
	}
	for _, flag := range []string{"--name", "--mem", "--cpus", "--tap", "--mac", "--cmdline"} {
		if !strings.Contains(err.Error(), "("+flag+")") {
			t.Errorf("error does not name %s: %v", flag, err)
		}
	}
	in := VM{Name: "vm1", Incoming: true}
	if err := in.Check(); err != nil {
		t.Errorf("incoming VM without RAM or vCPUs refused: %v", err)
	}
}

// TestMemoryBound keeps the RAM limit within what package memory maps.
func TestMemoryBound(t *testing.T) {
	if MaxMemBytes > memory.MaxSize || MinMemBytes < memory.MinSize {
		t.Fatalf("limits [%d, %d] outside memory's [%d, %d]", MinMemBytes, MaxMemBytes, memory.MinSize, memory.MaxSize)
	}
}

var sizeForm = regexp.MustCompile(`^([0-9]+)(|[bB]|[kKmMgGtT]|[kKmMgGtT][iI][bB])$`)

// FuzzParseBytes: what is accepted has the documented form and its exact
// value (no wrap-around, no silent truncation); FormatBytes reads back.
func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"0", "1", "512M", "1GMIB", "17179869185G", "18446744073709551615", "16777216T", "1KiB", "9B", "-1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, bare := range []uint64{1, 1 << 20} {
			n, err := ParseBytes(s, bare)
			m := sizeForm.FindStringSubmatch(s)
			if err != nil {
				if m != nil {
					v := exact(m[1], m[2], bare)
					if v.IsUint64() {
						t.Fatalf("ParseBytes(%q, %d) refused a representable size %v: %v", s, bare, v, err)
					}
				}
				continue
			}
			if m == nil {
				t.Fatalf("ParseBytes(%q, %d) = %d: accepted outside the grammar", s, bare, n)
			}
			if v := exact(m[1], m[2], bare); !v.IsUint64() || v.Uint64() != n {
				t.Fatalf("ParseBytes(%q, %d) = %d, want %v", s, bare, n, v)
			}
			if back, err := ParseBytes(FormatBytes(n), 1); err != nil || back != n {
				t.Fatalf("FormatBytes(%d) = %q reads back as %d, %v", n, FormatBytes(n), back, err)
			}
		}
	})
}

// exact is digits×unit in arbitrary precision.
func exact(digits, unit string, bare uint64) *big.Int {
	v, _ := new(big.Int).SetString(digits, 10)
	mult := bare
	if unit != "" {
		mult = units[strings.ToUpper(unit)]
	}
	return v.Mul(v, new(big.Int).SetUint64(mult))
}

var nameForm = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// FuzzCheckName: a name is accepted exactly when it has the documented
// form, so it is safe as a path element, key and common name.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"vm1", "..", "a/b", "A", "", "a\x00b", strings.Repeat("z", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := CheckName("VM", s)
		if (err == nil) != nameForm.MatchString(s) {
			t.Fatalf("CheckName(%q) = %v, but the grammar says %v", s, err, nameForm.MatchString(s))
		}
		if err == nil && (strings.Contains(s, "/") || s == "." || s == "..") {
			t.Fatalf("CheckName accepted a path: %q", s)
		}
	})
}

// FuzzParseDuration: an accepted duration lies within the bounds.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"300ms", "1s", "0", "-1s", "9223372036854775807ns", "1e3s", "1h2m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s, time.Millisecond, time.Minute)
		if err == nil && (d < time.Millisecond || d > time.Minute) {
			t.Fatalf("ParseDuration(%q) = %v outside [1ms, 1m]", s, d)
		}
	})
}

func TestParseVCPUs(t *testing.T) {
	for in, want := range map[string]string{"abc": `"abc" is not a vCPU count`, "0": "0 vCPUs: want 1 to 16", "17": "17 vCPUs", "": "not a vCPU count", "1.5": "not a vCPU count", "99999999999999999999": "not a vCPU count"} {
		if _, err := ParseVCPUs(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseVCPUs(%q): %v, want %q", in, err, want)
		}
	}
	if n, err := ParseVCPUs("16"); n != 16 || err != nil {
		t.Errorf("ParseVCPUs(16) = %d, %v", n, err)
	}
}

// FuzzParseVCPUs: an accepted count is within the limits.
func FuzzParseVCPUs(f *testing.F) {
	for _, s := range []string{"1", "16", "17", "-1", "+3", "0x10", "abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseVCPUs(s); err == nil && (n < 1 || n > MaxVCPUs) {
			t.Fatalf("ParseVCPUs(%q) = %d", s, n)
		}
	})
}
