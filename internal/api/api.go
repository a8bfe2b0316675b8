// Package api is the control interface of one VMM process: JSON over HTTP on
// a Unix socket, as Firecracker and Cloud Hypervisor serve theirs. The server
// side wraps a running VM; the client side is what the godwit CLI and any
// other program use.
//
// Endpoints (all JSON; errors are {"error": "..."} with a 4xx/5xx status):
//
//	GET  /v1/vm          VM status
//	PUT  /v1/vm/pause    pause every vCPU
//	PUT  /v1/vm/resume   resume
//	PUT  /v1/vm/stop     stop the VM; the VMM process then exits
//	PUT  /v1/vm/console  body: raw bytes typed on the guest's serial console
//	PUT  /v1/vm/migrate  body: MigrateRequest; answers with the report when done
//	GET  /v1/vm/migration  progress of the migration under way
//	PATCH /v1/vm/migration  body: MigrationLimits; change its downtime and bandwidth limits
//	DELETE /v1/vm/migration  cancel it (the source keeps running)
//
// Who may import: cmd/godwit and higher layers. It imports vm for its types.
package api

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DefaultSocketDir holds the API sockets of VMs started without an explicit
// --api-socket.
const DefaultSocketDir = "/run/godwit"

// SocketPath returns the default API socket path of VM name.
func SocketPath(name string) string { return filepath.Join(DefaultSocketDir, name+".sock") }

// ErrSocketInUse says another live process serves the socket path.
var ErrSocketInUse = errors.New("api: socket in use")

// listen creates the Unix socket at path. A socket file nobody answers on is
// a leftover of a crashed VMM and is replaced; one that answers is refused.
//
// Whoever can connect controls the VM, so the socket is the owner's alone
// (mode 0600, whatever the umask), and so is the default directory.
func listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("api: create socket directory: %w", err)
	}
	if dir == DefaultSocketDir {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("api: socket directory: %w", err)
		}
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("api: %s exists and is not a socket: remove it or choose another --api-socket", path)
		}
		c, err := net.DialTimeout("unix", path, 500*time.Millisecond)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s is served by a running VMM: stop that VM or choose another --api-socket", ErrSocketInUse, path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("api: socket %s: %w", path, err)
	}
	return l, nil
}
