package main

import (
	"os"
	"strings"
	"testing"
)

// TestRecorded feeds a stream recorded from `go test -json ./...` over three
// packages: broken (a compile error), died (a subtest that calls os.Exit,
// so neither it nor its parent reports), and p: TestPass, TestShort
// (t.Skip), TestFail, TestVM (a vm marker), TestStrict (a missing facility
// under strict mode: a failure) and TestFault with the subtests disk,
// NIC-without-TAP (skipped by a netns marker), slow (a message, then the
// same t.Skip as TestShort), root (a root marker) and bad (t.Fatal).
func TestRecorded(t *testing.T) {
	in, err := os.ReadFile("testdata/gotest.json")
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if code := summarize(strings.NewReader(string(in)), &out); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	got := out.String()
	for _, echoed := range []string{
		"broken/b_test.go:5:28: undefined: undefined\n",
		"=== RUN   TestFault/NIC-without-TAP\n",
		"--- SKIP: TestShort (0.00s)\n",
	} {
		if !strings.Contains(got, echoed) {
			t.Errorf("output does not echo %q", echoed)
		}
	}
	const summary = `
failed tests, with their last messages:
--- FAIL: TestFail (example.com/rec/p)
    p_test.go:10: before
    p_test.go:11: want 2, got 3
--- FAIL: TestFault/bad (example.com/rec/p)
    p_test.go:30: broke
--- FAIL: TestFault (example.com/rec/p)
--- FAIL: TestStrict (example.com/rec/p)
    p_test.go:34: testenv: requires qemu: qemu-system-x86_64 not found on PATH (GODWIT_TEST_STRICT is set: this machine must run it)
--- DID NOT FINISH: TestDies (example.com/rec/died)
--- DID NOT FINISH: TestDies/exit (example.com/rec/died)
    x_test.go:10: about to exit

skipped tests and subtests, by reason:
  [2] slow: not with -short
      example.com/rec/p: TestFault/slow, TestShort
  [1] testenv: requires netns: not running as root
      example.com/rec/p: TestFault/NIC-without-TAP

tests and subtests that need host facilities (internal/testenv): 2 passed, 2 failed, 1 skipped
  netns: 0 passed, 0 failed, 1 skipped
  qemu: 0 passed, 1 failed, 0 skipped
  root: 1 passed, 0 failed, 0 skipped
  vm: 1 passed, 1 failed, 1 skipped (ran on accelerator: emu 2)

package failed: example.com/rec/broken (build failed)
package failed: example.com/rec/died
package failed: example.com/rec/p
top-level tests: 2 passed, 4 failed (1 did not finish), 1 skipped
subtests: 2 passed, 2 failed (1 did not finish), 2 skipped
`
	i := strings.Index(got, "\nfailed tests, with their last messages:")
	if i < 0 || got[i:] != summary {
		t.Errorf("summary:\n%s\nwant:\n%s", got[max(i, 0):], summary)
	}
}

func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     int
	}{
		{"passed", `{"Action":"pass","Package":"p","Test":"TestOK"}`, 0},
		{"skipped", `{"Action":"skip","Package":"p","Test":"TestOK"}`, 0},
		{"failed", `{"Action":"fail","Package":"p","Test":"TestOK"}`, 1},
		{"unfinished", `{"Action":"run","Package":"p","Test":"TestOK"}`, 1},
		{"package failed", `{"Action":"fail","Package":"p"}`, 1},
	} {
		var out strings.Builder
		if code := summarize(strings.NewReader(c.in), &out); code != c.want {
			t.Errorf("%s: exit code %d, want %d:\n%s", c.name, code, c.want, out.String())
		}
	}
}

// TestSummarizeSubtests: a subtest that skips for a missing facility is
// its own entry, skipped with its reason, though its parent passes; the
// failure digest keeps a failed test's messages, not a continuation line
// or an available facility, and no more than digestLines of them.
func TestSummarizeSubtests(t *testing.T) {
	lines := []string{
		`{"Action":"output","Package":"p","Test":"TestF","Output":"    f_test.go:3: testenv: requires vm: available (accel emu)\n"}`,
		`{"Action":"output","Package":"p","Test":"TestF/a","Output":"    f_test.go:9: testenv: requires root: available\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestF/a"}`,
		`{"Action":"output","Package":"p","Test":"TestF/b","Output":"    f_test.go:9: testenv: requires root: not running as root\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestF/b"}`,
		`{"Action":"pass","Package":"p","Test":"TestF"}`,
		`{"Action":"output","Package":"q","Test":"TestG","Output":"    g_test.go:3: testenv: requires kvm: available\n"}`,
	}
	for i := range digestLines + 2 {
		lines = append(lines, `{"Action":"output","Package":"q","Test":"TestG","Output":"    g_test.go:9: message `+string(rune('a'+i))+`\n"}`)
	}
	lines = append(lines,
		`{"Action":"output","Package":"q","Test":"TestG","Output":"        a continuation line\n"}`,
		`{"Action":"fail","Package":"q","Test":"TestG"}`,
		`not json`,
	)
	var out strings.Builder
	if code := summarize(strings.NewReader(strings.Join(lines, "\n")), &out); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	got := out.String()
	var digest strings.Builder
	for i := 2; i < digestLines+2; i++ {
		digest.WriteString("    g_test.go:9: message " + string(rune('a'+i)) + "\n")
	}
	for _, want := range []string{
		"not json\n",
		"--- FAIL: TestG (q)\n" + digest.String() + "\n",
		"tests and subtests that need host facilities (internal/testenv): 2 passed, 1 failed, 1 skipped\n" +
			"  kvm: 0 passed, 1 failed, 0 skipped\n" +
			"  root: 1 passed, 0 failed, 1 skipped\n" +
			"  vm: 1 passed, 0 failed, 0 skipped (ran on accelerator: emu 1)\n",
		"  [1] testenv: requires root: not running as root\n      p: TestF/b\n",
		"top-level tests: 1 passed, 1 failed, 0 skipped\n",
		"subtests: 1 passed, 0 failed, 1 skipped\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
