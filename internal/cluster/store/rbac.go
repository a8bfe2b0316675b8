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
// keys and writes its own host record and lease-bound keys
// (HostsPrefix+NAME+"/"); and, granted per VM by the controller while the
// host runs or receives that VM (GrantVM, SyncVMGrants), the VM's owner
// and status keys and its migration record: the keys the agent and the
// VMM's handover write. A host cannot touch another host's record or
// lease, a VM it neither runs nor receives, any VM's spec, the
// controllers' keys, the rules or the pool configuration.

// RootUser is etcd's built-in administrator, which must exist before
// authentication is turned on. It gets no password and no certificate of
// the pool names it, so nobody logs in as it.
const RootUser = "root"

// HostRole is the etcd role (and user) of host name.
func HostRole(name string) string { return "host:" + name }

// hostPerms are the key ranges a host's role always has.
func hostPerms(name string) []perm {
	return []perm{
		{Prefix, true, clientv3.PermissionType(clientv3.PermRead)},
		{HostsPrefix + name + "/", true, clientv3.PermissionType(clientv3.PermReadWrite)},
	}
}

func isHostPerm(host, key string) bool {
	for _, p := range hostPerms(host) {
		if p.key == key {
			return true
		}
	}
	return false
}

// vmKeys are the keys of VM vm that the host running or receiving it
// writes.
func vmKeys(vm string) []string { return []string{OwnerKey(vm), VMStatusKey(vm), MigrationKey(vm)} }

type perm struct {
	key    string
	prefix bool // the range is every key under key
	typ    clientv3.PermissionType
}

func (p perm) rangeEnd() string {
	if p.prefix {
		return clientv3.GetPrefixRangeEnd(p.key)
	}
	return ""
}

// GrantVM lets host write VM vm's owner, status and migration keys.
func GrantVM(ctx context.Context, cli *clientv3.Client, host, vm string) error {
	for _, k := range vmKeys(vm) {
		if _, err := cli.RoleGrantPermission(ctx, HostRole(host), k, "", clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
			return fmt.Errorf("store: grant %s %s: %w", HostRole(host), k, err)
		}
	}
	return nil
}

// revokeVM takes GrantVM back.
func revokeVM(ctx context.Context, cli *clientv3.Client, host, vm string) error {
	for _, k := range vmKeys(vm) {
		_, err := cli.RoleRevokePermission(ctx, HostRole(host), k, "")
		if err != nil && !errors.Is(err, rpctypes.ErrPermissionNotGranted) {
			return fmt.Errorf("store: revoke %s %s: %w", HostRole(host), k, err)
		}
	}
	return nil
}

// vmGrants lists the VMs whose owner key host may write.
func vmGrants(ctx context.Context, cli *clientv3.Client, host string) (map[string]bool, error) {
	r, err := cli.RoleGet(ctx, HostRole(host))
	if err != nil {
		return nil, fmt.Errorf("store: etcd role %s: %w", HostRole(host), err)
	}
	vms := map[string]bool{}
	for _, p := range r.Perm {
		if name, leaf, ok := splitKey(VMsPrefix, string(p.Key)); ok && leaf == "owner" && len(p.RangeEnd) == 0 {
			vms[name] = true
		}
	}
	return vms, nil
}

// SyncVMGrants makes each host's per-VM grants equal want (host -> VMs):
// missing grants are added, others revoked.
func SyncVMGrants(ctx context.Context, cli *clientv3.Client, want map[string]map[string]bool) error {
	for host, vms := range want {
		have, err := vmGrants(ctx, cli, host)
		if err != nil {
			return err
		}
		for vm := range vms {
			if !have[vm] {
				if err := GrantVM(ctx, cli, host, vm); err != nil {
					return err
				}
			}
		}
		for vm := range have {
			if !vms[vm] {
				if err := revokeVM(ctx, cli, host, vm); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// VMHosts are the hosts that may write each VM's keys now: its owner, the
// host that last reported its status, and both ends of a migration under
// way. hosts lists every host with an etcd user.
func VMHosts(vms []VM, hosts []string) map[string]map[string]bool {
	want := map[string]map[string]bool{}
	for _, h := range hosts {
		want[h] = map[string]bool{}
	}
	add := func(h, vm string) {
		if m, ok := want[h]; ok {
			m[vm] = true
		}
	}
	for _, v := range vms {
		if v.Owner != nil {
			add(v.Owner.Host, v.Name)
		}
		if v.Status != nil {
			add(v.Status.Host, v.Name)
		}
		if m := v.Migration; m != nil && !m.Phase.Terminal() {
			add(m.Src, v.Name)
			add(m.Dst, v.Name)
		}
	}
	return want
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
	// Broad grants of an older Godwit (all VMs' keys) go.
	if r, err := cli.RoleGet(ctx, name); err == nil {
		for _, p := range r.Perm {
			if len(p.RangeEnd) > 0 && !isHostPerm(host, string(p.Key)) {
				if _, err := cli.RoleRevokePermission(ctx, name, string(p.Key), string(p.RangeEnd)); err != nil {
					return fmt.Errorf("store: revoke %s on %s: %w", name, p.Key, err)
				}
			}
		}
	}
	for _, p := range hostPerms(host) {
		if _, err := cli.RoleGrantPermission(ctx, name, p.key, p.rangeEnd(), p.typ); err != nil {
			return fmt.Errorf("store: grant %s on %s: %w", name, p.key, err)
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
