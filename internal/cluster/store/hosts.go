package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Host is everything stored about one host. Alive and Usage are nil when the
// host's lease is gone (the host is lost or has not registered).
type Host struct {
	Name     string
	Info     *HostInfo
	InfoRev  int64
	Alive    *HostAlive
	Usage    *HostUsage
	State    *HostState
	StateRev int64
}

// RegisterHost is the agent's join, in one Txn: it writes hosts/<h>/info,
// writes hosts/<h>/alive bound to lease, and sets hosts/<h>/state to active
// only if the host has no state yet (a host the controller marked failed or
// put in maintenance stays so). It returns the revision of the write.
func (s *Store) RegisterHost(ctx context.Context, info HostInfo, lease clientv3.LeaseID) (int64, error) {
	if err := ValidName("host", info.Host); err != nil {
		return 0, err
	}
	h := info.Host
	infoVal, err := encode(HostInfoKey(h), &info)
	if err != nil {
		return 0, err
	}
	aliveVal, err := encode(HostAliveKey(h), &HostAlive{Host: h, Lease: int64(lease), Since: time.Now().UTC()})
	if err != nil {
		return 0, err
	}
	stateVal, err := encode(HostStateKey(h), &HostState{State: HostActive, Reason: "registered", Since: time.Now().UTC()})
	if err != nil {
		return 0, err
	}
	then := []clientv3.Op{
		clientv3.OpPut(HostInfoKey(h), infoVal),
		clientv3.OpPut(HostAliveKey(h), aliveVal, clientv3.WithLease(lease)),
		clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(HostStateKey(h)), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(HostStateKey(h), stateVal)}, nil),
	}
	r, err := s.txn(ctx, Guard{}, nil, then, nil)
	if err != nil {
		return 0, writeError("store: register host "+h, err)
	}
	return r.rev, nil
}

// PutHostInfo updates hosts/<h>/info (a fact changed).
func (s *Store) PutHostInfo(ctx context.Context, info HostInfo) (int64, error) {
	if err := ValidName("host", info.Host); err != nil {
		return 0, err
	}
	return s.putCAS(ctx, HostInfoKey(info.Host), &info, AnyRev, Guard{})
}

// PutHostUsage writes hosts/<h>/usage bound to the host lease.
func (s *Store) PutHostUsage(ctx context.Context, host string, u HostUsage, lease clientv3.LeaseID) (int64, error) {
	if err := ValidName("host", host); err != nil {
		return 0, err
	}
	return s.putCAS(ctx, HostUsageKey(host), &u, AnyRev, Guard{}, clientv3.WithLease(lease))
}

// SetHostState writes hosts/<h>/state if its ModRevision is expectRev
// (AnyRev: always). Controller writes pass the leader Guard.
func (s *Store) SetHostState(ctx context.Context, host string, st HostState, expectRev int64, g Guard) (int64, error) {
	if err := ValidName("host", host); err != nil {
		return 0, err
	}
	if !st.State.Valid() {
		return 0, fmt.Errorf("store: host %s: unknown state %q", host, st.State)
	}
	if st.Since.IsZero() {
		st.Since = time.Now().UTC()
	}
	return s.putCAS(ctx, HostStateKey(host), &st, expectRev, g)
}

// GetHost reads every key of one host in one linearizable read.
// It returns ErrNotFound if the host never registered.
func (s *Store) GetHost(ctx context.Context, host string) (Host, error) {
	if err := ValidName("host", host); err != nil {
		return Host{}, err
	}
	hosts, _, err := s.listHosts(ctx, HostsPrefix+host+"/")
	if err != nil {
		return Host{}, err
	}
	if len(hosts) == 0 {
		return Host{}, fmt.Errorf("host %s: %w", host, ErrNotFound)
	}
	return hosts[0], nil
}

// ListHosts reads every host, sorted by name, and the revision of the read.
func (s *Store) ListHosts(ctx context.Context) ([]Host, int64, error) {
	return s.listHosts(ctx, HostsPrefix)
}

func (s *Store) listHosts(ctx context.Context, prefix string) ([]Host, int64, error) {
	var hosts []Host
	idx := map[string]int{}
	rev, err := s.list(ctx, prefix, func(key string, val []byte, modRev int64) error {
		name, leaf, ok := splitKey(HostsPrefix, key)
		if !ok {
			return nil
		}
		i, seen := idx[name]
		if !seen {
			i = len(hosts)
			idx[name] = i
			hosts = append(hosts, Host{Name: name})
		}
		h := &hosts[i]
		switch leaf {
		case "info":
			h.Info, h.InfoRev = new(HostInfo), modRev
			return decode(key, val, h.Info)
		case "alive":
			h.Alive = new(HostAlive)
			return decode(key, val, h.Alive)
		case "usage":
			h.Usage = new(HostUsage)
			return decode(key, val, h.Usage)
		case "state":
			h.State, h.StateRev = new(HostState), modRev
			return decode(key, val, h.State)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	slices.SortFunc(hosts, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
	return hosts, rev, nil
}

func sortVMs(vms []VM) {
	slices.SortFunc(vms, func(a, b VM) int { return strings.Compare(a.Name, b.Name) })
}

// VM is everything stored about one VM.
type VM struct {
	Name      string
	Spec      *VMSpec
	SpecRev   int64
	Owner     *Owner
	OwnerRev  int64 // fencing epoch; 0 when unowned
	Status    *VMStatus
	Migration *Migration
}

// decodeKey fills in the part of v that its key vms/<v>/<leaf> holds
// (spec, owner or status); other leaves are ignored.
func (v *VM) decodeKey(leaf, key string, val []byte, modRev int64) error {
	switch leaf {
	case "spec":
		v.Spec, v.SpecRev = new(VMSpec), modRev
		return decode(key, val, v.Spec)
	case "owner":
		v.Owner, v.OwnerRev = new(Owner), modRev
		return decode(key, val, v.Owner)
	case "status":
		v.Status = new(VMStatus)
		return decode(key, val, v.Status)
	}
	return nil
}

// decodeMigration fills in v's migration record from its key migrations/<v>.
func (v *VM) decodeMigration(key string, val []byte) error {
	v.Migration = new(Migration)
	return decode(key, val, v.Migration)
}

// PutVMSpec writes vms/<v>/spec if its ModRevision is expectRev (0: create
// only; AnyRev: always).
func (s *Store) PutVMSpec(ctx context.Context, vm string, spec VMSpec, expectRev int64, g Guard) (int64, error) {
	if err := ValidName("vm", vm); err != nil {
		return 0, err
	}
	if spec.VCPUs <= 0 || spec.MemBytes == 0 {
		return 0, fmt.Errorf("store: vm %s: spec needs vcpus > 0 and mem_bytes > 0", vm)
	}
	return s.putCAS(ctx, VMSpecKey(vm), &spec, expectRev, g)
}

// GetVMSpec reads vms/<v>/spec and its ModRevision.
func (s *Store) GetVMSpec(ctx context.Context, vm string) (VMSpec, int64, error) {
	var spec VMSpec
	rev, err := s.get(ctx, VMSpecKey(vm), &spec)
	return spec, rev, err
}

// DeleteVM removes a VM's spec, status and migration record, refusing with
// ErrOwned while it has an owner (stop it first, which deletes the owner).
func (s *Store) DeleteVM(ctx context.Context, vm string, g Guard) error {
	if err := ValidName("vm", vm); err != nil {
		return err
	}
	r, err := s.txn(ctx, g,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(OwnerKey(vm)), "=", 0)},
		[]clientv3.Op{clientv3.OpDelete(VMSpecKey(vm)), clientv3.OpDelete(VMStatusKey(vm)), clientv3.OpDelete(MigrationKey(vm))},
		nil)
	if errors.Is(err, ErrNotLeader) {
		return fmt.Errorf("store: delete vm %s: %w", vm, err)
	}
	if err != nil {
		return writeError("store: delete vm "+vm, err)
	}
	if !r.succeeded {
		return fmt.Errorf("store: delete vm %s: %w", vm, ErrOwned)
	}
	if r.responses[0].GetResponseDeleteRange().Deleted == 0 {
		return fmt.Errorf("store: delete vm %s: %w", vm, ErrNotFound)
	}
	return nil
}

// PutVMStatus writes vms/<v>/status bound to the reporting host's lease.
func (s *Store) PutVMStatus(ctx context.Context, vm string, st VMStatus, lease clientv3.LeaseID) (int64, error) {
	if err := ValidName("vm", vm); err != nil {
		return 0, err
	}
	if st.At.IsZero() {
		st.At = time.Now().UTC()
	}
	return s.putCAS(ctx, VMStatusKey(vm), &st, AnyRev, Guard{}, clientv3.WithLease(lease))
}

// GetVMStatus reads vms/<v>/status.
func (s *Store) GetVMStatus(ctx context.Context, vm string) (VMStatus, int64, error) {
	var st VMStatus
	rev, err := s.get(ctx, VMStatusKey(vm), &st)
	return st, rev, err
}

// ListVMs reads every VM (spec, owner, status, migration), sorted by name,
// in one linearizable read, and the revision of the read.
func (s *Store) ListVMs(ctx context.Context) ([]VM, int64, error) {
	// Two prefixes: read both at one revision with a Txn of two ranges.
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(VMsPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(MigrationsPrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("store: list vms: %w", err)
	}
	var vms []VM
	idx := map[string]int{}
	at := func(name string) *VM {
		i, ok := idx[name]
		if !ok {
			i = len(vms)
			idx[name] = i
			vms = append(vms, VM{Name: name})
		}
		return &vms[i]
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		key := string(kv.Key)
		name, leaf, ok := splitKey(VMsPrefix, key)
		if !ok {
			continue
		}
		if err := at(name).decodeKey(leaf, key, kv.Value, kv.ModRevision); err != nil {
			return nil, 0, err
		}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		key := string(kv.Key)
		name := key[len(MigrationsPrefix):]
		if _, ok := idx[name]; !ok {
			continue // record of a deleted VM
		}
		if err := at(name).decodeMigration(key, kv.Value); err != nil {
			return nil, 0, err
		}
	}
	sortVMs(vms)
	return vms, resp.Header.Revision, nil
}

// PutMigration writes migrations/<v> if its ModRevision is expectRev
// (0: no record yet; AnyRev: always). The agents write progress with
// AnyRev; the controller creates records guarded. The terminal phases
// committed and aborted are written only by HandOver and AbortHandOver.
func (s *Store) PutMigration(ctx context.Context, m Migration, expectRev int64, g Guard) (int64, error) {
	if err := ValidName("vm", m.VM); err != nil {
		return 0, err
	}
	if m.Phase == MigrationCommitted || m.Phase == MigrationAborted {
		return 0, fmt.Errorf("store: migration %s of vm %s: phase %s is written only by HandOver/AbortHandOver", m.ID, m.VM, m.Phase)
	}
	if m.Updated.IsZero() {
		m.Updated = time.Now().UTC()
	}
	return s.putCAS(ctx, MigrationKey(m.VM), &m, expectRev, g)
}

// GetMigration reads migrations/<v>.
func (s *Store) GetMigration(ctx context.Context, vm string) (Migration, int64, error) {
	var m Migration
	rev, err := s.get(ctx, MigrationKey(vm), &m)
	return m, rev, err
}

// PutDrain writes drains/<h> (controller; guarded).
func (s *Store) PutDrain(ctx context.Context, d Drain, expectRev int64, g Guard) (int64, error) {
	if err := ValidName("host", d.Host); err != nil {
		return 0, err
	}
	return s.putCAS(ctx, DrainKey(d.Host), &d, expectRev, g)
}

// GetDrain reads drains/<h>.
func (s *Store) GetDrain(ctx context.Context, host string) (Drain, int64, error) {
	var d Drain
	rev, err := s.get(ctx, DrainKey(host), &d)
	return d, rev, err
}

// DeleteDrain removes drains/<h> if its ModRevision is expectRev (AnyRev: always).
func (s *Store) DeleteDrain(ctx context.Context, host string, expectRev int64, g Guard) error {
	return s.deleteCAS(ctx, DrainKey(host), expectRev, g)
}

// PutRule writes rules/<r>.
func (s *Store) PutRule(ctx context.Context, r Rule, expectRev int64, g Guard) (int64, error) {
	if err := ValidName("rule", r.Name); err != nil {
		return 0, err
	}
	return s.putCAS(ctx, RuleKey(r.Name), &r, expectRev, g)
}

// ListRules reads every rule, sorted by name.
func (s *Store) ListRules(ctx context.Context) ([]Rule, int64, error) {
	var rules []Rule
	rev, err := s.list(ctx, RulesPrefix, func(key string, val []byte, _ int64) error {
		var r Rule
		if err := decode(key, val, &r); err != nil {
			return err
		}
		rules = append(rules, r)
		return nil
	})
	return rules, rev, err
}

// DeleteRule removes rules/<r> if its ModRevision is expectRev (AnyRev: always).
func (s *Store) DeleteRule(ctx context.Context, name string, expectRev int64, g Guard) error {
	return s.deleteCAS(ctx, RuleKey(name), expectRev, g)
}

// PutConfig writes the pool's tunables.
func (s *Store) PutConfig(ctx context.Context, c Config, expectRev int64, g Guard) (int64, error) {
	return s.putCAS(ctx, ConfigKey, &c, expectRev, g)
}

// GetConfig reads the pool's tunables; ErrNotFound if never written.
func (s *Store) GetConfig(ctx context.Context) (Config, int64, error) {
	var c Config
	rev, err := s.get(ctx, ConfigKey, &c)
	return c, rev, err
}
