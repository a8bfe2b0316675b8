package vmmcmd

import "testing"

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"256M", 256 << 20, true}, {"1G", 1 << 30, true}, {"512", 512 << 20, true},
		{"2GiB", 2 << 30, true}, {"0", 0, false}, {"-1G", 0, false}, {"G", 0, false}, {"1T", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestFilterEscape(t *testing.T) {
	out, esc, quit := filterEscape([]byte("ab\x01\x01c"), false)
	if string(out) != "ab\x01c" || esc || quit {
		t.Errorf("Ctrl-A Ctrl-A: %q %v %v", out, esc, quit)
	}
	if _, _, quit := filterEscape([]byte("\x01x"), false); !quit {
		t.Error("Ctrl-A x does not quit")
	}
	if out, esc, _ := filterEscape([]byte("\x01"), false); len(out) != 0 || !esc {
		t.Error("lone Ctrl-A not held for the next read")
	}
}
