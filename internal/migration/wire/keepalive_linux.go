package wire

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

func setUserTimeout(conn *net.TCPConn, d time.Duration) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}

// userTimeout reads TCP_USER_TIMEOUT back (for tests).
func userTimeout(conn *net.TCPConn) (time.Duration, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var v int
	var serr error
	err = rc.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	})
	if err != nil {
		return 0, err
	}
	return time.Duration(v) * time.Millisecond, serr
}
