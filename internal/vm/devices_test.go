package vm

import (
	"testing"

	"github.com/godwit-vmm/godwit/internal/arch/x86"
	"github.com/godwit-vmm/godwit/internal/devices/legacy"
)

// TestACPIPMMatchesTables: the PM1 block on the port bus is the one the
// FADT describes, and powers off on the SLP_TYP the DSDT's \_S5 gives.
func TestACPIPMMatchesTables(t *testing.T) {
	if x86.ACPIPMLen != legacy.ACPIPMLen {
		t.Errorf("FADT describes %d PM1 ports, the device decodes %d", x86.ACPIPMLen, legacy.ACPIPMLen)
	}
	if x86.ACPISleepTypeS5 != legacy.SleepTypeS5 {
		t.Errorf(`\_S5 gives SLP_TYP %d, the device powers off on %d`, x86.ACPISleepTypeS5, legacy.SleepTypeS5)
	}
}
