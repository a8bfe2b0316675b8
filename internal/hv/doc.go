// Package hv is the seam between the VMM and its accelerators: the
// interfaces a backend implements (Hypervisor, VM, VCPU) and the state
// types they exchange, in KVM's layouts. Two backends exist: internal/kvm
// (Linux KVM) and internal/emu (Godwit's software x86-64 CPU, used where
// /dev/kvm is absent, as QEMU uses TCG). The VMM above this package never
// names either, so migration, devices and tests are the same on both.
//
// The model is Cloud Hypervisor's and crosvm's hypervisor crates. The
// software backend behaves as a userspace KVM: the same exit kinds (port
// I/O and MMIO complete on the next Run), the same pause and kick
// semantics, the same dirty-log contract and the same state structures.
//
// Who may import: the backends, internal/arch/x86 and internal/vm.
package hv
