package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/pki"
)

const pkiUsage = `godwit pki: the pool's certificate authority (run where the CA lives: the controller's host)

Usage:
  godwit pki init   --dir DIR --pool NAME
        make the pool's CA in DIR (ca.pem, ca-key.pem, crl.pem, index.json; mode 0700)
  godwit pki issue  --dir DIR --role host|user|controller --name NAME --out OUT [--ip IP,...] [--dns NAME,...] [--days N]
        sign a certificate and write a credential directory OUT (ca.pem, cert.pem, key.pem);
        copy OUT to the host or user it names. Issuing again to the same OUT rotates it:
        running processes take the new certificate at their next connection.
  godwit pki revoke --dir DIR --role ROLE --name NAME
        revoke every certificate of ROLE:NAME; the controller publishes the new CRL and
        removes a host's etcd user
  godwit pki list   --dir DIR
        every certificate issued, with its state

`

// pkiCmd is `godwit pki`.
func pkiCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, pkiUsage)
		if len(args) == 0 {
			return cmdLineError{errors.New("pki: no subcommand given")}
		}
		return nil
	}
	fs := flag.NewFlagSet("pki "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, pkiUsage); fs.PrintDefaults() }
	dir := fs.String("dir", "/etc/godwit/pki", "the CA directory")
	pool := fs.String("pool", "godwit", "init: the pool's name")
	role := fs.String("role", "", "issue, revoke: host, user or controller")
	name := fs.String("name", "", "issue, revoke: the holder's name (a plain identifier)")
	out := fs.String("out", "", "issue: the credential directory to write")
	ips := fs.String("ip", "", "issue: IP addresses the holder serves on, comma-separated")
	dns := fs.String("dns", "", "issue: DNS names the holder serves as, comma-separated")
	days := fs.Int("days", 365, "issue: validity in days")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return cmdLineError{err}
	}
	if fs.NArg() > 0 {
		return cmdLineError{fmt.Errorf("pki: unexpected argument %q", fs.Arg(0))}
	}
	switch args[0] {
	case "init":
		ca, err := pki.Init(*dir, *pool)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "pool %s: CA made in %s\n", ca.Pool(), ca.Dir())
		return nil
	case "issue":
		return pkiIssue(*dir, pki.Role(*role), *name, *out, *ips, *dns, *days, stdout)
	case "revoke":
		ca, err := pki.OpenCA(*dir)
		if err != nil {
			return err
		}
		serials, err := ca.Revoke(pki.Role(*role), *name)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %d certificate(s) of %s:%s; CRL %s/%s updated\n", len(serials), *role, *name, ca.Dir(), pki.CRLFile)
		return nil
	case "list":
		ca, err := pki.OpenCA(*dir)
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
	default:
		return cmdLineError{fmt.Errorf("pki: unknown subcommand %q (init, issue, revoke or list)", args[0])}
	}
}

func pkiIssue(dir string, role pki.Role, name, out, ips, dns string, days int, stdout io.Writer) error {
	if out == "" {
		return cmdLineError{errors.New("pki issue: --out is required (the credential directory to write)")}
	}
	if days <= 0 {
		return cmdLineError{fmt.Errorf("pki issue: --days %d: want a positive number", days)}
	}
	o := pki.IssueOptions{Validity: time.Duration(days) * 24 * time.Hour}
	for _, s := range splitList(ips) {
		ip := net.ParseIP(s)
		if ip == nil {
			return cmdLineError{fmt.Errorf("pki issue: --ip %q is not an IP address", s)}
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
