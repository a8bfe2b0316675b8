package qemu

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// maxMessage bounds one QMP line; a longer one ends the connection.
const maxMessage = 1 << 20

// commandTimeout bounds the wait for the reply to one command.
const commandTimeout = 30 * time.Second

// Kind says what a line from QEMU is.
type Kind int

// The kinds of message a QMP server sends.
const (
	Greeting Kind = iota + 1 // {"QMP": {...}}, once, on connecting
	Reply                    // {"return": ...} or {"error": ...}, one per command
	Event                    // {"event": ..., "data": ..., "timestamp": ...}
)

// Message is one decoded line from a QMP server.
type Message struct {
	Kind   Kind
	ID     json.RawMessage // the command's id, echoed in its reply
	Return json.RawMessage // a successful reply's value
	Err    *Error          // a failed reply's error
	Event  string          // an event's name
	Data   json.RawMessage // an event's data
	// At is when QEMU says an event happened (its timestamp field).
	At time.Time
}

// Error is a QMP error reply.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// DecodeMessage decodes one line a QMP server sent. The bytes come from
// another process: anything but one JSON object that is a greeting, a
// reply or an event is an error.
func DecodeMessage(line []byte) (Message, error) {
	var raw struct {
		QMP       json.RawMessage `json:"QMP"`
		ID        json.RawMessage `json:"id"`
		Return    json.RawMessage `json:"return"`
		Error     json.RawMessage `json:"error"`
		Event     json.RawMessage `json:"event"`
		Data      json.RawMessage `json:"data"`
		Timestamp *struct {
			Seconds      int64 `json:"seconds"`
			Microseconds int64 `json:"microseconds"`
		} `json:"timestamp"`
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return Message{}, fmt.Errorf("qmp: not a JSON object: %q", clip(line))
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		return Message{}, fmt.Errorf("qmp: %v: %q", err, clip(line))
	}
	present := func(r json.RawMessage) bool { return len(r) > 0 && string(r) != "null" }
	n := 0
	for _, r := range []json.RawMessage{raw.QMP, raw.Return, raw.Error, raw.Event} {
		if present(r) {
			n++
		}
	}
	if n != 1 {
		return Message{}, fmt.Errorf("qmp: want exactly one of QMP, return, error, event in %q", clip(line))
	}
	m := Message{ID: raw.ID}
	switch {
	case present(raw.QMP):
		m.Kind = Greeting
	case present(raw.Return):
		m.Kind, m.Return = Reply, raw.Return
	case present(raw.Error):
		m.Kind, m.Err = Reply, &Error{}
		if err := json.Unmarshal(raw.Error, m.Err); err != nil || m.Err.Class == "" {
			return Message{}, fmt.Errorf("qmp: malformed error in %q", clip(line))
		}
	default:
		m.Kind, m.Data = Event, raw.Data
		if err := json.Unmarshal(raw.Event, &m.Event); err != nil || m.Event == "" {
			return Message{}, fmt.Errorf("qmp: malformed event name in %q", clip(line))
		}
		if t := raw.Timestamp; t != nil && t.Seconds >= 0 && t.Microseconds >= 0 && t.Microseconds < 1e6 {
			m.At = time.Unix(t.Seconds, t.Microseconds*1000)
		}
	}
	return m, nil
}

// clip shortens peer bytes quoted in an error.
func clip(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// ReceivedEvent is an asynchronous QMP event (RESUME, STOP, MIGRATION, …)
// with the host's arrival time.
type ReceivedEvent struct {
	Arrived time.Time // when this process read it
	At      time.Time // QEMU's own timestamp
	Name    string
	Data    json.RawMessage
}

// QMP is a client of the QEMU Machine Protocol on a Unix socket: JSON
// lines, one command at a time, each reply matched to its command by id;
// events arriving in between are kept with their arrival time.
type QMP struct {
	conn net.Conn

	mu      sync.Mutex // serialises commands
	nextID  int
	replies chan Message

	evMu    sync.Mutex
	events  []ReceivedEvent
	readErr error
}

// DialQMP connects to the QMP socket path, retrying until timeout while
// alive says QEMU still runs (it creates the socket during start-up), reads
// the greeting and leaves capability negotiation mode.
func DialQMP(path string, timeout time.Duration, alive func() bool) (*QMP, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			conn = c
			break
		}
		if time.Now().After(deadline) || (alive != nil && !alive()) {
			return nil, fmt.Errorf("qmp %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	conn.SetReadDeadline(time.Now().Add(commandTimeout))
	line, err := readLine(r)
	if err == nil {
		var m Message
		if m, err = DecodeMessage(line); err == nil && m.Kind != Greeting {
			err = fmt.Errorf("qmp: first message is not the greeting: %q", clip(line))
		}
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: greeting: %w", path, err)
	}
	conn.SetReadDeadline(time.Time{})
	q := &QMP{conn: conn, replies: make(chan Message, 1)}
	go q.read(r)
	if _, err := q.Do("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// readLine reads one line of at most maxMessage bytes.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxMessage {
			return nil, fmt.Errorf("qmp: message longer than %d bytes", maxMessage)
		}
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

// read hands replies to Do and records events until the connection ends
// or QEMU sends something that is not QMP.
func (q *QMP) read(r *bufio.Reader) {
	defer close(q.replies)
	for {
		line, err := readLine(r)
		if err != nil {
			q.setReadErr(err)
			return
		}
		now := time.Now()
		m, err := DecodeMessage(line)
		if err != nil {
			q.setReadErr(err)
			q.conn.Close()
			return
		}
		switch m.Kind {
		case Event:
			q.evMu.Lock()
			q.events = append(q.events, ReceivedEvent{Arrived: now, At: m.At, Name: m.Event, Data: m.Data})
			q.evMu.Unlock()
		case Reply:
			q.replies <- m
		}
	}
}

func (q *QMP) setReadErr(err error) {
	q.evMu.Lock()
	q.readErr = err
	q.evMu.Unlock()
}

func (q *QMP) closedErr() error {
	q.evMu.Lock()
	defer q.evMu.Unlock()
	if q.readErr != nil {
		return q.readErr
	}
	return errors.New("connection closed")
}

// Do executes cmd with args (nil: none) and returns its "return" value; an
// error reply is returned as an *Error.
func (q *QMP) Do(cmd string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.nextID++
	id := strconv.Itoa(q.nextID)
	msg := map[string]any{"execute": cmd, "id": q.nextID}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	q.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	timeout := time.NewTimer(commandTimeout)
	defer timeout.Stop()
	for {
		select {
		case m, ok := <-q.replies:
			if !ok {
				return nil, fmt.Errorf("qmp %s: %w", cmd, q.closedErr())
			}
			if string(m.ID) != id {
				continue // the late reply to a command that timed out
			}
			if m.Err != nil {
				return nil, fmt.Errorf("qmp %s: %w", cmd, m.Err)
			}
			return m.Return, nil
		case <-timeout.C:
			return nil, fmt.Errorf("qmp %s: no reply in %v", cmd, commandTimeout)
		}
	}
}

// Events returns the events called name received so far ("" for all).
func (q *QMP) Events(name string) []ReceivedEvent {
	q.evMu.Lock()
	defer q.evMu.Unlock()
	var out []ReceivedEvent
	for _, e := range q.events {
		if name == "" || e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }
