//go:build !linux

package wire

import (
	"net"
	"time"
)

// setUserTimeout does nothing where TCP_USER_TIMEOUT does not exist;
// keepalive probes still run.
func setUserTimeout(*net.TCPConn, time.Duration) error { return nil }

func userTimeout(*net.TCPConn) (time.Duration, error) { return 0, nil }
