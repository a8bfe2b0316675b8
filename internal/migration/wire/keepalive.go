package wire

import (
	"fmt"
	"net"
	"time"
)

// Keepalive settings of SetKeepalive: a peer that stops answering is
// noticed within Idle + Count×Interval (6 s) while the connection is
// idle, and within UserTimeout while data is unacknowledged.
const (
	KeepaliveIdle     = 1 * time.Second
	KeepaliveInterval = 1 * time.Second
	KeepaliveCount    = 5
	UserTimeout       = 10 * time.Second
)

// SetKeepalive enables TCP keepalive probes and TCP_USER_TIMEOUT on a
// migration connection, so that a dead peer shows up as an error in
// seconds rather than after the kernel's defaults (hours and about 15
// minutes).
func SetKeepalive(conn *net.TCPConn) error {
	err := conn.SetKeepAliveConfig(net.KeepAliveConfig{
		Enable:   true,
		Idle:     KeepaliveIdle,
		Interval: KeepaliveInterval,
		Count:    KeepaliveCount,
	})
	if err != nil {
		return fmt.Errorf("wire: set TCP keepalive: %w", err)
	}
	if err := setUserTimeout(conn, UserTimeout); err != nil {
		return fmt.Errorf("wire: set TCP_USER_TIMEOUT: %w", err)
	}
	return nil
}
