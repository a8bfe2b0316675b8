package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// qmp is a minimal QEMU Machine Protocol client: JSON lines over a Unix
// socket. After the greeting and qmp_capabilities every command gets one
// reply ("return" or "error"); asynchronous events arrive in between and
// are kept with their host arrival time.
type qmp struct {
	conn    net.Conn
	mu      sync.Mutex // one command at a time
	replies chan qmpReply

	evMu   sync.Mutex
	events []qmpEvent
}

// qmpReply is the answer to one command.
type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// qmpEvent is an asynchronous event (RESUME, STOP, MIGRATION, …).
type qmpEvent struct {
	At   time.Time       // host arrival time
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
}

// dialQMP connects to path, retrying until timeout (QEMU creates the
// socket during start-up), and negotiates capabilities.
func dialQMP(path string, timeout time.Duration, alive func() bool) (*qmp, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			conn = c
			break
		}
		if time.Now().After(deadline) || !alive() {
			return nil, fmt.Errorf("qmp %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	q := &qmp{conn: conn, replies: make(chan qmpReply, 1)}
	r := bufio.NewReaderSize(conn, 64<<10)
	if _, err := r.ReadBytes('\n'); err != nil { // greeting
		conn.Close()
		return nil, fmt.Errorf("qmp %s: greeting: %w", path, err)
	}
	go q.read(r)
	if _, err := q.do("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// read dispatches replies to do and records events until the socket closes.
func (q *qmp) read(r *bufio.Reader) {
	defer close(q.replies)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		now := time.Now()
		var probe struct {
			Event string `json:"event"`
		}
		if json.Unmarshal(line, &probe) == nil && probe.Event != "" {
			ev := qmpEvent{At: now}
			json.Unmarshal(line, &ev)
			q.evMu.Lock()
			q.events = append(q.events, ev)
			q.evMu.Unlock()
			continue
		}
		var rep qmpReply
		if err := json.Unmarshal(line, &rep); err != nil {
			continue
		}
		q.replies <- rep
	}
}

// do executes cmd with args (nil: none) and returns the "return" value.
func (q *qmp) do(cmd string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	b, _ := json.Marshal(msg)
	q.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	select {
	case rep, ok := <-q.replies:
		if !ok {
			return nil, fmt.Errorf("qmp %s: connection closed", cmd)
		}
		if rep.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, rep.Error.Class, rep.Error.Desc)
		}
		return rep.Return, nil
	case <-time.After(30 * time.Second):
		return nil, errors.New("qmp " + cmd + ": no reply in 30 s")
	}
}

// eventsNamed returns the events called name received so far.
func (q *qmp) eventsNamed(name string) []qmpEvent {
	q.evMu.Lock()
	defer q.evMu.Unlock()
	var out []qmpEvent
	for _, e := range q.events {
		if e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func (q *qmp) close() { q.conn.Close() }
