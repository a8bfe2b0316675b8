// Command testsummary reads `go test -json` on stdin, prints the tests'
// output as `go test -v` would, and ends with counts: all tests passed,
// failed and skipped, and separately the tests that need host facilities
// (an accelerator to run a VM on, /dev/kvm itself, root, network
// namespaces, the built guest; see internal/testenv) that ran and that
// skipped, by facility, with the skip reasons and the accelerator the VM
// tests ran on.
// A failed test's last messages are repeated at the very end, so the reason
// is found even when the log above is long or cut. It exits non-zero if any
// test or package failed.
//
// Who may import: nobody; it is run by `make test`.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// message matches the first line of a t.Log or t.Error message.
var message = regexp.MustCompile(`^\s+\S+\.go:\d+: `)

// digestLines is how many of a failed test's last messages are repeated.
const digestLines = 12

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type testKey struct{ pkg, name string }

func main() {
	os.Exit(summarize(os.Stdin, os.Stdout))
}

// summarize copies the output of the `go test -json` stream r to w, then
// the digest and counts; it returns the exit code.
func summarize(r io.Reader, w io.Writer) int {
	var (
		passed, failed, skipped int
		pkgFailed               []string
		envTests                = map[testKey]bool{} // test → true when it needs the host
		envSkip                 = map[testKey]string{}
		facilities              = map[testKey]map[string]bool{} // test → facility → available
		accels                  = map[string]int{}              // accelerator → VM tests that ran on it
		vmTests                 = map[testKey]string{}          // test → accelerator
		result                  = map[testKey]string{}          // top-level tests
		anyResult               = map[testKey]string{}          // every test and subtest, by full name
		subResults              = map[string]int{}              // subtests by result
		messages                = map[testKey][]string{}        // by full test name
		failedTests             []testKey
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if json.Unmarshal(line, &e) != nil {
			fmt.Fprintln(w, string(line)) // build errors and the like
			continue
		}
		// The pass/fail/skip totals count top-level tests (a subtest's
		// failure fails its parent); what a test needs of the host is
		// counted by the test or subtest that asked for it, so that a
		// skipped subtest shows as skipped, with its reason.
		top, _, _ := strings.Cut(e.Test, "/")
		k := testKey{e.Package, top}
		full := testKey{e.Package, e.Test}
		switch e.Action {
		case "output":
			fmt.Fprint(w, e.Output)
			if e.Test != "" && message.MatchString(e.Output) &&
				!strings.Contains(e.Output, "testenv: requires ") {
				m := append(messages[full], strings.TrimRight(e.Output, "\n"))
				if len(m) > digestLines {
					m = m[len(m)-digestLines:]
				}
				messages[full] = m
			}
			if i := strings.Index(e.Output, "testenv: requires "); e.Test != "" && i >= 0 {
				envTests[full] = true
				rest := strings.TrimSpace(e.Output[i+len("testenv: requires "):])
				facility, detail, _ := strings.Cut(rest, ": ")
				if facilities[full] == nil {
					facilities[full] = map[string]bool{}
				}
				avail := strings.HasPrefix(detail, "available")
				facilities[full][facility] = avail
				if !avail {
					envSkip[full] = rest
				} else if a, ok := strings.CutPrefix(detail, "available (accel "); ok && facility == "vm" {
					vmTests[full] = strings.TrimSuffix(a, ")")
				}
			}
		case "pass", "fail", "skip":
			if e.Test == "" {
				if e.Action == "fail" {
					pkgFailed = append(pkgFailed, e.Package)
				}
				continue
			}
			if e.Action == "fail" {
				failedTests = append(failedTests, full)
			}
			anyResult[full] = e.Action
			if strings.Contains(e.Test, "/") {
				subResults[e.Action]++
				continue // the totals count top-level tests
			}
			result[k] = e.Action
		}
	}
	for _, r := range result {
		switch r {
		case "pass":
			passed++
		case "fail":
			failed++
		case "skip":
			skipped++
		}
	}
	envRan, envSkipped := 0, 0
	var reasons []string
	byFacility := map[string][2]int{} // facility → {ran, skipped}
	for k := range envTests {
		r, ok := anyResult[k]
		if !ok {
			continue // no result: a test binary that died is a package failure
		}
		for f := range facilities[k] {
			n := byFacility[f]
			if r == "skip" {
				n[1]++
			} else {
				n[0]++
			}
			byFacility[f] = n
		}
		if a, ok := vmTests[k]; ok && r != "skip" {
			accels[a]++
		}
		if r == "skip" {
			envSkipped++
			reasons = append(reasons, fmt.Sprintf("  %s %s: %s", k.pkg, k.name, envSkip[k]))
		} else {
			envRan++
		}
	}
	sort.Strings(reasons)
	if len(failedTests) > 0 {
		fmt.Fprintf(w, "\nfailed tests, with their last messages:\n")
		for _, k := range failedTests {
			fmt.Fprintf(w, "--- FAIL: %s (%s)\n", k.name, k.pkg)
			for _, m := range messages[k] {
				fmt.Fprintln(w, m)
			}
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "host-facility tests and subtests (vm, kvm, root, netns, guest, qemu): %d ran, %d skipped\n", envRan, envSkipped)
	var names []string
	for f := range byFacility {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		n := byFacility[f]
		line := fmt.Sprintf("  %s: %d ran, %d skipped", f, n[0], n[1])
		if f == "vm" && len(accels) > 0 {
			var on []string
			for a, c := range accels {
				on = append(on, fmt.Sprintf("%s %d", a, c))
			}
			sort.Strings(on)
			line += " (ran on accelerator: " + strings.Join(on, ", ") + ")"
		}
		fmt.Fprintln(w, line)
	}
	if len(reasons) > 0 {
		fmt.Fprintln(w, "skipped, and why:")
	}
	for _, r := range reasons {
		fmt.Fprintln(w, r)
	}

	for _, p := range pkgFailed {
		fmt.Fprintf(w, "package failed: %s\n", p)
	}
	fmt.Fprintf(w, "subtests: %d passed, %d failed, %d skipped\n", subResults["pass"], subResults["fail"], subResults["skip"])
	fmt.Fprintf(w, "%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || len(pkgFailed) > 0 {
		return 1
	}
	return 0
}
