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
		"host-facility tests (kvm, root, netns, guest): 1 ran, 1 skipped\n  p TestSkip: root: not root\n",
		"package failed: p\n",
		"1 passed, 1 failed, 1 skipped\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if code := summarize(strings.NewReader(`{"Action":"pass","Package":"p","Test":"TestOK"}`), &out); code != 0 {
		t.Errorf("all passed: exit code %d, want 0", code)
	}
}
