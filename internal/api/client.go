package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/godwit-vmm/godwit/internal/migration"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// Client talks to one VMM's API socket.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client for the socket at path. Nothing is dialled
// until the first call.
func NewClient(path string) *Client {
	return &Client{
		path: path,
		http: &http.Client{
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", path)
				},
			},
		},
	}
}

// Status returns the VM's status.
func (c *Client) Status(ctx context.Context) (vm.Status, error) {
	var s vm.Status
	err := c.do(ctx, http.MethodGet, "/v1/vm", nil, &s)
	return s, err
}

// Pause pauses the VM and returns its status after.
func (c *Client) Pause(ctx context.Context) (vm.Status, error) {
	var s vm.Status
	err := c.do(ctx, http.MethodPut, "/v1/vm/pause", nil, &s)
	return s, err
}

// Resume resumes the VM and returns its status after.
func (c *Client) Resume(ctx context.Context) (vm.Status, error) {
	var s vm.Status
	err := c.do(ctx, http.MethodPut, "/v1/vm/resume", nil, &s)
	return s, err
}

// Stop asks the VMM to stop the VM and exit.
func (c *Client) Stop(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/v1/vm/stop", nil, nil)
}

// Console types b on the guest's serial console.
func (c *Client) Console(ctx context.Context, b []byte) error {
	return c.do(ctx, http.MethodPut, "/v1/vm/console", b, nil)
}

// Migrate asks the VMM to migrate its VM and waits for the outcome.
func (c *Client) Migrate(ctx context.Context, req MigrateRequest) (*MigrateReply, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var r MigrateReply
	if err := c.doTimeout(ctx, http.MethodPut, "/v1/vm/migrate", body, &r, 0); err != nil {
		return nil, err
	}
	return &r, nil
}

// MigrationProgress returns the progress of the migration under way.
func (c *Client) MigrationProgress(ctx context.Context) (migration.Progress, error) {
	var p migration.Progress
	err := c.do(ctx, http.MethodGet, "/v1/vm/migration", nil, &p)
	return p, err
}

// CancelMigration cancels the migration under way.
func (c *Client) CancelMigration(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/v1/vm/migration", nil, nil)
}

// SetMigrationLimits changes the limits of the migration under way and
// returns those in force.
func (c *Client) SetMigrationLimits(ctx context.Context, l MigrationLimits) (MigrationLimits, error) {
	var out MigrationLimits
	b, err := json.Marshal(l)
	if err != nil {
		return out, err
	}
	return out, c.do(ctx, http.MethodPatch, "/v1/vm/migration", b, &out)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	return c.doTimeout(ctx, method, path, body, out, 30*time.Second)
}

// doTimeout issues one request; timeout 0 waits as long as ctx allows.
func (c *Client) doTimeout(ctx context.Context, method, path string, body []byte, out any, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://godwit"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) {
			return fmt.Errorf("cannot reach the VMM at %s: %v (is the VM running? see `godwit run --api-socket`)", c.path, ne.Err)
		}
		return fmt.Errorf("api %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("api %s %s: read reply: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("api %s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("api %s %s: bad reply: %w", method, path, err)
		}
	}
	return nil
}
