// Package agent is the per-host agent of a Godwit pool (`godwit agent`): it
// holds the host's lease in etcd, publishes the lease's local deadline to
// its VMMs through a fence file, registers the host's facts and load, starts
// and supervises one `godwit run` process per VM this host owns, drives the
// migrations whose source is this host, prepares incoming VMMs for the
// migrations whose destination it is, and serves an authenticated HTTP/JSON
// API and Prometheus metrics.
//
// # Lease, fence, ownership
//
// The agent renews its host lease (store.HostLease) and, after each
// acknowledged renewal, writes the local deadline — converted to
// CLOCK_MONOTONIC — to <state>/fence (package fence). Every VMM it starts
// watches that file (`godwit run --fence-file`) and stops its VM once the
// deadline passes, so a dead, frozen or cut-off agent's VMs stop before
// etcd expires the lease and deletes their owner keys. When the agent itself
// sees the deadline pass it kills every VMM at once and starts over with a
// new lease. The lease ID is kept in <state>/lease: an agent that restarts
// within the deadline adopts the lease and the VMMs still running; one that
// finds the lease gone kills every VMM left in the state directory first.
//
// A VM runs here exactly when vms/<v>/owner names this host and this lease
// and the spec says running. Anything else found running here is killed,
// except an incoming VMM that waits for the migration it was started for.
// The agent never writes an owner key during a migration: the destination
// VMM's HandOver and the source VMM's AbortHandOver do (`godwit run --etcd
// --owner-host --owner-lease [--owner-rev --migration-id]`), so the agent
// only passes the fencing epoch and the migration ID along.
//
// # State directory
//
//	<state>/lease              the host lease ID (hex)
//	<state>/fence              the fence file (package fence)
//	<state>/vms/<v>/api.sock   the VMM's API socket (package api)
//	<state>/vms/<v>/console.log  the guest's serial output (appended)
//	<state>/vms/<v>/vmm.log    the VMM's own log (stderr)
//	<state>/vms/<v>/pid        the VMM's process ID
//	<state>/vms/<v>/vmm.json   what the VMM was started for (vmmMeta)
//
// # API
//
// HTTPS/JSON on --listen, with a client certificate of the pool (package
// pki; security.go): the TLS handshake refuses any other, and each route
// then serves only some roles (403 for the others).
//
//	GET    /v1/host            facts, lease, time to the deadline, VMs here   any pool identity
//	GET    /v1/vms             the VMMs of this host                          any pool identity
//	POST   /v1/incoming        IncomingRequest → IncomingReply: start an      the source host
//	                           incoming VMM                                   named in the request
//	DELETE /v1/incoming/{vm}   remove the incoming VMM of a failed migration  a host or a controller
//	GET|POST /v1/vms/{vm}/console  the guest console                          a controller
//	GET    /metrics            Prometheus text format                         any pool identity
//
// Client is the Go client of that API; the source agent uses it to ask the
// destination agent for an incoming VMM, and the CLI may use it.
//
// Who may import: cmd/godwit (the `agent` subcommand) and the CLI (Client,
// the API types). It imports the store, fence, api and kvm layers below it,
// never the controller.
package agent
