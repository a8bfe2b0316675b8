// Command testsummary reads `go test -json` on stdin, prints the tests'
// output as `go test -v` would, and ends with counts: all tests passed,
// failed and skipped, and separately the tests that need host facilities
// (/dev/kvm, root, network namespaces, the built guest; see
// internal/testenv) that ran and that skipped, with the skip reasons.
// It exits non-zero if any test or package failed.
//
// Who may import: nobody; it is run by `make test`.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type testKey struct{ pkg, name string }

func main() {
	var (
		passed, failed, skipped int
		pkgFailed               []string
		envTests                = map[testKey]bool{} // test → true when it needs the host
		envSkip                 = map[testKey]string{}
		result                  = map[testKey]string{}
	)
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if json.Unmarshal(line, &e) != nil {
			fmt.Println(string(line)) // build errors and the like
			continue
		}
		// Subtests count through their top-level test.
		top, _, _ := strings.Cut(e.Test, "/")
		k := testKey{e.Package, top}
		switch e.Action {
		case "output":
			fmt.Print(e.Output)
			if e.Test != "" && strings.Contains(e.Output, "testenv: requires ") {
				envTests[k] = true
				if i := strings.Index(e.Output, "testenv: requires "); i >= 0 && !strings.Contains(e.Output, ": available") {
					envSkip[k] = strings.TrimSpace(e.Output[i+len("testenv: requires "):])
				}
			}
		case "pass", "fail", "skip":
			if e.Test == "" {
				if e.Action == "fail" {
					pkgFailed = append(pkgFailed, e.Package)
				}
				continue
			}
			if strings.Contains(e.Test, "/") {
				continue // subtests are counted through their top-level test
			}
			result[k] = e.Action
		}
	}
	envRan, envSkipped := 0, 0
	var reasons []string
	for k, r := range result {
		switch r {
		case "pass":
			passed++
		case "fail":
			failed++
		case "skip":
			skipped++
		}
		if envTests[k] {
			if r == "skip" {
				envSkipped++
				reasons = append(reasons, fmt.Sprintf("  %s %s: %s", k.pkg, k.name, envSkip[k]))
			} else {
				envRan++
			}
		}
	}
	sort.Strings(reasons)
	fmt.Println()
	fmt.Printf("host-facility tests (kvm, root, netns, guest): %d ran, %d skipped\n", envRan, envSkipped)
	for _, r := range reasons {
		fmt.Println(r)
	}
	for _, p := range pkgFailed {
		fmt.Printf("package failed: %s\n", p)
	}
	fmt.Printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || len(pkgFailed) > 0 {
		os.Exit(1)
	}
}
