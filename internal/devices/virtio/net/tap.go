package net

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// TAP is a non-persistent TAP interface opened with IFF_TAP|IFF_NO_PI|
// IFF_VNET_HDR (10-byte headers). It exists while it is open: Close removes
// it. It implements Backend.
type TAP struct {
	name string
	f    *os.File
}

// OpenTAP creates (or attaches to a free persistent) TAP interface called
// name and brings its link up.
func OpenTAP(name string) (*TAP, error) {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap %q: name must have 1 to %d characters", name, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("tap %s: /dev/net/tun is missing (load the tun module: modprobe tun): %w", name, err)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("tap %s: opening /dev/net/tun needs root or CAP_NET_ADMIN: %w", name, err)
		}
		return nil, fmt.Errorf("tap %s: open /dev/net/tun: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("tap %s: device busy (another VM or process uses it; pick another --tap name): %w", name, err)
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return nil, fmt.Errorf("tap %s: creating a TAP needs root or CAP_NET_ADMIN (or a persistent TAP owned by this user): %w", name, err)
		case errors.Is(err, unix.EINVAL):
			return nil, fmt.Errorf("tap %s: the name belongs to an interface that is not a TAP; pick another --tap name: %w", name, err)
		}
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
	}
	name = ifr.Name() // as the kernel has it
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, HeaderSize); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: set virtio-net header size %d: %w", name, HeaderSize, err)
	}
	if err := setLinkUp(name); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking before os.NewFile, so reads go through the runtime
	// poller and Close unblocks a pending ReadPacket.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: set non-blocking: %w", name, err)
	}
	return &TAP{name: name, f: os.NewFile(uintptr(fd), "/dev/net/tun:"+name)}, nil
}

// setLinkUp sets IFF_UP on interface name.
func setLinkUp(name string) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tap %s: socket for link up: %w", name, err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("tap %q: %w", name, err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("tap %s: get link flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("tap %s: set link up (needs CAP_NET_ADMIN): %w", name, err)
	}
	return nil
}

// Name returns the interface name.
func (t *TAP) Name() string { return t.name }

// ReadPacket implements Backend.
func (t *TAP) ReadPacket(p []byte) (int, error) {
	n, err := t.f.Read(p)
	if err != nil {
		return n, fmt.Errorf("tap %s: read: %w", t.name, err)
	}
	return n, nil
}

// WritePacket implements Backend.
func (t *TAP) WritePacket(p []byte) error {
	if _, err := t.f.Write(p); err != nil {
		return fmt.Errorf("tap %s: write: %w", t.name, err)
	}
	return nil
}

// Close implements Backend; the interface goes away with it.
func (t *TAP) Close() error {
	if err := t.f.Close(); err != nil {
		return fmt.Errorf("tap %s: close: %w", t.name, err)
	}
	return nil
}
