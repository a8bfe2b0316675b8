// Package store is the pool's state in etcd: the key layout, the typed JSON
// values, host leases, and the ownership protocol that keeps a VM from ever
// running on two hosts.
//
// Who may import it: the host agent, the controller and the CLI's cluster
// commands. It imports only the etcd client, never the agent, the controller
// or the VMM packages; the embedded server lives in package etcdserver and an
// external etcd cluster is used the same way (Connect takes endpoints).
//
// # Keys
//
// Every key lives under Prefix ("/godwit/v1/"); every value is a JSON object
// whose "version" field is SchemaVersion. A value with a newer version is
// refused with ErrSchema rather than half understood.
//
//	key                 lease            value
//	hosts/<h>/info      -                HostInfo   addr, CPUID hash, TSC kHz, KVM caps, cpus, mem, storage, networks
//	hosts/<h>/alive     host lease       HostAlive  lease ID; its DELETE means "host lost"
//	hosts/<h>/usage     host lease       HostUsage  cpu, mem, dirty rate (every ~10 s)
//	hosts/<h>/state     -                HostState  active | draining | maintenance | failed
//	vms/<v>/spec        -                VMSpec     vcpus, memory, disks, nics, ha, desired state
//	vms/<v>/owner       owner's lease    Owner      host, lease; ModRevision = fencing epoch
//	vms/<v>/status      host lease       VMStatus   phase, pid, migratable + reason
//	migrations/<v>      -                Migration  src, dst, reason, expected owner rev, phase
//	drains/<h>          -                Drain      plan and counts
//	rules/<r>           -                Rule       affinity rules
//	config              -                Config     pool name, tunables
//	controllers/<id>    controller's     ControllerInfo  a controller's API URL (leader lookup)
//	                    session lease
//
// # Writes
//
// Every write is one etcd Txn. Controller writes carry a Guard built from the
// controller's leader key (If(CreateRevision(leaderKey) == rev)), so a deposed
// leader's write fails with ErrNotLeader instead of landing. A write whose
// outcome is unknown (deadline, lost connection) is reported as
// ErrOutcomeUnknown, never as a plain failure: the write may have landed.
//
// A placement writes spec and owner in one Txn (PlaceVM); a migration
// request is written only while the owner is at the epoch it names
// (RequestMigration).
//
// # Ownership and fencing
//
// vms/<v>/owner is bound to the owning host's lease, so a host that stops
// renewing loses its VMs atomically when etcd expires the lease. The agent
// runs a HostLease whose local Deadline is always earlier than etcd's expiry
// and stops its VMs by then. The owner key's ModRevision is the fencing epoch
// R: placement is a create (If(CreateRevision(owner) == 0)); a migration's
// switchover is HandOver (destination: If(ModRevision(owner) == R) put owner =
// destination) and the source's abort is AbortHandOver (the same guard, owner
// = source), so exactly one of the two wins. When a Txn's outcome is unknown,
// Resolve reads owner and migration record linearizably and tells whether the
// write landed; re-issuing the same HandOver or AbortHandOver is also safe,
// since it recognises its own earlier success by the migration record.
package store
