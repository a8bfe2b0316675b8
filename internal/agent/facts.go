package agent

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/godwit-vmm/godwit/internal/accel"
	"github.com/godwit-vmm/godwit/internal/arch/x86"
	"github.com/godwit-vmm/godwit/internal/hv"
	"github.com/godwit-vmm/godwit/internal/kvm"
)

// cpuFacts are what placement compares between hosts: a guest may move only
// between hosts with the same guest-visible CPUID and the same TSC rate
// (this KVM cannot scale the TSC).
type cpuFacts struct {
	Accel     string // the accelerator VMs run on here: "kvm" or "emu"
	TSCKHz    uint64
	CPUIDHash string
	Caps      []string
}

// kvmCaps are the capabilities migration depends on, by name.
var kvmCaps = []struct {
	name string
	cap  int
}{
	{"tsc-control", kvm.KVM_CAP_TSC_CONTROL},
	{"get-tsc-khz", kvm.KVM_CAP_GET_TSC_KHZ},
	{"xsave2", kvm.KVM_CAP_XSAVE2},
	{"manual-dirty-log-protect2", kvm.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2},
	{"kvmclock-ctrl", kvm.KVM_CAP_KVMCLOCK_CTRL},
	{"sregs2", kvm.KVM_CAP_SREGS2},
}

// probeCPU creates a throwaway VM and vCPU on the accelerator accelName
// selects, gives the vCPU the CPUID a one-vCPU guest gets (as internal/vm
// does), and reads back what the guest sees and the TSC rate.
func probeCPU(accelName string) (cpuFacts, error) {
	var f cpuFacts
	sys, err := accel.Open(accelName, nil)
	if err != nil {
		return f, err
	}
	defer sys.Close()
	f.Accel = sys.Name()
	vmfd, err := sys.CreateVM(1)
	if err != nil {
		return f, fmt.Errorf("agent: probe cpu: %w", err)
	}
	defer vmfd.Close()
	cpu, err := vmfd.CreateVCPU(0)
	if err != nil {
		return f, fmt.Errorf("agent: probe cpu: %w", err)
	}
	defer cpu.Close()
	supported, err := sys.SupportedCPUID()
	if err != nil {
		return f, fmt.Errorf("agent: probe cpu: %w", err)
	}
	if err := cpu.SetCPUID2(x86.PatchCPUID(supported, 0, 1)); err != nil {
		return f, fmt.Errorf("agent: probe cpu: set cpuid: %w", err)
	}
	ents, err := cpu.GetCPUID2()
	if err != nil {
		return f, fmt.Errorf("agent: probe cpu: get cpuid: %w", err)
	}
	f.CPUIDHash = hashCPUID(ents)
	khz, err := cpu.TSCKHz()
	if err != nil {
		return f, fmt.Errorf("agent: probe cpu: tsc khz: %w", err)
	}
	f.TSCKHz = uint64(khz)
	if k, ok := sys.(*kvm.Hypervisor); ok {
		kvmVM, err := k.System().CreateVM()
		if err != nil {
			return f, fmt.Errorf("agent: probe cpu: %w", err)
		}
		defer kvmVM.Close()
		for _, c := range kvmCaps {
			if kvmVM.CheckExtension(c.cap) > 0 {
				f.Caps = append(f.Caps, c.name)
			}
		}
	}
	return f, nil
}

// hashCPUID hashes the CPUID entries in (function, index) order:
// "sha256:" and the first 16 bytes in hex.
func hashCPUID(ents []hv.CPUIDEntry2) string {
	ents = slices.Clone(ents)
	slices.SortFunc(ents, func(a, b hv.CPUIDEntry2) int {
		if a.Function != b.Function {
			return int(int64(a.Function) - int64(b.Function))
		}
		return int(int64(a.Index) - int64(b.Index))
	})
	h := sha256.New()
	for _, e := range ents {
		var b [28]byte
		for i, v := range []uint32{e.Function, e.Index, e.Flags, e.EAX, e.EBX, e.ECX, e.EDX} {
			binary.LittleEndian.PutUint32(b[4*i:], v)
		}
		h.Write(b[:])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// presentNetworks returns the networks whose bridge exists here, sorted.
func presentNetworks(bridges map[string]string) []string {
	var out []string
	for network, br := range bridges {
		if _, err := os.Stat(filepath.Join("/sys/class/net", br, "bridge")); err == nil {
			out = append(out, network)
		}
	}
	slices.Sort(out)
	return out
}

// numCPU is the number of CPUs this process may use.
func numCPU() int { return runtime.NumCPU() }

// cpuTimes reads the aggregate busy and total jiffies from /proc/stat.
func cpuTimes() (busy, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("agent: /proc/stat: unexpected first line %q", line)
	}
	for i, s := range fields[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("agent: /proc/stat: %w", err)
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}
