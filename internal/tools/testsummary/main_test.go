package main

import (
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestEnv"}`,
		`{"Action":"output","Package":"p","Test":"TestEnv","Output":"    a_test.go:3: testenv: requires kvm: available\n"}`,
		`{"Action":"output","Package":"p","Test":"TestEnv","Output":"    a_test.go:9: the reason\n"}`,
		`{"Action":"output","Package":"p","Test":"TestEnv","Output":"        a continuation line\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestEnv"}`,
		`{"Action":"output","Package":"p","Test":"TestSkip","Output":"    b_test.go:3: testenv: requires root: not root\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestSkip"}`,
		`{"Action":"pass","Package":"p","Test":"TestOK"}`,
		`{"Action":"pass","Package":"p","Test":"TestOK/sub"}`,
		`{"Action":"output","Package":"p","Test":"TestVM","Output":"    c_test.go:3: testenv: requires vm: available (accel emu)\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestVM"}`,
		`{"Action":"output","Package":"q","Test":"TestNoVM","Output":"    d_test.go:3: testenv: requires vm: kvm: no permission to open /dev/kvm\n"}`,
		`{"Action":"skip","Package":"q","Test":"TestNoVM"}`,
		`{"Action":"fail","Package":"p"}`,
		`not json`,
	}, "\n")
	var out strings.Builder
	if code := summarize(strings.NewReader(in), &out); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	got := out.String()
	for _, want := range []string{
		"not json\n",
		"failed tests, with their last messages:\n--- FAIL: TestEnv (p)\n    a_test.go:9: the reason\n\n",
		"host-facility tests and subtests (vm, kvm, root, netns, guest, qemu): 2 ran, 2 skipped\n",
		"  kvm: 1 ran, 0 skipped\n  root: 0 ran, 1 skipped\n  vm: 1 ran, 1 skipped (ran on accelerator: emu 1)\n",
		"skipped, and why:\n  p TestSkip: root: not root\n  q TestNoVM: vm: kvm: no permission to open /dev/kvm\n",
		"package failed: p\n",
		"2 passed, 1 failed, 2 skipped\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if code := summarize(strings.NewReader(`{"Action":"pass","Package":"p","Test":"TestOK"}`), &out); code != 0 {
		t.Errorf("all passed: exit code %d, want 0", code)
	}
}

// TestSummarizeSubtests: a subtest that skips for a missing facility is
// counted as skipped, with its reason, though its parent passes.
func TestSummarizeSubtests(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"output","Package":"p","Test":"TestF","Output":"    f_test.go:3: testenv: requires vm: available (accel emu)\n"}`,
		`{"Action":"output","Package":"p","Test":"TestF/a","Output":"    f_test.go:9: testenv: requires root: available\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestF/a"}`,
		`{"Action":"output","Package":"p","Test":"TestF/b","Output":"    f_test.go:9: testenv: requires root: not running as root\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestF/b"}`,
		`{"Action":"pass","Package":"p","Test":"TestF"}`,
	}, "\n")
	var out strings.Builder
	if code := summarize(strings.NewReader(in), &out); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	got := out.String()
	for _, want := range []string{
		"host-facility tests and subtests (vm, kvm, root, netns, guest, qemu): 2 ran, 1 skipped\n",
		"  root: 1 ran, 1 skipped\n  vm: 1 ran, 0 skipped (ran on accelerator: emu 1)\n",
		"skipped, and why:\n  p TestF/b: root: not running as root\n",
		"subtests: 1 passed, 0 failed, 1 skipped\n",
		"1 passed, 0 failed, 0 skipped\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
