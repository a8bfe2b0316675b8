package controller

import (
	"context"
	"fmt"
	"slices"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/placement"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// poolState is one linearizable read of hosts, VMs and rules.
type poolState struct {
	hosts []store.Host
	vms   []store.VM
	rules []store.Rule
}

func (c *Controller) readPool(ctx context.Context) (poolState, error) {
	var p poolState
	var err error
	if p.hosts, _, err = c.st.ListHosts(ctx); err != nil {
		return p, unavailable(err)
	}
	if p.vms, _, err = c.st.ListVMs(ctx); err != nil {
		return p, unavailable(err)
	}
	if p.rules, _, err = c.st.ListRules(ctx); err != nil {
		return p, unavailable(err)
	}
	return p, nil
}

// placementVM is what placement needs of a spec.
func placementVM(name string, s store.VMSpec) placement.VM {
	v := placement.VM{Name: name, VCPUs: s.VCPUs, MemBytes: s.MemBytes}
	for _, d := range s.Disks {
		v.Storage = append(v.Storage, d.StorageID)
	}
	for _, n := range s.NICs {
		v.Networks = append(v.Networks, n.Network)
	}
	return v
}

// placementHosts builds placement's view: each host's facts, and what is
// counted against it — the VMs it owns, migrations heading to it that are
// not finished, and the reservations of in-flight writes (resv; the caller
// holds placeMu).
func (c *Controller) placementHosts(p poolState, resv map[string]reservation) []placement.Host {
	out := make([]placement.Host, 0, len(p.hosts))
	idx := map[string]int{}
	for _, h := range p.hosts {
		ph := placement.Host{Name: h.Name, Alive: h.Alive != nil}
		if h.State != nil {
			ph.State = string(h.State.State)
		}
		if i := h.Info; i != nil {
			ph.Accel, ph.CPUIDHash, ph.TSCKHz, ph.CPUs, ph.MemBytes = accelOf(i), i.CPUIDHash, i.TSCKHz, i.CPUs, i.MemBytes
			ph.Storage, ph.Networks = i.StorageIDs, i.Networks
		}
		idx[h.Name] = len(out)
		out = append(out, ph)
	}
	add := func(host, vm string, mem uint64, vcpus int) {
		if i, ok := idx[host]; ok {
			out[i].AllocMemBytes += mem
			out[i].AllocVCPUs += vcpus
			if !slices.Contains(out[i].VMs, vm) {
				out[i].VMs = append(out[i].VMs, vm)
			}
		}
	}
	for _, v := range p.vms {
		if v.Spec == nil {
			continue
		}
		need := c.cfg.Policy.Need(placementVM(v.Name, *v.Spec))
		if v.Owner != nil {
			add(v.Owner.Host, v.Name, need, v.Spec.VCPUs)
		}
		if m := v.Migration; m != nil && !m.Phase.Terminal() && (v.Owner == nil || m.Dst != v.Owner.Host) {
			add(m.Dst, v.Name, need, v.Spec.VCPUs)
		}
	}
	// A reservation counts until the store shows what it reserved: the
	// owner key (placement) or the migration record (migration). Counting
	// both would refuse VMs that fit.
	owner, migration := map[string]string{}, map[string]string{}
	for _, v := range p.vms {
		if v.Owner != nil {
			owner[v.Name] = v.Owner.Host
		}
		if v.Migration != nil {
			migration[v.Name] = v.Migration.ID
		}
	}
	for _, r := range resv {
		switch {
		case r.migration == "" && owner[r.vm] == r.host:
		case r.migration != "" && migration[r.vm] == r.migration:
		default:
			add(r.host, r.vm, r.memBytes, r.vcpus)
		}
	}
	return out
}

func placementRules(rules []store.Rule) []placement.Rule {
	out := make([]placement.Rule, 0, len(rules))
	for _, r := range rules {
		out = append(out, placement.Rule{Name: r.Name, Kind: r.Kind, Must: r.Must, VMs: r.VMs, Hosts: r.Hosts})
	}
	return out
}

// decision is a chosen host with its reservation held.
type decision struct {
	host  string
	lease clientv3.LeaseID
	key   string // reservation key
}

// choose picks a host for vm (explicit names one; from is the VM's current
// host for a migration, migID the ID its record will carry) and reserves the
// capacity until release.
func (c *Controller) choose(ctx context.Context, name string, spec store.VMSpec, explicit, from, migID string) (decision, error) {
	c.placeMu.Lock()
	defer c.placeMu.Unlock()
	p, err := c.readPool(ctx)
	if err != nil {
		return decision{}, err
	}
	hosts := c.placementHosts(p, c.resv)
	req := placement.Request{VM: placementVM(name, spec), Hosts: hosts, Rules: placementRules(p.rules)}
	byName := map[string]placement.Host{}
	for _, h := range hosts {
		byName[h.Name] = h
	}
	if from != "" {
		f, ok := byName[from]
		if !ok {
			return decision{}, conflict(fmt.Sprintf("vm %s runs on host %s, which the pool does not know (no hosts/%s keys)", name, from, from), nil)
		}
		req.From = &f
	}
	var chosen string
	if explicit != "" {
		h, ok := byName[explicit]
		if !ok {
			return decision{}, notFound(fmt.Sprintf("unknown host %s (godwit host list shows the pool's hosts)", explicit))
		}
		if why := c.cfg.Policy.Check(req, h); len(why) > 0 {
			verb := "place vm " + name + " on"
			if from != "" {
				verb = "migrate vm " + name + " to"
			}
			return decision{}, conflict(fmt.Sprintf("cannot %s host %s: %s", verb, explicit, joinReasons(why)), map[string][]string{explicit: why})
		}
		chosen = explicit
	} else {
		res := c.cfg.Policy.Rank(req)
		if err := res.Err(name); err != nil {
			reasons := map[string][]string{}
			for _, r := range res.Rejected {
				reasons[r.Host] = r.Reasons
			}
			msg := err.Error()
			if from != "" {
				msg = fmt.Sprintf("no host can take vm %s from %s: %s", name, from, trimPrefix(msg))
			} else {
				msg = trimPrefix(msg)
			}
			return decision{}, conflict(msg, reasons)
		}
		chosen = res.Best()
	}
	d := decision{host: chosen, key: "place/" + name}
	if migID != "" {
		d.key = "migrate/" + name
	}
	if from == "" {
		for _, h := range p.hosts {
			if h.Name == chosen && h.Alive != nil {
				d.lease = clientv3.LeaseID(h.Alive.Lease)
			}
		}
	}
	c.resv[d.key] = reservation{host: chosen, vm: name, memBytes: c.cfg.Policy.Need(req.VM), vcpus: spec.VCPUs, migration: migID}
	c.log.Debug("reserved", "vm", name, "host", chosen, "migration", migID)
	return d, nil
}

// release drops a reservation once its write has landed or failed.
func (c *Controller) release(d decision) {
	c.placeMu.Lock()
	delete(c.resv, d.key)
	c.placeMu.Unlock()
}

// reservations returns a copy of the in-flight reservations (tests, metrics).
func (c *Controller) reservations() []reservation {
	c.placeMu.Lock()
	defer c.placeMu.Unlock()
	out := make([]reservation, 0, len(c.resv))
	for _, r := range c.resv {
		out = append(out, r)
	}
	return out
}

func joinReasons(why []string) string {
	s := ""
	for i, w := range why {
		if i > 0 {
			s += ", "
		}
		s += w
	}
	return s
}

func trimPrefix(s string) string {
	const p = "placement: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

// accelOf is a host's accelerator; agents from before the software CPU
// did not report one and ran KVM.
func accelOf(i *store.HostInfo) string {
	if i.Accel == "" {
		return "kvm"
	}
	return i.Accel
}
