package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/fence"
	"github.com/godwit-vmm/godwit/internal/pki"
	"github.com/godwit-vmm/godwit/internal/sandbox"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// An agent proves itself with its host's certificate (Config.Credential)
// everywhere: to etcd, where the certificate's name is its user and role
// (store.HostRole); to other agents and the controller, whose certificates
// it checks in turn; and through its VMMs, which migrate over mutual TLS
// with it, each side accepting only the one peer host of that migration.

// checkVMMUser makes sure the VMMs, once they run as cfg.VMMUser, can
// still follow the fence (which fails closed): the state directory is
// made searchable by others (its VM directories stay 0750), and every
// directory above it must be too.
func (a *Agent) checkVMMUser() error {
	if a.cfg.VMMUser == "" {
		return nil
	}
	uid, gid, err := sandbox.LookupUser(a.cfg.VMMUser)
	if err != nil {
		return fmt.Errorf("agent: --vmm-user: %w", err)
	}
	if err := os.Chmod(a.cfg.StateDir, 0o711); err != nil {
		return fmt.Errorf("agent: state dir: %w", err)
	}
	if err := fence.CheckReadable(a.fencePath(), uid, gid); err != nil {
		return fmt.Errorf("agent: --vmm-user %s: %w (or pass --vmm-user \"\")", a.cfg.VMMUser, err)
	}
	return nil
}

// loadCredential opens the host's credential and checks it names cfg.Host.
func loadCredential(cfg Config) (*pki.Credential, error) {
	cred, err := pki.LoadCredential(cfg.Credential)
	if err != nil {
		return nil, fmt.Errorf("agent: --credential: %w", err)
	}
	if p := cred.Peer(); p.Role != pki.RoleHost || p.Name != cfg.Host {
		return nil, fmt.Errorf("agent: --credential %s holds %s's certificate, not host:%s's", cfg.Credential, p, cfg.Host)
	}
	return cred, nil
}

// etcdTLS is the client side of the etcd connection: the server is the
// pool's etcd, whose certificate is a controller's.
func (a *Agent) etcdTLS() *tls.Config {
	return a.cred.ClientConfig("", pki.AllowRoles(pki.RoleController))
}

// apiTLS lets in the pool's controllers, hosts and users; each route then
// says which of them it serves (allow).
func (a *Agent) apiTLS() *tls.Config {
	return a.cred.ServerConfig(nil)
}

// agentClient is a client of host's agent that accepts only its
// certificate.
func (a *Agent) agentClient(addr, host string) *Client {
	return NewClient(addr, a.cred.ClientConfig("", pki.AllowPeer(pki.RoleHost, host)))
}

// caller is the verified identity behind r (the TLS handshake checked it).
func caller(r *http.Request) (pki.Peer, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return pki.Peer{}, fmt.Errorf("no client certificate")
	}
	return pki.PeerOf(r.TLS.PeerCertificates[0])
}

// allow wraps h so that only peers rule accepts reach it; others get 403
// with the reason.
func allow(rule func(pki.Peer) error, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := caller(r)
		if err == nil {
			err = rule(p)
		}
		if err != nil {
			writeError(w, http.StatusForbidden, err)
			return
		}
		h(w, r)
	}
}

// followCRL keeps the credential's revocation list equal to the one the
// controller publishes in etcd, until ctx ends.
func (a *Agent) followCRL(ctx context.Context, cli *clientv3.Client) {
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cli.Get(gctx, store.CRLKey)
		cancel()
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		if len(resp.Kvs) == 1 {
			a.setCRL(resp.Kvs[0].Value)
		}
		for wr := range cli.Watch(clientv3.WithRequireLeader(ctx), store.CRLKey, clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				a.setCRL(ev.Kv.Value)
			}
		}
	}
}

func (a *Agent) setCRL(pem []byte) {
	if err := a.cred.SetCRL(pem); err != nil {
		a.log.Warn("the pool's CRL in etcd does not verify; keeping the last one", "err", err)
		return
	}
	a.log.Debug("CRL updated")
}
