package vm_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/arch/x86/x86test"
	"github.com/godwit-vmm/godwit/internal/testenv"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// bzImage returns a minimal relocatable bzImage (boot protocol 2.15,
// pref_address 16 MiB, init_size 1 MiB, cmdline_size 255) whose
// protected-mode kernel is code.
func bzImage(code []byte) []byte {
	const setupSects = 4
	img := make([]byte, (setupSects+1)*512)
	le := binary.LittleEndian
	img[0x1F1] = setupSects
	le.PutUint16(img[0x1FE:], 0xAA55)
	img[0x200], img[0x201] = 0xEB, 0x26C-0x202
	copy(img[0x202:], "HdrS")
	le.PutUint16(img[0x206:], 0x020F)
	img[0x211] = 0x01 // LOADED_HIGH
	le.PutUint32(img[0x214:], 0x100000)
	le.PutUint32(img[0x22C:], 0x7FFFFFFF) // initrd_addr_max
	le.PutUint32(img[0x230:], 0x200000)   // kernel_alignment
	img[0x234] = 1                        // relocatable
	le.PutUint32(img[0x238:], 255)        // cmdline_size
	le.PutUint64(img[0x258:], 0x1000000)  // pref_address
	le.PutUint32(img[0x260:], 1<<20)      // init_size
	return append(img, code...)
}

// s5Kernel is 32-bit code that checks the boot protocol's entry state
// (ESI points at boot_params with the "HdrS" header, whose
// acpi_rsdp_addr points at the RSDP) and then requests S5 through the
// ACPI PM1a control register; on a failed check it writes 1 to the
// debug-exit port instead.
var s5Kernel = []byte{
	0x8B, 0x86, 0x02, 0x02, 0x00, 0x00, // mov eax, [esi+0x202]
	0x3D, 'H', 'd', 'r', 'S', // cmp eax, "HdrS"
	0x75, 0x18, // jne fail
	0x8B, 0x46, 0x70, // mov eax, [esi+0x70] (acpi_rsdp_addr)
	0x81, 0x38, 'R', 'S', 'D', ' ', // cmp dword [eax], "RSD "
	0x75, 0x0D, // jne fail
	0x66, 0xBA, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
	0x66, 0xB8, 0x00, 0x34, // mov ax, SLP_EN | SLP_TYP 5
	0x66, 0xEF, // out dx, ax
	0xF4,       // hlt
	0xEB, 0xFD, // jmp hlt
	// fail:
	0x66, 0xBA, 0xF4, 0x00, // mov dx, 0xf4
	0xB0, 0x01, // mov al, 1
	0xEE, // out dx, al
	0xF4, // hlt
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNewRefusesBadBoot: each boot that cannot work is refused by New with
// one line saying why, before any VM exists (so no accelerator is needed).
func TestNewRefusesBadBoot(t *testing.T) {
	bz := writeFile(t, "bzImage", bzImage(s5Kernel))
	multiboot := writeFile(t, "guest.elf", x86test.Kernel([]byte{0xF4}))
	initrd := writeFile(t, "initrd", []byte("070701"))
	huge := filepath.Join(t.TempDir(), "huge.cpio")
	if err := os.WriteFile(huge, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, 1<<30); err != nil { // sparse: takes no disk
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  vm.Config
		want string
	}{
		{"initrd with a multiboot kernel", vm.Config{Kernel: multiboot, Initrd: initrd}, "--initrd needs a Linux kernel (a bzImage or a vmlinux)"},
		{"initrd too large", vm.Config{Kernel: bz, Initrd: huge}, "initrd of 1024 MiB does not fit in 111 MiB of guest memory"},
		{"command line too long", vm.Config{Kernel: bz, Cmdline: strings.Repeat("x", 300)}, "command line is 300 bytes; this kernel takes at most 255"},
		{"missing initrd", vm.Config{Kernel: bz, Initrd: initrd + ".missing"}, "initrd " + initrd + ".missing: no such file"},
		{"initrd without a kernel", vm.Config{Initrd: initrd}, "an initrd (--initrd) needs a Linux kernel (--kernel)"},
		{"neither format", vm.Config{Kernel: initrd}, "is neither a multiboot v1 ELF nor a Linux kernel"},
	}
	for _, tt := range tests {
		cfg := tt.cfg
		cfg.Name, cfg.MemBytes, cfg.VCPUs = "refuse", 128<<20, 1
		v, err := vm.New(cfg, testenv.Logger(t))
		if err == nil {
			v.Stop("test over")
			t.Errorf("%s: VM created", tt.name)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") && tt.cfg.Kernel != "" {
			t.Errorf("%s: error %q, want one line with %q", tt.name, err, tt.want)
		}
	}
}

// TestBootLinuxPowersOffByACPI boots a bzImage by the 32-bit boot
// protocol: its code checks boot_params and the RSDP from the entry state
// and powers off through the ACPI PM1a control register, which must end
// the VM cleanly with the S5 reason.
func TestBootLinuxPowersOffByACPI(t *testing.T) {
	testenv.RequireVM(t)
	bootToS5(t, vm.Config{Name: "linux-s5", Kernel: writeFile(t, "bzImage", bzImage(s5Kernel)), Cmdline: "console=ttyS0",
		Initrd: writeFile(t, "initrd", []byte("070701")), MemBytes: 64 << 20, VCPUs: 2})
}

// bootToS5 boots cfg and requires its guest to power off through ACPI
// within 20 s: the stop reason is the S5 one (a guest whose checks fail
// writes 1 to the debug-exit port instead).
func bootToS5(t *testing.T, cfg vm.Config) {
	t.Helper()
	v, err := vm.New(cfg, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop("test over")
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	if r := waitCleanStop(t, v, 20*time.Second, "the guest's power-off").Stopped; r != "guest powered off (ACPI S5)" {
		t.Errorf("stop reason %q, want the ACPI S5 power-off (the guest's entry checks failed?)", r)
	}
}

// pvhS5Kernel is 32-bit code for a PVH entry: it checks the start info
// EBX points at (magic, version 1, one module, the command line and the
// RSDP) and then powers off through PM1a as s5Kernel does; on a failed
// check it writes 1 to the debug-exit port.
var pvhS5Kernel = []byte{
	0x81, 0x3B, 0x78, 0xC5, 0x6E, 0x33, // cmp dword [ebx], 0x336ec578
	0x75, 0x2E, // jne fail
	0x83, 0x7B, 0x04, 0x01, // cmp dword [ebx+4], 1 (version)
	0x75, 0x28, // jne fail
	0x83, 0x7B, 0x0C, 0x01, // cmp dword [ebx+12], 1 (nr_modules)
	0x75, 0x22, // jne fail
	0x8B, 0x43, 0x18, // mov eax, [ebx+24] (cmdline_paddr)
	0x81, 0x38, 'c', 'o', 'n', 's', // cmp dword [eax], "cons"
	0x75, 0x19, // jne fail
	0x8B, 0x43, 0x20, // mov eax, [ebx+32] (rsdp_paddr)
	0x81, 0x38, 'R', 'S', 'D', ' ', // cmp dword [eax], "RSD "
	0x75, 0x10, // jne fail
	0x66, 0xBA, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
	0x66, 0xB8, 0x00, 0x34, // mov ax, SLP_EN | SLP_TYP 5
	0x66, 0xEF, // out dx, ax
	0xF4,       // hlt
	0xEB, 0xFD, // jmp hlt
	0x90, 0x90, 0x90, // (padding to fail)
	// fail:
	0x66, 0xBA, 0xF4, 0x00, // mov dx, 0xf4
	0xB0, 0x01, // mov al, 1
	0xEE, // out dx, al
	0xF4, // hlt
}

// TestBootPVHPowersOffByACPI boots an ELF kernel by its PVH entry note:
// its code checks the hvm_start_info that EBX points at and powers off
// through ACPI, which must end the VM with the S5 reason.
func TestBootPVHPowersOffByACPI(t *testing.T) {
	testenv.RequireVM(t)
	bootToS5(t, vm.Config{Name: "pvh-s5", Kernel: writeFile(t, "vmlinux", x86test.PVHKernel(pvhS5Kernel, 0x10000)), Cmdline: "console=ttyS0",
		Initrd: writeFile(t, "initrd", []byte("070701")), MemBytes: 64 << 20, VCPUs: 1})
}

// TestStartRacesGuestPowerOff: a guest that powers off at once stops the
// VM while Start is still resuming the other vCPUs, so the stop's exit
// requests and Start's resumes reach the APs in either order. Neither
// Start nor the stop may hang, whichever order they take.
func TestStartRacesGuestPowerOff(t *testing.T) {
	testenv.RequireVM(t)
	kernel := writeFile(t, "bzImage", bzImage(s5Kernel))
	initrd := writeFile(t, "initrd", []byte("070701"))
	for i := range 25 {
		cfg := vm.Config{Name: "race", Kernel: kernel, Initrd: initrd, MemBytes: 32 << 20, VCPUs: 4}
		v, err := vm.New(cfg, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		started := make(chan error, 1)
		go func() { started <- v.Start() }()
		select {
		case err := <-started:
			if err != nil {
				t.Fatalf("run %d: start: %v", i, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("run %d: Start hung while the guest powered off", i)
		}
		select {
		case <-v.Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("run %d: the VM did not stop after the guest powered off", i)
		}
		if r := v.Status().Stopped; r != "guest powered off (ACPI S5)" {
			t.Fatalf("run %d: stop reason %q", i, r)
		}
	}
}
