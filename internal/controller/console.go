package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/godwit-vmm/godwit/internal/cluster/store"
	"github.com/godwit-vmm/godwit/internal/controller/poolapi"
)

// A pool VM's serial console (package poolapi, console.go): the controller
// finds the VM's host (its owner, else the host that last reported it) and
// asks that host's agent, with the pool's token. Any controller answers,
// leader or not: nothing is written to the pool.

// agentClient calls agents; console reads are small and quick.

func (c *Controller) consoleRead(ctx context.Context, r *http.Request) (int, any, error) {
	off, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if err != nil {
		return 0, nil, badRequest(fmt.Sprintf("offset %q: want a byte offset (negative: that many last bytes)", r.URL.Query().Get("offset")))
	}
	v, ag, err := c.consoleHost(ctx, r.PathValue("v"), false)
	if err != nil {
		return 0, nil, err
	}
	var out poolapi.ConsoleChunk
	if err := c.callAgent(ctx, ag, http.MethodGet, "/v1/vms/"+url.PathEscape(v.Name)+"/console?offset="+strconv.FormatInt(off, 10), nil, &out); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, out, nil
}

func (c *Controller) consoleWrite(ctx context.Context, r *http.Request) (int, any, error) {
	var in poolapi.ConsoleInput
	if err := decodeBody(r, &in); err != nil {
		return 0, nil, err
	}
	if in.Text == "" || len(in.Text) > 64<<10 {
		return 0, nil, badRequest(fmt.Sprintf("console input of %d bytes: want 1 to 64 KiB", len(in.Text)))
	}
	v, ag, err := c.consoleHost(ctx, r.PathValue("v"), true)
	if err != nil {
		return 0, nil, err
	}
	body, _ := json.Marshal(in)
	if err := c.callAgent(ctx, ag, http.MethodPost, "/v1/vms/"+url.PathEscape(v.Name)+"/console", body, nil); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// consoleHost finds the agent address of the host with vm's console: its
// owner; for reading only, also the host that reported it last.
func (c *Controller) consoleHost(ctx context.Context, name string, running bool) (store.VM, agentRef, error) {
	v, err := c.getVM(ctx, name)
	if err != nil {
		return v, agentRef{}, err
	}
	host := ""
	switch {
	case v.Owner != nil:
		host = v.Owner.Host
	case !running && v.Status != nil:
		host = v.Status.Host
	}
	if host == "" {
		return v, agentRef{}, conflict(fmt.Sprintf("vm %s runs on no host (phase %s)", v.Name, vmView(v).Phase), nil)
	}
	h, err := c.st.GetHost(ctx, host)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return v, agentRef{}, unavailable(err)
	}
	if err != nil || h.Info == nil || h.Info.Addr == "" {
		return v, agentRef{}, conflict(fmt.Sprintf("vm %s: host %s has no registered agent to ask", v.Name, host), nil)
	}
	return v, agentRef{host: host, addr: h.Info.Addr}, nil
}

// agentRef is a host's agent: its name (which its certificate must bear)
// and API address.
type agentRef struct{ host, addr string }

// agentHTTP is the client of host's agent, made once so that a console
// follower's requests reuse one TLS connection instead of a handshake each.
func (c *Controller) agentHTTP(host string) *http.Client {
	c.agentMu.Lock()
	defer c.agentMu.Unlock()
	hc, ok := c.agentClients[host]
	if !ok {
		hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: c.agentTLS(host)}}
		c.agentClients[host] = hc
	}
	return hc
}

// callAgent sends one request to the agent ag; an agent error comes back
// as the same status and message.
func (c *Controller) callAgent(ctx context.Context, ag agentRef, method, path string, body []byte, out any) error {
	addr := ag.addr
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.agentHTTP(ag.host).Do(req)
	if err != nil {
		return agentDown(addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 2*poolapi.MaxConsoleChunk))
	if err != nil {
		return agentDown(addr, err)
	}
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("agent %s: %s", addr, resp.Status)
		}
		return &apiError{status: resp.StatusCode, code: agentCode(resp.StatusCode), msg: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return agentDown(addr, fmt.Errorf("bad reply: %w", err))
	}
	return nil
}

// agentCode is the API error code for an agent's HTTP status.
func agentCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return poolapi.CodeBadRequest
	case http.StatusNotFound:
		return poolapi.CodeNotFound
	case http.StatusConflict:
		return poolapi.CodeConflict
	case http.StatusUnauthorized:
		return poolapi.CodeUnauthorized
	default:
		return poolapi.CodeUnavailable
	}
}

// agentDown is the error of an agent that did not answer.
func agentDown(addr string, err error) error {
	return &apiError{status: http.StatusBadGateway, code: poolapi.CodeUnavailable, msg: fmt.Sprintf("agent %s: %v", addr, err)}
}
