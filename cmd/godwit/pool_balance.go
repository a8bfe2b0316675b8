package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/godwit-vmm/godwit/internal/cli"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// balanceCommand is `godwit balance`.
func balanceCommand(stdout io.Writer) *cobra.Command {
	f := &poolFlags{}
	var dry bool
	var apply, moves, level int
	c := &cobra.Command{
		Use:   "balance [--dry-run] [--moves N] [--level 1-5] | balance --apply N",
		Short: "Load balancing across the pool's hosts: the plan, or apply its moves",
		Long: `--dry-run (the default) shows the host loads, the imbalance I = (σ/μ)/sqrt(N−1)
of the loads L = max(cpu, mem), and the plan: up to --moves moves (default
10), each the best single migration once the previous ones are done, with
its expected gain (I − I′)/I and predicted migration time; nothing moves.
--apply N requests the first N moves of the plan now (reason "balance").
The level (default: the controller's --balance-level, else 3) sets the
threshold: 1 only mandatory moves (must-rule violations), 2-5 thresholds
0.4/0.3/0.2/0.1.`,
		Example: `  godwit balance
  godwit balance --level 5 --moves 3 --json
  godwit balance --apply 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if apply < 0 || moves < 0 || level < 0 || level > 5 {
				return cli.Usagef(cmd, "--apply and --moves want a positive count, --level 1-5")
			}
			return balance(f, apply, moves, level, stdout)
		},
	}
	f.register(c.Flags())
	c.Flags().BoolVar(&dry, "dry-run", false, "show the plan without moving anything (the default)")
	c.Flags().IntVar(&apply, "apply", 0, "request the first N moves of the plan")
	c.Flags().IntVar(&moves, "moves", 0, "moves to plan in a dry run (default 10)")
	c.Flags().IntVar(&level, "level", 0, "1-5 (default: the controller's, else 3)")
	c.MarkFlagsMutuallyExclusive("dry-run", "apply")
	return c
}

func balance(f *poolFlags, apply, moves, level int, stdout io.Writer) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	var pl poolapi.BalancePlan
	if apply > 0 {
		pl, err = c.Balance(ctx, poolapi.BalanceRequest{Apply: apply, Level: level})
	} else {
		pl, err = c.BalancePlan(ctx, moves, level)
	}
	if err != nil {
		return err
	}
	if f.asJSON {
		return printJSON(stdout, pl)
	}
	printBalance(stdout, pl, apply > 0)
	for _, m := range pl.Moves {
		if m.Error != "" {
			return fmt.Errorf("move of vm %s to %s failed: %s", m.VM, m.To, m.Error)
		}
	}
	return nil
}

func printBalance(w io.Writer, pl poolapi.BalancePlan, applied bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tCPU\tMEM\tLOAD\tVMS")
	for _, l := range pl.Loads {
		fmt.Fprintf(tw, "%s\t%.0f%%\t%.0f%%\t%.3f\t%d\n", l.Host, 100*l.CPU, 100*l.Mem, l.Load, l.VMs)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nimbalance %.3f over %d hosts (level %d, threshold %.2f)\n", pl.Imbalance, pl.Hosts, pl.Level, pl.Threshold)
	if pl.Suspended != "" {
		fmt.Fprintf(w, "balancing suspended: %s\n", pl.Suspended)
	}
	auto := "automatic mode off"
	if pl.Auto.Level > 0 {
		auto = fmt.Sprintf("automatic mode level %d every %s, %d round(s) above threshold", pl.Auto.Level, pl.Auto.Every, pl.Auto.Above)
		if pl.Auto.LastRound != "" {
			auto += "; last round " + pl.Auto.LastRound
		}
	}
	fmt.Fprintln(w, auto)
	if len(pl.Moves) == 0 {
		fmt.Fprintf(w, "no move: %s\n", pl.Stop)
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "#\tVM\tFROM\tTO\tIMBALANCE\tGAIN\tPREDICTED\tNOTE"
	if applied {
		head += "\tMIGRATION"
	}
	fmt.Fprintln(tw, head)
	for i, m := range pl.Moves {
		var note []string
		if m.Mandatory {
			note = append(note, "mandatory: "+m.Why)
		}
		note = append(note, m.Penalties...)
		line := fmt.Sprintf("%d\t%s\t%s\t%s\t%.3f → %.3f\t%.1f%%\t%.1fs\t%s", i+1, m.VM, m.From, m.To, m.Before, m.After, 100*m.Gain, m.PredictedSeconds, dash(strings.Join(note, "; ")))
		if applied {
			line += "\t" + dash(m.Migration)
			if m.Error != "" {
				line += " (" + m.Error + ")"
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	verb := "after the plan"
	if applied {
		verb = fmt.Sprintf("once the %d requested move(s) finish", pl.Applied)
		if pl.Applied < len(pl.Moves) {
			verb = "if every move had been requested"
		}
	}
	fmt.Fprintf(w, "\nimbalance %.3f → %.3f %s (%s)\n", pl.Imbalance, pl.Final, verb, pl.Stop)
}
