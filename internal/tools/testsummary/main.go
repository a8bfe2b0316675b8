// Command testsummary reads `go test -json` on stdin, prints the tests'
// output (and any build errors) as `go test -v` would, and ends with
// counts:
//
//   - top-level tests and subtests, each passed, failed and skipped; a test
//     that started but never reported (its test binary died) counts as
//     failed and is named;
//   - every skipped test and subtest with its reason (its last message,
//     which is the t.Skip one), grouped by reason;
//   - the tests and subtests that need host facilities (an accelerator to
//     run a VM on, /dev/kvm itself, root, network namespaces, the built
//     guest, QEMU; see internal/testenv, whose Require helpers log the
//     "testenv: requires" lines counted here), by facility, and the
//     accelerators the VM tests ran on. A subtest that asked for a facility
//     is its own entry: it skips or runs apart from its parent.
//
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
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// message matches the file:line prefix of the first line of a t.Log,
// t.Error or t.Skip message.
var message = regexp.MustCompile(`^\s+\S+\.go:\d+: `)

// marker starts the line a testenv Require helper logs.
const marker = "testenv: requires "

// digestLines is how many of a failed test's last messages are repeated.
const digestLines = 12

type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	FailedBuild string
}

type testKey struct{ pkg, name string }

// test is what the stream said about one test or subtest.
type test struct {
	result string          // pass, fail, skip; "" if it never reported
	last   string          // its last message, without the file:line prefix
	digest []string        // its last messages, for the failure digest
	needs  map[string]bool // facility → available
	accel  string          // the accelerator its VM ran on
}

// stream is everything summarize gathers from a `go test -json` stream.
type stream struct {
	tests     map[testKey]*test
	order     []testKey // as they started
	failed    []testKey // as they failed
	pkgFailed []string
}

func main() {
	os.Exit(summarize(os.Stdin, os.Stdout))
}

// summarize copies the output of the `go test -json` stream r to w, then
// the digest and counts; it returns the exit code.
func summarize(r io.Reader, w io.Writer) int {
	s, err := read(r, w)
	if err != nil {
		fmt.Fprintf(w, "testsummary: reading the test stream: %v (is a line over 16 MiB?)\n", err)
		return 1
	}
	s.printDigest(w)
	s.printSkips(w)
	s.printFacilities(w)
	return s.printTotals(w)
}

// read copies r's output to w as it parses it.
func read(r io.Reader, w io.Writer) (*stream, error) {
	s := &stream{tests: map[testKey]*test{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			fmt.Fprintln(w, sc.Text()) // the go command's own complaints
			continue
		}
		s.add(e, w)
	}
	return s, sc.Err()
}

// add takes one event, echoing its output to w.
func (s *stream) add(e event, w io.Writer) {
	switch e.Action {
	case "build-output", "output":
		fmt.Fprint(w, e.Output)
	}
	if e.Test == "" {
		if e.Action == "fail" {
			p := e.Package
			if e.FailedBuild != "" {
				p += " (build failed)"
			}
			s.pkgFailed = append(s.pkgFailed, p)
		}
		return
	}
	k := testKey{e.Package, e.Test}
	t := s.tests[k]
	if t == nil {
		t = &test{}
		s.tests[k] = t
		s.order = append(s.order, k)
	}
	switch e.Action {
	case "output":
		t.output(e.Output)
	case "pass", "skip":
		t.result = e.Action
	case "fail":
		t.result = e.Action
		s.failed = append(s.failed, k)
	}
}

// output takes one line the test printed.
func (t *test) output(line string) {
	line = strings.TrimRight(line, "\n")
	loc := message.FindStringIndex(line)
	if loc == nil {
		if strings.HasPrefix(line, "panic: ") {
			t.note(line)
		}
		return
	}
	text := line[loc[1]:]
	t.last = text
	rest, ok := strings.CutPrefix(text, marker)
	if !ok {
		t.note(line)
		return
	}
	facility, detail, _ := strings.Cut(rest, ": ")
	if t.needs == nil {
		t.needs = map[string]bool{}
	}
	avail := strings.HasPrefix(detail, "available")
	t.needs[facility] = avail
	if !avail {
		t.note(line) // the reason a strict run failed
	} else if a, ok := strings.CutPrefix(detail, "available (accel "); ok && facility == "vm" {
		t.accel = strings.TrimSuffix(a, ")")
	}
}

func (t *test) note(line string) {
	t.digest = append(t.digest, line)
	if len(t.digest) > digestLines {
		t.digest = t.digest[len(t.digest)-digestLines:]
	}
}

// unfinished returns the tests that started and never reported.
func (s *stream) unfinished() []testKey {
	var u []testKey
	for _, k := range s.order {
		if s.tests[k].result == "" {
			u = append(u, k)
		}
	}
	return u
}

func (s *stream) printDigest(w io.Writer) {
	unfinished := s.unfinished()
	if len(s.failed)+len(unfinished) == 0 {
		return
	}
	fmt.Fprintf(w, "\nfailed tests, with their last messages:\n")
	for _, k := range s.failed {
		fmt.Fprintf(w, "--- FAIL: %s (%s)\n", k.name, k.pkg)
		for _, m := range s.tests[k].digest {
			fmt.Fprintln(w, m)
		}
	}
	for _, k := range unfinished {
		fmt.Fprintf(w, "--- DID NOT FINISH: %s (%s)\n", k.name, k.pkg)
		for _, m := range s.tests[k].digest {
			fmt.Fprintln(w, m)
		}
	}
}

// printSkips lists every skipped test and subtest under its reason, the
// most common reason first.
func (s *stream) printSkips(w io.Writer) {
	byReason := map[string]map[string][]string{} // reason → package → tests
	for _, k := range s.order {
		t := s.tests[k]
		if t.result != "skip" {
			continue
		}
		reason := t.last
		if reason == "" {
			reason = "(no reason given)"
		}
		if byReason[reason] == nil {
			byReason[reason] = map[string][]string{}
		}
		byReason[reason][k.pkg] = append(byReason[reason][k.pkg], k.name)
	}
	if len(byReason) == 0 {
		return
	}
	count := func(reason string) int { // the tests skipped for reason
		n := 0
		for _, names := range byReason[reason] {
			n += len(names)
		}
		return n
	}
	reasons := slices.Collect(maps.Keys(byReason))
	sort.Slice(reasons, func(i, j int) bool {
		if ci, cj := count(reasons[i]), count(reasons[j]); ci != cj {
			return ci > cj
		}
		return reasons[i] < reasons[j]
	})
	fmt.Fprintln(w, "\nskipped tests and subtests, by reason:")
	for _, r := range reasons {
		fmt.Fprintf(w, "  [%d] %s\n", count(r), r)
		for _, p := range slices.Sorted(maps.Keys(byReason[r])) {
			names := byReason[r][p]
			sort.Strings(names)
			fmt.Fprintf(w, "      %s: %s\n", p, strings.Join(names, ", "))
		}
	}
}

// tally counts results: passed, failed (of which did not finish), skipped.
type tally struct{ passed, failed, unfinished, skipped int }

func (n *tally) add(result string) {
	switch result {
	case "pass":
		n.passed++
	case "fail":
		n.failed++
	case "skip":
		n.skipped++
	default:
		n.failed++
		n.unfinished++
	}
}

func (n tally) String() string {
	f := fmt.Sprintf("%d failed", n.failed)
	if n.unfinished > 0 {
		f += fmt.Sprintf(" (%d did not finish)", n.unfinished)
	}
	return fmt.Sprintf("%d passed, %s, %d skipped", n.passed, f, n.skipped)
}

// printFacilities counts the tests and subtests that logged a testenv
// marker, each by its own result.
func (s *stream) printFacilities(w io.Writer) {
	var all tally
	by := map[string]*tally{}
	accels := map[string]int{} // accelerator → VM tests that ran on it
	for _, k := range s.order {
		t := s.tests[k]
		if len(t.needs) == 0 {
			continue
		}
		all.add(t.result)
		for f := range t.needs {
			if by[f] == nil {
				by[f] = &tally{}
			}
			by[f].add(t.result)
		}
		if t.accel != "" && t.result != "skip" {
			accels[t.accel]++
		}
	}
	if len(by) == 0 {
		return
	}
	fmt.Fprintf(w, "\ntests and subtests that need host facilities (internal/testenv): %s\n", all)
	for _, f := range slices.Sorted(maps.Keys(by)) {
		line := fmt.Sprintf("  %s: %s", f, by[f])
		if f == "vm" && len(accels) > 0 {
			var on []string
			for _, a := range slices.Sorted(maps.Keys(accels)) {
				on = append(on, fmt.Sprintf("%s %d", a, accels[a]))
			}
			line += " (ran on accelerator: " + strings.Join(on, ", ") + ")"
		}
		fmt.Fprintln(w, line)
	}
}

// printTotals prints the failed packages and the counts of tests and
// subtests, and returns the exit code.
func (s *stream) printTotals(w io.Writer) int {
	var top, sub tally
	for _, k := range s.order {
		if strings.Contains(k.name, "/") {
			sub.add(s.tests[k].result)
		} else {
			top.add(s.tests[k].result)
		}
	}
	fmt.Fprintln(w)
	for _, p := range s.pkgFailed {
		fmt.Fprintf(w, "package failed: %s\n", p)
	}
	fmt.Fprintf(w, "top-level tests: %s\n", top)
	fmt.Fprintf(w, "subtests: %s\n", sub)
	if top.failed+sub.failed > 0 || len(s.pkgFailed) > 0 {
		return 1
	}
	return 0
}
