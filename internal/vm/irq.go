package vm

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/godwit-vmm/godwit/internal/kvm"
)

// irqLine is an edge-triggered interrupt line backed by an eventfd that KVM
// injects on GSI gsi (KVM_IRQFD). Writing the eventfd is safe from any
// goroutine and never blocks for long.
type irqLine struct {
	gsi uint32
	fd  int
}

func newIRQLine(v *kvm.VM, gsi uint32) (*irqLine, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("vm: eventfd for irq %d: %w", gsi, err)
	}
	if err := v.IRQFD(fd, gsi); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &irqLine{gsi: gsi, fd: fd}, nil
}

// Trigger raises one edge on the line.
func (l *irqLine) Trigger() error {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, err := unix.Write(l.fd, one[:])
	if err == unix.EAGAIN {
		return nil // the counter is saturated: an interrupt is pending anyway
	}
	if err != nil {
		return fmt.Errorf("vm: trigger irq %d: %w", l.gsi, err)
	}
	return nil
}

func (l *irqLine) Close() error { return unix.Close(l.fd) }
