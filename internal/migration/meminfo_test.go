package migration

import (
	"strings"
	"testing"
)

func TestParseMemAvailable(t *testing.T) {
	const sample = `MemTotal:       16316412 kB
MemFree:         1234567 kB
MemAvailable:    8123456 kB
Buffers:          204800 kB
`
	for _, tc := range []struct {
		name, text string
		want       uint64
		err        string
	}{
		{name: "linux", text: sample, want: 8123456 << 10},
		{name: "no unit", text: "MemAvailable: 3\n", want: 3 << 10},
		{name: "last line without newline", text: "MemTotal: 9 kB\nMemAvailable: 7 kB", want: 7 << 10},
		{name: "first wins", text: "MemAvailable: 1 kB\nMemAvailable: 2 kB\n", want: 1 << 10},
		{name: "prefix is not a match", text: "MemAvailableX: 5 kB\n", err: "no MemAvailable"},
		{name: "missing", text: "MemTotal: 16316412 kB\nMemFree: 1 kB\n", err: "no MemAvailable"},
		{name: "empty", text: "", err: "no MemAvailable"},
		{name: "not a number", text: "MemAvailable: lots kB\n", err: "count of KiB"},
		{name: "negative", text: "MemAvailable: -4 kB\n", err: "count of KiB"},
		{name: "overflows", text: "MemAvailable: 18446744073709551615 kB\n", err: "count of KiB"},
		{name: "other unit", text: "MemAvailable: 4 MB\n", err: "want"},
		{name: "no value", text: "MemAvailable:\n", err: "want"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMemAvailable(strings.NewReader(tc.text))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error %v, want %d", err, tc.want)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("got %d, %v; want an error saying %q", got, err, tc.err)
			case got != tc.want:
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestMemAvailableHere(t *testing.T) {
	n, err := MemAvailable()
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || n%1024 != 0 {
		t.Errorf("MemAvailable %d: want a positive multiple of 1 KiB", n)
	}
}
