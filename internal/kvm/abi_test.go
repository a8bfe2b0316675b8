//go:build linux && amd64

package kvm

import (
	"testing"
	"unsafe"

	"github.com/godwit-vmm/godwit/internal/hv"
)

// ioc encodes an ioctl number the way <asm-generic/ioctl.h> does.
func ioc(dir, nr, size uint) uint { return dir<<30 | size<<16 | 0xAE<<8 | nr }

const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2
	iocRW    = 3
)

func TestIoctlNumbers(t *testing.T) {
	tests := []struct {
		name    string
		got     uint
		dir, nr uint
		size    uintptr
	}{
		{"KVM_GET_API_VERSION", KVM_GET_API_VERSION, iocNone, 0x00, 0},
		{"KVM_CREATE_VM", KVM_CREATE_VM, iocNone, 0x01, 0},
		{"KVM_GET_MSR_INDEX_LIST", KVM_GET_MSR_INDEX_LIST, iocRW, 0x02, 4},
		{"KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION, iocNone, 0x03, 0},
		{"KVM_GET_VCPU_MMAP_SIZE", KVM_GET_VCPU_MMAP_SIZE, iocNone, 0x04, 0},
		{"KVM_GET_SUPPORTED_CPUID", KVM_GET_SUPPORTED_CPUID, iocRW, 0x05, 8},
		{"KVM_CREATE_VCPU", KVM_CREATE_VCPU, iocNone, 0x41, 0},
		{"KVM_GET_DIRTY_LOG", KVM_GET_DIRTY_LOG, iocWrite, 0x42, unsafe.Sizeof(DirtyLog{})},
		{"KVM_SET_USER_MEMORY_REGION", KVM_SET_USER_MEMORY_REGION, iocWrite, 0x46, unsafe.Sizeof(UserspaceMemoryRegion{})},
		{"KVM_SET_TSS_ADDR", KVM_SET_TSS_ADDR, iocNone, 0x47, 0},
		{"KVM_SET_IDENTITY_MAP_ADDR", KVM_SET_IDENTITY_MAP_ADDR, iocWrite, 0x48, 8},
		{"KVM_CREATE_IRQCHIP", KVM_CREATE_IRQCHIP, iocNone, 0x60, 0},
		{"KVM_IRQ_LINE", KVM_IRQ_LINE, iocWrite, 0x61, unsafe.Sizeof(IRQLevel{})},
		{"KVM_GET_IRQCHIP", KVM_GET_IRQCHIP, iocRW, 0x62, unsafe.Sizeof(IRQChip{})},
		{"KVM_SET_IRQCHIP", KVM_SET_IRQCHIP, iocRead, 0x63, unsafe.Sizeof(IRQChip{})},
		{"KVM_IRQFD", KVM_IRQFD, iocWrite, 0x76, unsafe.Sizeof(IRQFD{})},
		{"KVM_CREATE_PIT2", KVM_CREATE_PIT2, iocWrite, 0x77, unsafe.Sizeof(PITConfig{})},
		{"KVM_IOEVENTFD", KVM_IOEVENTFD, iocWrite, 0x79, unsafe.Sizeof(IOEventFD{})},
		{"KVM_SET_CLOCK", KVM_SET_CLOCK, iocWrite, 0x7B, unsafe.Sizeof(ClockData{})},
		{"KVM_GET_CLOCK", KVM_GET_CLOCK, iocRead, 0x7C, unsafe.Sizeof(ClockData{})},
		{"KVM_GET_PIT2", KVM_GET_PIT2, iocRead, 0x9F, unsafe.Sizeof(PITState2{})},
		{"KVM_SET_PIT2", KVM_SET_PIT2, iocWrite, 0xA0, unsafe.Sizeof(PITState2{})},
		{"KVM_ENABLE_CAP", KVM_ENABLE_CAP, iocWrite, 0xA3, unsafe.Sizeof(EnableCap{})},
		{"KVM_CLEAR_DIRTY_LOG", KVM_CLEAR_DIRTY_LOG, iocRW, 0xC0, unsafe.Sizeof(ClearDirtyLog{})},
		{"KVM_RUN", KVM_RUN, iocNone, 0x80, 0},
		{"KVM_GET_REGS", KVM_GET_REGS, iocRead, 0x81, unsafe.Sizeof(Regs{})},
		{"KVM_SET_REGS", KVM_SET_REGS, iocWrite, 0x82, unsafe.Sizeof(Regs{})},
		{"KVM_GET_SREGS", KVM_GET_SREGS, iocRead, 0x83, unsafe.Sizeof(Sregs{})},
		{"KVM_SET_SREGS", KVM_SET_SREGS, iocWrite, 0x84, unsafe.Sizeof(Sregs{})},
		{"KVM_GET_MSRS", KVM_GET_MSRS, iocRW, 0x88, 8},
		{"KVM_SET_MSRS", KVM_SET_MSRS, iocWrite, 0x89, 8},
		{"KVM_SET_CPUID2", KVM_SET_CPUID2, iocWrite, 0x90, 8},
		{"KVM_GET_CPUID2", KVM_GET_CPUID2, iocRW, 0x91, 8},
		{"KVM_GET_LAPIC", KVM_GET_LAPIC, iocRead, 0x8E, unsafe.Sizeof(LAPICState{})},
		{"KVM_SET_LAPIC", KVM_SET_LAPIC, iocWrite, 0x8F, unsafe.Sizeof(LAPICState{})},
		{"KVM_GET_MP_STATE", KVM_GET_MP_STATE, iocRead, 0x98, 4},
		{"KVM_SET_MP_STATE", KVM_SET_MP_STATE, iocWrite, 0x99, 4},
		{"KVM_GET_VCPU_EVENTS", KVM_GET_VCPU_EVENTS, iocRead, 0x9F, unsafe.Sizeof(VCPUEvents{})},
		{"KVM_SET_VCPU_EVENTS", KVM_SET_VCPU_EVENTS, iocWrite, 0xA0, unsafe.Sizeof(VCPUEvents{})},
		{"KVM_GET_DEBUGREGS", KVM_GET_DEBUGREGS, iocRead, 0xA1, unsafe.Sizeof(DebugRegs{})},
		{"KVM_SET_DEBUGREGS", KVM_SET_DEBUGREGS, iocWrite, 0xA2, unsafe.Sizeof(DebugRegs{})},
		{"KVM_GET_TSC_KHZ", KVM_GET_TSC_KHZ, iocNone, 0xA3, 0},
		{"KVM_SET_XSAVE", KVM_SET_XSAVE, iocWrite, 0xA5, 4096},
		{"KVM_GET_XCRS", KVM_GET_XCRS, iocRead, 0xA6, unsafe.Sizeof(XCRs{})},
		{"KVM_SET_XCRS", KVM_SET_XCRS, iocWrite, 0xA7, unsafe.Sizeof(XCRs{})},
		{"KVM_KVMCLOCK_CTRL", KVM_KVMCLOCK_CTRL, iocNone, 0xAD, 0},
		{"KVM_GET_SREGS2", KVM_GET_SREGS2, iocRead, 0xCC, unsafe.Sizeof(Sregs2{})},
		{"KVM_SET_SREGS2", KVM_SET_SREGS2, iocWrite, 0xCD, unsafe.Sizeof(Sregs2{})},
		{"KVM_GET_XSAVE2", KVM_GET_XSAVE2, iocRead, 0xCF, 4096},
		{"KVM_SET_DEVICE_ATTR", KVM_SET_DEVICE_ATTR, iocWrite, 0xE1, unsafe.Sizeof(DeviceAttr{})},
		{"KVM_GET_DEVICE_ATTR", KVM_GET_DEVICE_ATTR, iocWrite, 0xE2, unsafe.Sizeof(DeviceAttr{})},
		{"KVM_HAS_DEVICE_ATTR", KVM_HAS_DEVICE_ATTR, iocWrite, 0xE3, unsafe.Sizeof(DeviceAttr{})},
	}
	for _, tt := range tests {
		if want := ioc(tt.dir, tt.nr, uint(tt.size)); tt.got != want {
			t.Errorf("%s = %#x, want %#x", tt.name, tt.got, want)
		}
	}
}

// TestStructSizes pins every struct to its size in the kernel's x86-64 ABI.
func TestStructSizes(t *testing.T) {
	tests := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"kvm_regs", unsafe.Sizeof(Regs{}), 144},
		{"kvm_segment", unsafe.Sizeof(Segment{}), 24},
		{"kvm_dtable", unsafe.Sizeof(DTable{}), 16},
		{"kvm_sregs", unsafe.Sizeof(Sregs{}), 312},
		{"kvm_sregs2", unsafe.Sizeof(Sregs2{}), 320},
		{"kvm_userspace_memory_region", unsafe.Sizeof(UserspaceMemoryRegion{}), 32},
		{"kvm_pit_config", unsafe.Sizeof(PITConfig{}), 64},
		{"kvm_irqfd", unsafe.Sizeof(IRQFD{}), 32},
		{"kvm_ioeventfd", unsafe.Sizeof(IOEventFD{}), 64},
		{"kvm_irq_level", unsafe.Sizeof(IRQLevel{}), 8},
		{"kvm_enable_cap", unsafe.Sizeof(EnableCap{}), 104},
		{"kvm_dirty_log", unsafe.Sizeof(DirtyLog{}), 16},
		{"kvm_clear_dirty_log", unsafe.Sizeof(ClearDirtyLog{}), 24},
		{"kvm_clock_data", unsafe.Sizeof(ClockData{}), 48},
		{"kvm_pit_state2", unsafe.Sizeof(PITState2{}), 112},
		{"kvm_irqchip", unsafe.Sizeof(IRQChip{}), 520},
		{"kvm_lapic_state", unsafe.Sizeof(LAPICState{}), 1024},
		{"kvm_xcrs", unsafe.Sizeof(XCRs{}), 392},
		{"kvm_debugregs", unsafe.Sizeof(DebugRegs{}), 128},
		{"kvm_vcpu_events", unsafe.Sizeof(VCPUEvents{}), 64},
		{"kvm_device_attr", unsafe.Sizeof(DeviceAttr{}), 24},
		{"kvm_msr_entry", unsafe.Sizeof(MSREntry{}), 16},
		{"kvm_cpuid_entry2", unsafe.Sizeof(CPUIDEntry2{}), 40},
		{"kvm_run header", unsafe.Sizeof(runHeader{}), runUnionOffset},
		{"kvm_run.io", unsafe.Sizeof(runIO{}), 16},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("sizeof(%s) = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
	if off := unsafe.Offsetof(runHeader{}.ExitReason); off != 8 {
		t.Errorf("kvm_run.exit_reason at %d, want 8", off)
	}
	if off := unsafe.Offsetof(runInternal{}.InsnSize); off != 16 {
		t.Errorf("emulation_failure.insn_size at %d, want 16", off)
	}
}

// TestSeamNumbers: the seam's system-event and internal-error numbers are
// KVM's, which the backend passes through.
func TestSeamNumbers(t *testing.T) {
	if hv.SystemEventShutdown != KVM_SYSTEM_EVENT_SHUTDOWN || hv.SystemEventReset != KVM_SYSTEM_EVENT_RESET {
		t.Error("hv system events differ from KVM's")
	}
	if hv.InternalErrorEmulation != KVM_INTERNAL_ERROR_EMULATION || hv.InternalErrorSimulEx != KVM_INTERNAL_ERROR_SIMUL_EX ||
		hv.InternalErrorDeliveryEv != KVM_INTERNAL_ERROR_DELIVERY_EV {
		t.Error("hv internal-error suberrors differ from KVM's")
	}
	if hv.MPStateRunnable != KVM_MP_STATE_RUNNABLE || hv.MPStateUninitialized != KVM_MP_STATE_UNINITIALIZED ||
		hv.MPStateInitReceived != KVM_MP_STATE_INIT_RECEIVED || hv.MPStateHalted != KVM_MP_STATE_HALTED ||
		hv.MPStateSIPIReceived != KVM_MP_STATE_SIPI_RECEIVED {
		t.Error("hv MP states differ from KVM's")
	}
	if hv.IRQChipPICMaster != KVM_IRQCHIP_PIC_MASTER || hv.IRQChipPICSlave != KVM_IRQCHIP_PIC_SLAVE || hv.IRQChipIOAPIC != KVM_IRQCHIP_IOAPIC {
		t.Error("hv irqchip ids differ from KVM's")
	}
	if hv.ClockTSCStable != KVM_CLOCK_TSC_STABLE || hv.ClockRealtime != KVM_CLOCK_REALTIME || hv.ClockHostTSC != KVM_CLOCK_HOST_TSC {
		t.Error("hv clock flags differ from KVM's")
	}
}
