package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit-vmm/godwit/internal/cli"
	"github.com/godwit-vmm/godwit/internal/limits"
	"github.com/godwit-vmm/godwit/internal/pki"
)

// pkiCommand is `godwit pki`: the pool's certificate authority, run where
// the CA lives (the controller's host).
func pkiCommand(stdout io.Writer) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "pki",
		Short: "The pool's CA: credentials for hosts, users and controllers",
		Long: `The pool's certificate authority. Run it where the CA lives (the
controller's host): init makes it, issue signs a credential directory (copy
it to the host or user it names; issuing again to the same directory rotates
it, and running processes take the new certificate at their next
connection), revoke revokes every certificate of a holder (the controller
publishes the new CRL and removes a host's etcd user), list shows them all.`,
		Example: `  godwit pki init --dir /etc/godwit/pki --pool prod
  godwit pki issue --dir /etc/godwit/pki --role host --name a --ip 10.0.1.1 --out /tmp/a
  godwit pki revoke --dir /etc/godwit/pki --role user --name alice
  godwit pki list --dir /etc/godwit/pki`,
	}
	c.PersistentFlags().StringVar(&dir, "dir", "/etc/godwit/pki", "the CA directory")

	var pool string
	initCmd := &cobra.Command{
		Use:     "init --dir DIR --pool NAME",
		Short:   "Make the pool's CA in DIR (ca.pem, ca-key.pem, crl.pem, index.json; mode 0700)",
		Example: "  godwit pki init --dir /etc/godwit/pki --pool prod",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			ca, err := pki.Init(dir, pool)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "pool %s: CA made in %s\n", ca.Pool(), ca.Dir())
			return nil
		},
	}
	initCmd.Flags().StringVar(&pool, "pool", "godwit", "the pool's name")

	var role, name, out, ips, dns string
	var days int
	issue := &cobra.Command{
		Use:   "issue --role host|user|controller --name NAME --out DIR [flags]",
		Short: "Sign a certificate and write a credential directory (ca.pem, cert.pem, key.pem)",
		Example: `  godwit pki issue --dir /etc/godwit/pki --role host --name a --ip 10.0.1.1 --out /tmp/a
  godwit pki issue --dir /etc/godwit/pki --role user --name alice --out ~/.godwit/alice --days 30`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return pkiIssue(c, dir, pki.Role(role), name, out, ips, dns, days, stdout)
		},
	}
	fs := issue.Flags()
	fs.StringVar(&role, "role", "", "host, user or controller")
	fs.StringVar(&name, "name", "", "the holder's name ("+limits.NameGrammar+")")
	fs.StringVar(&out, "out", "", "the credential directory to write")
	fs.StringVar(&ips, "ip", "", "IP addresses the holder serves on, comma-separated")
	fs.StringVar(&dns, "dns", "", "DNS names the holder serves as, comma-separated")
	fs.IntVar(&days, "days", 365, "validity in days")

	revoke := &cobra.Command{
		Use:     "revoke --role ROLE --name NAME",
		Short:   "Revoke every certificate of ROLE:NAME",
		Example: "  godwit pki revoke --dir /etc/godwit/pki --role host --name b",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			ca, err := pki.OpenCA(dir)
			if err != nil {
				return err
			}
			serials, err := ca.Revoke(pki.Role(role), name)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "revoked %d certificate(s) of %s:%s; CRL %s/%s updated\n", len(serials), role, name, ca.Dir(), pki.CRLFile)
			return nil
		},
	}
	revoke.Flags().StringVar(&role, "role", "", "host, user or controller")
	revoke.Flags().StringVar(&name, "name", "", "the holder's name")

	list := &cobra.Command{
		Use:     "list",
		Short:   "Every certificate issued, with its state",
		Example: "  godwit pki list --dir /etc/godwit/pki",
		Args:    cobra.NoArgs,
		RunE:    func(*cobra.Command, []string) error { return pkiList(dir, stdout) },
	}
	return cli.Group(c, initCmd, issue, revoke, list)
}

func pkiList(dir string, stdout io.Writer) error {
	ca, err := pki.OpenCA(dir)
	if err != nil {
		return err
	}
	issued, err := ca.Issued()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%-12s %-20s %-34s %-20s %s\n", "ROLE", "NAME", "SERIAL", "NOT AFTER", "STATE")
	for _, c := range issued {
		state := "valid"
		switch {
		case c.Revoked:
			state = "revoked " + c.RevokedAt.UTC().Format(time.RFC3339)
		case time.Now().After(c.NotAfter):
			state = "expired"
		}
		fmt.Fprintf(stdout, "%-12s %-20s %-34s %-20s %s\n", c.Role, c.Name, c.Serial, c.NotAfter.UTC().Format(time.RFC3339), state)
	}
	return nil
}

func pkiIssue(cmd *cobra.Command, dir string, role pki.Role, name, out, ips, dns string, days int, stdout io.Writer) error {
	if out == "" {
		return cli.Usagef(cmd, "--out is required (the credential directory to write)")
	}
	if days <= 0 {
		return cli.Usagef(cmd, "--days %d: want a positive number", days)
	}
	o := pki.IssueOptions{Validity: time.Duration(days) * 24 * time.Hour}
	for _, s := range splitList(ips) {
		ip := net.ParseIP(s)
		if ip == nil {
			return cli.Usagef(cmd, "--ip %q is not an IP address", s)
		}
		o.IPs = append(o.IPs, ip)
	}
	o.DNSNames = splitList(dns)
	ca, err := pki.OpenCA(dir)
	if err != nil {
		return err
	}
	b, err := ca.Issue(role, name, o)
	if err != nil {
		return err
	}
	if err := b.Write(out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s:%s: credential written to %s (valid %d days)\n", role, name, out, days)
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}
