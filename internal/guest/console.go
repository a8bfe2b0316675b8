// Package guest speaks the serial-console protocol of Godwit's test guest
// (guest/PROTOCOL.md): it collects console lines with their host arrival
// time, parses heartbeats, and waits for replies to commands. Tests, the demo
// and the benchmarks use it to drive the guest and to judge a migration: the
// heartbeat sequence must continue without a gap and `verify` must pass.
//
// Who may import: tests, benchmarks and commands. It imports nothing of
// Godwit's.
package guest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Line is one console line and when the host received it.
type Line struct {
	At   time.Time
	Text string
}

// Heartbeat is an `HB <seq> <t> <dirtied>` line.
type Heartbeat struct {
	At      time.Time
	Seq     uint64
	TSC     uint64 // (rdtsc - tsc at boot) >> 16
	Dirtied uint64
}

var hbRE = regexp.MustCompile(`^HB (\d+) (\d+) (\d+)\s*$`)

// ParseHeartbeat parses a heartbeat line.
func ParseHeartbeat(s string) (Heartbeat, bool) {
	m := hbRE.FindStringSubmatch(s)
	if m == nil {
		return Heartbeat{}, false
	}
	seq, _ := strconv.ParseUint(m[1], 10, 64)
	t, _ := strconv.ParseUint(m[2], 10, 64)
	d, _ := strconv.ParseUint(m[3], 10, 64)
	return Heartbeat{Seq: seq, TSC: t, Dirtied: d}, true
}

// Console is an io.Writer that receives a guest's serial output (give it to
// the VMM as its console, or copy a VMM's stdout into it) and keeps every
// line. It can also echo the output to another writer.
type Console struct {
	echo io.Writer

	// mu guards everything below; cond signals a new line.
	mu      sync.Mutex
	cond    *sync.Cond
	partial []byte
	lines   []Line
	hbs     []Heartbeat
	closed  bool
}

// NewConsole returns a console that echoes to echo (nil: no echo).
func NewConsole(echo io.Writer) *Console {
	c := &Console{echo: echo}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// Write implements io.Writer.
func (c *Console) Write(p []byte) (int, error) {
	now := time.Now()
	if c.echo != nil {
		c.echo.Write(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		text := strings.TrimRight(string(c.partial[:i]), "\r")
		c.partial = c.partial[i+1:]
		c.lines = append(c.lines, Line{At: now, Text: text})
		if hb, ok := ParseHeartbeat(text); ok {
			hb.At = now
			c.hbs = append(c.hbs, hb)
		}
	}
	c.cond.Broadcast()
	return len(p), nil
}

// Close wakes every waiter; no more lines will come.
func (c *Console) Close() {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Lines returns a copy of every line so far.
func (c *Console) Lines() []Line {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Line(nil), c.lines...)
}

// Heartbeats returns a copy of every heartbeat so far.
func (c *Console) Heartbeats() []Heartbeat {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Heartbeat(nil), c.hbs...)
}

// Mark returns the number of lines so far, for WaitLine's from.
func (c *Console) Mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// WaitLine waits for the first line at index >= from for which match is true,
// and returns it with its index.
func (c *Console) WaitLine(ctx context.Context, from int, match func(string) bool) (Line, int, error) {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := from; ; {
		for ; i < len(c.lines); i++ {
			if match(c.lines[i].Text) {
				return c.lines[i], i, nil
			}
		}
		if err := ctx.Err(); err != nil {
			return Line{}, 0, fmt.Errorf("guest console: no matching line after %d lines (last: %q): %w", len(c.lines), c.lastText(), err)
		}
		if c.closed {
			return Line{}, 0, fmt.Errorf("guest console: closed before a matching line (last: %q)", c.lastText())
		}
		c.cond.Wait()
	}
}

// WaitPrefix waits for a line starting with prefix, from line index from.
func (c *Console) WaitPrefix(ctx context.Context, from int, prefix string) (string, error) {
	l, _, err := c.WaitLine(ctx, from, func(s string) bool { return strings.HasPrefix(s, prefix) })
	return l.Text, err
}

// WaitHeartbeats waits until n heartbeats in total have arrived.
func (c *Console) WaitHeartbeats(ctx context.Context, n int) error {
	_, _, err := c.WaitLine(ctx, 0, func(string) bool { return len(c.hbs) >= n })
	return err
}

func (c *Console) lastText() string {
	if len(c.lines) == 0 {
		return ""
	}
	return c.lines[len(c.lines)-1].Text
}

// GapCheck reports problems in a heartbeat sequence: a sequence number
// that does not follow its predecessor, and the longest host-side gap.
type GapCheck struct {
	Count      int
	FirstSeq   uint64
	LastSeq    uint64
	SeqErrors  []string
	LongestGap time.Duration
	GapAfter   uint64 // sequence number before the longest gap
}

// CheckHeartbeats checks that hbs count up by one with no gap or repeat.
func CheckHeartbeats(hbs []Heartbeat) GapCheck {
	g := GapCheck{Count: len(hbs)}
	if len(hbs) == 0 {
		return g
	}
	g.FirstSeq, g.LastSeq = hbs[0].Seq, hbs[len(hbs)-1].Seq
	for i := 1; i < len(hbs); i++ {
		if hbs[i].Seq != hbs[i-1].Seq+1 && len(g.SeqErrors) < 10 {
			g.SeqErrors = append(g.SeqErrors, fmt.Sprintf("seq %d followed by %d", hbs[i-1].Seq, hbs[i].Seq))
		}
		if d := hbs[i].At.Sub(hbs[i-1].At); d > g.LongestGap {
			g.LongestGap, g.GapAfter = d, hbs[i-1].Seq
		}
	}
	return g
}
