package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestVersionText(t *testing.T) {
	Version, Commit = "v1.2.3", "0123456789ab+dirty"
	defer func() { Version, Commit = "", "" }()
	if got := VersionText("godwit"); !strings.HasPrefix(got, "godwit v1.2.3 0123456789ab+dirty go") {
		t.Errorf("VersionText = %q", got)
	}
}

// TestReport: exit statuses and the exact lines of each kind of error.
func TestReport(t *testing.T) {
	tree := func() *cobra.Command {
		root := &cobra.Command{Use: "prog"}
		leaf := &cobra.Command{Use: "leaf", Args: Args("NAME"), RunE: func(*cobra.Command, []string) error { return errors.New("it broke\nbadly") }}
		leaf.Flags().Bool("a", false, "")
		leaf.Flags().Bool("b", false, "")
		leaf.MarkFlagsMutuallyExclusive("a", "b")
		return Group(root, leaf)
	}
	for _, c := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, 2, "prog: no command given\nRun 'prog --help' for usage.\n"},
		{[]string{"x"}, 2, "prog: unknown command \"x\"\nRun 'prog --help' for usage.\n"},
		{[]string{"leaf"}, 2, "prog leaf: missing NAME\nRun 'prog leaf --help' for usage.\n"},
		{[]string{"leaf", "n", "m"}, 2, "prog leaf: unexpected argument \"m\"\nRun 'prog leaf --help' for usage.\n"},
		{[]string{"leaf", "n", "--zz"}, 2, "prog leaf: unknown flag: --zz\nRun 'prog leaf --help' for usage.\n"},
		{[]string{"leaf", "n", "--a", "--b"}, 2, "prog leaf: --a and --b exclude each other\nRun 'prog leaf --help' for usage.\n"},
		{[]string{"leaf", "n"}, 1, "prog leaf: it broke; badly\n"},
		{[]string{"leaf", "--help"}, 0, ""},
	} {
		var out, errb bytes.Buffer
		if code := Execute(tree(), c.args, &out, &errb); code != c.code || errb.String() != c.stderr {
			t.Errorf("%q: exit %d, stderr %q; want %d, %q", c.args, code, errb.String(), c.code, c.stderr)
		}
	}
}
