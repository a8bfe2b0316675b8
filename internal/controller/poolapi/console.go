package poolapi

// A pool VM's serial console, through the controller, which asks the agent
// of the VM's host:
//
//	GET  /v1/vms/{v}/console?offset=N   ConsoleChunk (N < 0: the last -N bytes)
//	POST /v1/vms/{v}/console            ConsoleInput -> 204 (typed on the guest's serial port)

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// MaxConsoleChunk is the most bytes one ConsoleChunk carries.
const MaxConsoleChunk = 256 << 10

// ConsoleChunk is a piece of a VM's console log on one host. A VM that
// migrates starts a new log on its new host: Host changes, offsets start
// again at 0.
type ConsoleChunk struct {
	VM     string `json:"vm"`
	Host   string `json:"host"`   // whose log this is: the VM's host
	Offset int64  `json:"offset"` // where Data starts in that log
	Next   int64  `json:"next"`   // the offset to ask for next
	Size   int64  `json:"size"`   // the log's size when read
	Data   []byte `json:"data"`
}

// ConsoleInput is the body of POST /v1/vms/{v}/console.
type ConsoleInput struct {
	Text string `json:"text"` // sent as is: add the newline the guest expects
}

// Console reads vm's console log from offset (negative: the last -offset
// bytes), at most MaxConsoleChunk bytes.
func (c *Client) Console(ctx context.Context, vm string, offset int64) (ConsoleChunk, error) {
	var out ConsoleChunk
	return out, c.do(ctx, http.MethodGet, "/v1/vms/"+url.PathEscape(vm)+"/console?offset="+strconv.FormatInt(offset, 10), nil, &out)
}

// SendConsole types text on vm's serial console.
func (c *Client) SendConsole(ctx context.Context, vm, text string) error {
	return c.do(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(vm)+"/console", ConsoleInput{Text: text}, nil)
}
