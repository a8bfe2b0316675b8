package vmmcmd

import "testing"

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
