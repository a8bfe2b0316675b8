package toolkit

import (
	"errors"
	"time"

	"github.com/godwit-vmm/godwit/internal/guest"
)

// Switchover is what the guest's heartbeats (`HB <seq> …` every 10 ms of
// its timer) show of one migration: the source's last heartbeat, the
// destination's first, and the host arrival time between them, which is
// the pause the guest's clients see (±10 ms).
type Switchover struct {
	SrcLast  guest.Heartbeat
	DstFirst guest.Heartbeat
	// Split: the source stopped in the middle of a heartbeat line and the
	// destination printed its end; the joined line is DstFirst, at the
	// arrival of the destination's part.
	Split bool
	Pause time.Duration // DstFirst.At − SrcLast.At
	// SeqContinuous: the destination's first heartbeat is the source's
	// last plus one, so the guest neither lost nor repeated one.
	SeqContinuous bool
}

// MeasureSwitchover finds the switch-over in the source's heartbeats, the
// line the source left unfinished ("" if none) and the destination's
// console lines. On error, Split is still set if the destination
// finished a heartbeat line of the source's.
func MeasureSwitchover(src []guest.Heartbeat, srcUnfinished string, dst []guest.Line) (Switchover, error) {
	var s Switchover
	found := false
	if hb, ok := splitHeartbeat(srcUnfinished, dst); ok {
		s.DstFirst, s.Split, found = hb, true, true
	}
	for _, l := range dst {
		if found {
			break
		}
		if hb, ok := guest.ParseHeartbeat(l.Text); ok {
			hb.At = l.At
			s.DstFirst, found = hb, true
		}
	}
	if len(src) == 0 {
		return s, errors.New("the source printed no heartbeat")
	}
	s.SrcLast = src[len(src)-1]
	if !found {
		return s, errors.New("the destination printed no heartbeat")
	}
	s.Pause = s.DstFirst.At.Sub(s.SrcLast.At)
	s.SeqContinuous = s.DstFirst.Seq == s.SrcLast.Seq+1
	return s, nil
}

// Handover is MeasureSwitchover on the consoles of the migration source
// src and destination dst as they are now.
func Handover(src, dst *Proc) (Switchover, error) {
	return MeasureSwitchover(src.Con.Heartbeats(), src.Unfinished(), dst.Con.Lines())
}

// splitHeartbeat is the heartbeat line that the migration source began
// (part, its unfinished last line) and the destination finished (the
// first of its lines), joined, at the arrival time of the destination's
// part (ok false if part is "", there is no line, or the join is no
// heartbeat).
func splitHeartbeat(part string, lines []guest.Line) (hb guest.Heartbeat, ok bool) {
	if part == "" || len(lines) == 0 {
		return hb, false
	}
	if hb, ok = guest.ParseHeartbeat(part + lines[0].Text); ok {
		hb.At = lines[0].At
	}
	return hb, ok
}

// LongestGap is the longest time between two consecutive heartbeats that
// both arrived within [from, to].
func LongestGap(hbs []guest.Heartbeat, from, to time.Time) time.Duration {
	var gap time.Duration
	var prev *guest.Heartbeat
	for i := range hbs {
		h := &hbs[i]
		if h.At.Before(from) || h.At.After(to) {
			continue
		}
		if prev != nil {
			gap = max(gap, h.At.Sub(prev.At))
		}
		prev = h
	}
	return gap
}
