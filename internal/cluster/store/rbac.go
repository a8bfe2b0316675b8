package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Access control in etcd. Every client of the pool's etcd presents a
// certificate of the pool's CA, and etcd (run with client certificate
// authentication) takes the certificate's common name as the user:
// "controller:ID" for a controller, "host:NAME" for a host's agent and
// VMMs. A CLI user has no etcd user at all: it goes through the
// controller's API.
//
// The controller holds etcd's root role. A host's role reads the pool's
// keys and writes only what an agent writes: its own host record and
// lease-bound keys (HostsPrefix+NAME+"/"), the VMs' owner and status keys,
// and migration records. etcd grants by key range, and a VM's keys are not
// under its host's, so a host can still write another host's VMs' keys;
// it cannot touch another host's record or lease, the controllers' keys,
// the rules or the pool configuration.

// RootUser is etcd's built-in administrator, which must exist before
// authentication is turned on. It gets no password and no certificate of
// the pool names it, so nobody logs in as it.
const RootUser = "root"

// HostRole is the etcd role (and user) of host name.
func HostRole(name string) string { return "host:" + name }

// hostPerms are the key ranges a host's role may read or write.
func hostPerms(name string) []perm {
	return []perm{
		{Prefix, clientv3.PermissionType(clientv3.PermRead)},
		{HostsPrefix + name + "/", clientv3.PermissionType(clientv3.PermReadWrite)},
		{VMsPrefix, clientv3.PermissionType(clientv3.PermReadWrite)},
		{MigrationsPrefix, clientv3.PermissionType(clientv3.PermReadWrite)},
	}
}

type perm struct {
	prefix string
	typ    clientv3.PermissionType
}

// EnableAuth turns on etcd's authentication with user as root (the
// controller's common name), or checks it is on already. Before it is on,
// any client with a certificate of the CA may do anything: call it before
// any other client connects.
func EnableAuth(ctx context.Context, cli *clientv3.Client, user string) error {
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return fmt.Errorf("store: etcd auth status: %w", err)
	}
	if st.Enabled {
		return nil
	}
	for _, u := range []string{RootUser, user} {
		if err := addUser(ctx, cli, u); err != nil {
			return err
		}
		if _, err := cli.UserGrantRole(ctx, u, "root"); err != nil {
			return fmt.Errorf("store: grant etcd root to %s: %w", u, err)
		}
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("store: enable etcd auth: %w", err)
	}
	return nil
}

// SyncHosts makes etcd's host users match hosts: each gets a user and a
// role with hostPerms; users of hosts no longer listed (revoked) are
// deleted with their roles, so their certificates stop working at once.
func SyncHosts(ctx context.Context, cli *clientv3.Client, hosts []string) error {
	want := map[string]bool{}
	for _, h := range hosts {
		want[HostRole(h)] = true
		if err := ensureHost(ctx, cli, h); err != nil {
			return err
		}
	}
	users, err := cli.UserList(ctx)
	if err != nil {
		return fmt.Errorf("store: list etcd users: %w", err)
	}
	for _, u := range users.Users {
		if !strings.HasPrefix(u, "host:") || want[u] {
			continue
		}
		if _, err := cli.UserDelete(ctx, u); err != nil && !errors.Is(err, rpctypes.ErrUserNotFound) {
			return fmt.Errorf("store: delete etcd user %s: %w", u, err)
		}
		if _, err := cli.RoleDelete(ctx, u); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
			return fmt.Errorf("store: delete etcd role %s: %w", u, err)
		}
	}
	return nil
}

func ensureHost(ctx context.Context, cli *clientv3.Client, host string) error {
	name := HostRole(host)
	if _, err := cli.RoleAdd(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("store: add etcd role %s: %w", name, err)
	}
	for _, p := range hostPerms(host) {
		if _, err := cli.RoleGrantPermission(ctx, name, p.prefix, clientv3.GetPrefixRangeEnd(p.prefix), p.typ); err != nil {
			return fmt.Errorf("store: grant %s on %s: %w", name, p.prefix, err)
		}
	}
	if err := addUser(ctx, cli, name); err != nil {
		return err
	}
	if _, err := cli.UserGrantRole(ctx, name, name); err != nil {
		return fmt.Errorf("store: grant role %s: %w", name, err)
	}
	return nil
}

// addUser adds a user that logs in only by certificate.
func addUser(ctx context.Context, cli *clientv3.Client, name string) error {
	_, err := cli.UserAddWithOptions(ctx, name, "", &clientv3.UserAddOptions{NoPassword: true})
	if err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
		return fmt.Errorf("store: add etcd user %s: %w", name, err)
	}
	return nil
}
