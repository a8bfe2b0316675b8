// Package cli holds what Godwit's commands (godwit, godwit-vmm) share
// about their command line: how a command tree runs and exits, how errors
// are reported, and the build's version.
//
// The habits are those of Go and Unix tools such as kubectl and etcdctl:
// an error is one line on stderr, first; a command line that cannot be
// used adds a one-line hint naming the help to read and exits 2; a failure
// exits 1; -h and --help print the help on stdout and exit 0.
//
// Who may import it: the commands under cmd/ and their front ends
// (vmmcmd); it imports nothing of Godwit's.
package cli

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Version and Commit are set at link time by the Makefile
// (-ldflags "-X github.com/godwit-vmm/godwit/internal/cli.Version=...");
// without them the Go build information is used.
var (
	Version = ""
	Commit  = ""
)

// VersionText is "PROG VERSION COMMIT GO": what `PROG version` prints.
func VersionText(prog string) string {
	v, rev, dirty := Version, Commit, false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && rev == "":
				rev = s.Value
			case s.Key == "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	out := prog + " " + v
	if rev != "" {
		if len(rev) == 40 { // a full hash from the Go build information
			rev = rev[:12]
		}
		out += " " + rev
		if dirty && !strings.HasSuffix(rev, "dirty") {
			out += "+dirty"
		}
	}
	return out + " " + runtime.Version()
}

// VersionCommand is `PROG version`.
func VersionCommand(prog string, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version and commit this binary was built from",
		Example: "  " + prog + " version\n  " + prog + " --version",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(stdout, VersionText(prog))
			return err
		},
	}
}

// UsageError is a command line that cannot be used: exit status 2 and a
// hint naming the command's help.
type UsageError struct {
	Cmd *cobra.Command // whose help the hint names; nil: the root's
	Err error
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError of cmd.
func Usagef(cmd *cobra.Command, format string, args ...any) error {
	return &UsageError{Cmd: cmd, Err: fmt.Errorf(format, args...)}
}

// Execute runs the command tree root on args and returns the exit status,
// having printed any error on stderr as the package says.
func Execute(root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	Prepare(root, stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	return Report(root, cmd, err, stderr)
}

// Prepare sets root's tree to report errors through Report, not by
// itself, and to print help on stdout.
func Prepare(root *cobra.Command, stdout, stderr io.Writer) {
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.DisableSuggestions = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &UsageError{Cmd: c, Err: err}
	})
	if root.Version == "" {
		root.Version = VersionText(root.Name())
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.InitDefaultCompletionCmd() // now, so that it reports errors as the rest
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			Group(c)
		}
	}
	usageArgs(root)
}

// usageArgs makes the positional-argument errors of every command in the
// tree usage errors, as flag errors are.
func usageArgs(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				var ue *UsageError
				if errors.As(err, &ue) {
					return err
				}
				return &UsageError{Cmd: cmd, Err: err}
			}
			return nil
		}
	}
	for _, s := range c.Commands() {
		usageArgs(s)
	}
}

// Report prints err (from running cmd of root) and returns the exit status.
func Report(root, cmd *cobra.Command, err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	prog := root.Name()
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	if m := exclusive.FindStringSubmatch(msg); m != nil {
		names := strings.Fields(m[1])
		for i := range names {
			names[i] = "--" + names[i]
		}
		msg = strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1] + " exclude each other"
		err = &UsageError{Err: errors.New(msg)}
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		c := cmd
		if ue != nil && ue.Cmd != nil {
			c = ue.Cmd
		}
		if c == nil {
			c = root
		}
		fmt.Fprintf(stderr, "%s: %s\nRun '%s --help' for usage.\n", c.CommandPath(), msg, c.CommandPath())
		return 2
	}
	name := prog
	if cmd != nil && cmd != root {
		name = cmd.CommandPath()
	}
	fmt.Fprintf(stderr, "%s: %s\n", name, msg)
	return 1
}

// exclusive is cobra's error for flags marked mutually exclusive.
var exclusive = regexp.MustCompile(`^if any flags in the group \[[^]]*\] are set none of the others can be; \[([^]]*)\] were all set$`)

// Group makes cmd a group of subcommands: run bare, or with a word that
// is none of them, it fails with a usage error naming them.
func Group(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.AddCommand(subs...)
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(c *cobra.Command, args []string) error {
		var names []string
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() {
				names = append(names, s.Name())
			}
		}
		switch {
		case !c.HasParent() && len(args) == 0:
			return Usagef(c, "no command given")
		case !c.HasParent():
			return Usagef(c, "unknown command %q", args[0])
		case len(args) == 0:
			return Usagef(c, "give a subcommand: %s", strings.Join(names, ", "))
		}
		return Usagef(c, "unknown subcommand %q (%s)", args[0], strings.Join(names, ", "))
	}
	return cmd
}

// Args checks that a command got exactly the positional arguments named
// in what, e.g. Args("NAME") or Args("NAME", "TEXT...") (the last may be
// variadic with "...").
func Args(what ...string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		variadic := len(what) > 0 && strings.HasSuffix(what[len(what)-1], "...")
		switch {
		case len(args) < len(what):
			return Usagef(c, "missing %s", strings.Join(what[len(args):], " "))
		case len(args) > len(what) && !variadic:
			return Usagef(c, "unexpected argument %q", args[len(what)])
		}
		return nil
	}
}

// Changed reports whether the flag name was given on the command line.
func Changed(fs *pflag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	return f != nil && f.Changed
}
