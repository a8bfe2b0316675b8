package vm

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// attachToBridge adds interface dev to Linux bridge br (SIOCBRADDIF), as
// QEMU's bridge helper does for a VM's TAP.
func attachToBridge(dev, br string) error {
	if _, err := os.Stat("/sys/class/net/" + br + "/bridge"); err != nil {
		return fmt.Errorf("bridge %s does not exist on this host: create it (ip link add %s type bridge) or fix --bridge", br, br)
	}
	ifc, err := net.InterfaceByName(dev)
	if err != nil {
		return fmt.Errorf("attach %s to bridge %s: %w", dev, br, err)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("attach %s to bridge %s: %w", dev, br, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(br)
	if err != nil {
		return err
	}
	ifr.SetUint32(uint32(ifc.Index))
	if err := unix.IoctlIfreq(fd, unix.SIOCBRADDIF, ifr); err != nil {
		return fmt.Errorf("attach %s to bridge %s: %w", dev, br, err)
	}
	return nil
}
