package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/pki"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// The controller is the pool's security anchor: it runs where the CA
// lives (Config.PKIDir), takes its own certificate from it, serves its
// API and the embedded etcd only over mutual TLS, holds etcd's root role,
// and mirrors the CA's index into etcd: a user and role per host with a
// certificate (store.SyncHosts), and the CRL at store.CRLKey, which every
// agent follows. Revoking a host in the CA (godwit pki revoke) thus
// deletes its etcd user and makes every TLS peer refuse its certificate
// within a second or two.

// credDir is where the controller keeps its own credential.
func (c *Controller) credDir() string {
	return filepath.Join(c.ca.Dir(), "controllers", c.cfg.ID)
}

// loadCredential opens the CA and this controller's credential, issuing a
// new certificate when there is none, it expires within 30 days, or it
// does not name every address the controller serves on.
func (c *Controller) loadCredential() error {
	ca, err := pki.OpenCA(c.cfg.PKIDir)
	if err != nil {
		return fmt.Errorf("controller: --pki: %w", err)
	}
	if ca.Pool() != c.cfg.Pool {
		return fmt.Errorf("controller: the CA in %s is pool %q's, not pool %q's", c.cfg.PKIDir, ca.Pool(), c.cfg.Pool)
	}
	c.ca = ca
	c.caSeen = c.caStamp() // before the CRL is read: a later change is seen
	ips := c.serveIPs()
	dir := c.credDir()
	if !certCovers(filepath.Join(dir, pki.CertFile), ips, c.clock.Now()) {
		b, err := ca.Issue(pki.RoleController, c.cfg.ID, pki.IssueOptions{IPs: ips, DNSNames: []string{"localhost"}})
		if err != nil {
			return fmt.Errorf("controller: issue its certificate: %w", err)
		}
		if err := b.Write(dir); err != nil {
			return fmt.Errorf("controller: %w", err)
		}
		c.log.Info("controller certificate issued", "dir", dir, "ips", ips)
	}
	if c.cred, err = pki.LoadCredential(dir); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	crl, err := ca.CRLPEM()
	if err == nil {
		err = c.cred.SetCRL(crl)
	}
	if err == nil {
		err = c.writeEtcdCRL(crl)
	}
	if err != nil {
		return fmt.Errorf("controller: CRL: %w", err)
	}
	return nil
}

// etcdCRL is the CRL as the embedded etcd reads it: DER, re-read at each
// handshake.
func (c *Controller) etcdCRL() string { return filepath.Join(c.ca.Dir(), "crl.der") }

func (c *Controller) writeEtcdCRL(crlPEM []byte) error {
	blk, _ := pem.Decode(crlPEM)
	if blk == nil {
		return errors.New("the CA's CRL is not PEM")
	}
	tmp := c.etcdCRL() + ".tmp"
	if err := os.WriteFile(tmp, blk.Bytes, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.etcdCRL())
}

// serveIPs are the addresses the controller's certificate must name: its
// API's, its etcd's and loopback.
func (c *Controller) serveIPs() []net.IP {
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	add := func(host string) {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	if h, _, err := net.SplitHostPort(c.cfg.Listen); err == nil {
		add(h)
	}
	add(c.cfg.Etcd.Host)
	if u, err := url.Parse(c.cfg.AdvertiseURL); err == nil {
		add(u.Hostname())
	}
	return ips
}

// certCovers reports whether the certificate at path names every IP and
// stays valid for 30 days after now.
func certCovers(path string, ips []net.IP, now time.Time) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return false
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || cert.NotAfter.Sub(now) < 30*24*time.Hour {
		return false
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// etcdTLS is the client side of the controller's etcd connection: the
// embedded member serves with a controller certificate.
func (c *Controller) etcdTLS() *tls.Config {
	return c.cred.ClientConfig("", pki.AllowRoles(pki.RoleController))
}

// checkEndpoints refuses plain-HTTP external etcd endpoints except on
// loopback: on the pool network etcd must be TLS.
func checkEndpoints(eps []string) error {
	for _, e := range eps {
		u, err := url.Parse(e)
		if err != nil || u.Host == "" {
			return fmt.Errorf("controller: etcd endpoint %q: want https://HOST:PORT", e)
		}
		if u.Scheme == "https" {
			continue
		}
		if ip := net.ParseIP(u.Hostname()); u.Scheme != "http" || ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("controller: etcd endpoint %q: etcd on the pool network must be https with client certificates", e)
		}
	}
	return nil
}

// etcdIsTLS reports whether the etcd connection is TLS: the embedded
// member always is; external endpoints may be plain only on loopback.
func (c *Controller) etcdIsTLS() bool {
	for _, e := range c.endpoints {
		if !strings.HasPrefix(e, "https://") {
			return false
		}
	}
	return true
}

// pkiLoop mirrors the CA into etcd and this controller's CRL at start and
// whenever the CA's index or CRL changes, and keeps the per-VM grants, until
// ctx ends.
func (c *Controller) pkiLoop(ctx context.Context, seen string) {
	for {
		stamp := c.caStamp()
		if stamp != seen {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.syncPKI(sctx)
			cancel()
			if err == nil {
				seen = stamp
			} else if ctx.Err() == nil {
				c.log.Warn("mirror the CA into etcd", "err", err)
			}
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := c.syncVMGrants(sctx); err != nil && ctx.Err() == nil {
			c.log.Warn("per-VM etcd grants", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-c.clock.After(time.Second):
		}
	}
}

// caStamp changes whenever the CA's index or CRL does.
func (c *Controller) caStamp() string {
	return fileStamp(filepath.Join(c.ca.Dir(), "index.json")) + fileStamp(filepath.Join(c.ca.Dir(), pki.CRLFile))
}

func fileStamp(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return "missing;"
	}
	return fmt.Sprintf("%d/%d;", st.ModTime().UnixNano(), st.Size())
}

// syncPKI gives every host with a valid certificate its etcd user and
// role, removes those of revoked hosts, and publishes the CRL.
func (c *Controller) syncPKI(ctx context.Context) error {
	crl, err := c.ca.CRLPEM()
	if err != nil {
		return err
	}
	if err := c.cred.SetCRL(crl); err != nil {
		return err
	}
	if err := c.writeEtcdCRL(crl); err != nil {
		return err
	}
	if !c.etcdIsTLS() {
		return nil
	}
	issued, err := c.ca.Issued()
	if err != nil {
		return err
	}
	var hosts []string
	now := c.clock.Now()
	for _, is := range issued {
		if is.Role == pki.RoleHost && !is.Revoked && now.Before(is.NotAfter) && !slices.Contains(hosts, is.Name) {
			hosts = append(hosts, is.Name)
		}
	}
	if err := store.SyncHosts(ctx, c.cli, hosts); err != nil {
		return err
	}
	c.grantMu.Lock()
	c.hostUsers = hosts
	c.grantMu.Unlock()
	if _, err := c.cli.Put(ctx, store.CRLKey, string(crl)); err != nil {
		return fmt.Errorf("publish the CRL: %w", err)
	}
	c.log.Debug("CA mirrored into etcd", "hosts", hosts)
	return nil
}

// grantVM lets host write VM vm's owner, status and migration keys in
// etcd, before the controller writes what makes host run or receive it.
// A host without an etcd user (no certificate yet) cannot write anything
// and is skipped.
func (c *Controller) grantVM(ctx context.Context, host, vm string) error {
	if !c.etcdIsTLS() {
		return nil
	}
	c.grantSync.Lock()
	defer c.grantSync.Unlock()
	c.noteGrant(host, vm)
	err := store.GrantVM(ctx, c.cli, host, vm)
	if errors.Is(err, rpctypes.ErrRoleNotFound) {
		c.log.Debug("no etcd role for the host; nothing to grant", "host", host, "vm", vm)
		return nil
	}
	if err != nil {
		return unavailable(err)
	}
	return nil
}

// grantMigration lets both ends of migration m write the VM's keys.
func (c *Controller) grantMigration(ctx context.Context, m store.Migration) error {
	for _, h := range []string{m.Src, m.Dst} {
		if err := c.grantVM(ctx, h, m.VM); err != nil {
			return err
		}
	}
	return nil
}

// syncVMGrants makes the per-VM grants follow the pool: each host may
// write the keys of the VMs it owns, reports or is migrating. A grant made
// in the last grantHold is kept even if the snapshot does not show it yet.
func (c *Controller) syncVMGrants(ctx context.Context) error {
	if !c.etcdIsTLS() {
		return nil
	}
	c.grantSync.Lock()
	defer c.grantSync.Unlock()
	began := c.clock.Now()
	vms, _, err := c.st.ListVMs(ctx)
	if err != nil {
		return err
	}
	c.grantMu.Lock()
	want := store.VMHosts(vms, c.hostUsers)
	c.grantMu.Unlock()
	for host, vms := range c.heldGrants(began) {
		if m, ok := want[host]; ok {
			for _, vm := range vms {
				m[vm] = true
			}
		}
	}
	return store.SyncVMGrants(ctx, c.cli, want)
}

// noteGrant records that host was granted VM vm's keys now.
func (c *Controller) noteGrant(host, vm string) {
	c.grantMu.Lock()
	c.granted[host+"/"+vm] = c.clock.Now()
	c.grantMu.Unlock()
}

// heldGrants forgets the grants made more than grantHold before now and
// returns the others, as host -> VMs.
func (c *Controller) heldGrants(now time.Time) map[string][]string {
	c.grantMu.Lock()
	defer c.grantMu.Unlock()
	held := map[string][]string{}
	for k, at := range c.granted {
		host, vm, _ := strings.Cut(k, "/")
		if now.Sub(at) > grantHold {
			delete(c.granted, k)
			continue
		}
		held[host] = append(held[host], vm)
	}
	return held
}

// grantHold is how long a fresh grant is kept before the pool's state
// must show why.
const grantHold = 30 * time.Second

// apiTLS is the API's server side: users (the CLI) and peer controllers.
func (c *Controller) apiTLS() *tls.Config {
	return c.cred.ServerConfig(pki.AllowRoles(pki.RoleUser, pki.RoleController))
}

// agentTLS is the client side towards host's agent: only that host's
// certificate is accepted.
func (c *Controller) agentTLS(host string) *tls.Config {
	return c.cred.ClientConfig("", pki.AllowPeer(pki.RoleHost, host))
}

var errNoPKI = errors.New("controller: --pki is required (the pool's CA directory, made by godwit pki init)")
