// Package pooltest holds the end-to-end tests of a Godwit pool of hosts on
// one machine. It has no code of its own: its tests build
// bin/godwit once, make a namespace network with package netlab (hosts a, b,
// c and a client), run `godwit controller` with its embedded etcd in the
// network's core namespace on the migration bridge (10.<n>.1.254) and one
// `godwit agent` inside each host namespace, and drive the pool only through
// the `godwit` CLI, signals and ip(8)/tc(8) in the namespaces:
//
//   - migrate a VM between agents with `godwit vm migrate --wait`;
//   - kill -9 an agent (its VMs fence themselves before their owner keys go,
//     or a prompt restart re-adopts them);
//   - cut a host's link (it fences itself before etcd deletes its keys);
//   - freeze a host with SIGSTOP and resume it (not one heartbeat after);
//   - cut the destination's link at the switchover of a migration (exactly
//     one owner; heartbeats never from two hosts at once);
//   - restart etcd (the controller) within the lease: no VM stops;
//   - bad input through the CLI: a clear error and nothing changed.
//
// The oracle is the test guest itself: its 10 ms heartbeats, read from the
// agents' <state>/vms/<v>/console.log files (timestamped as the test reads
// them), and its `V` (verify) command typed through the VMM's API socket.
// The test process reaches etcd through a dialer that opens its sockets in
// the core namespace, so no packet leaves the namespaces the test made.
//
// The tests need /dev/kvm, root and network namespaces (package testenv) and
// take a few minutes: go test -count=1 -p 1 ./internal/pooltest/
package pooltest
