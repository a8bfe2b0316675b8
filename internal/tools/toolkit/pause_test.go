package toolkit

import (
	"fmt"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/guest"
)

var t0 = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// beats are heartbeats seq first.. arriving at the given ms.
func beats(first uint64, ms ...int) []guest.Heartbeat {
	var hbs []guest.Heartbeat
	for i, m := range ms {
		hbs = append(hbs, guest.Heartbeat{At: at(m), Seq: first + uint64(i)})
	}
	return hbs
}

func lines(first uint64, ms ...int) []guest.Line {
	var ls []guest.Line
	for i, m := range ms {
		ls = append(ls, guest.Line{At: at(m), Text: fmt.Sprintf("HB %d 100 0", first+uint64(i))})
	}
	return ls
}

func TestMeasureSwitchover(t *testing.T) {
	for _, c := range []struct {
		name       string
		src        []guest.Heartbeat
		unfinished string
		dst        []guest.Line
		pauseMs    int
		lastSeq    uint64
		firstSeq   uint64
		continuous bool
		split      bool
	}{
		{name: "clean", src: beats(10, 0, 10, 20), dst: lines(13, 57, 67), pauseMs: 37, lastSeq: 12, firstSeq: 13, continuous: true},
		{name: "lost one", src: beats(10, 0, 10), dst: lines(13, 40), pauseMs: 30, lastSeq: 11, firstSeq: 13},
		{name: "went back", src: beats(10, 0, 10, 20), dst: lines(8, 30), pauseMs: 10, lastSeq: 12, firstSeq: 8},
		{name: "other lines first", src: beats(10, 0), dst: append([]guest.Line{{At: at(5), Text: "INFO resumed"}}, lines(11, 25)...),
			pauseMs: 25, lastSeq: 10, firstSeq: 11, continuous: true},
		{name: "split line", src: beats(10, 0, 10), unfinished: "HB 1", dst: []guest.Line{{At: at(44), Text: "2 100 0"}, {At: at(50), Text: "HB 13 101 0"}},
			pauseMs: 34, lastSeq: 11, firstSeq: 12, continuous: true, split: true},
		{name: "unfinished non-heartbeat", src: beats(10, 0), unfinished: "INF", dst: append([]guest.Line{{At: at(20), Text: "O x"}}, lines(11, 30)...),
			pauseMs: 30, lastSeq: 10, firstSeq: 11, continuous: true},
	} {
		s, err := MeasureSwitchover(c.src, c.unfinished, c.dst)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if s.Pause != time.Duration(c.pauseMs)*time.Millisecond || s.SrcLast.Seq != c.lastSeq || s.DstFirst.Seq != c.firstSeq ||
			s.SeqContinuous != c.continuous || s.Split != c.split {
			t.Errorf("%s: %+v; want pause %d ms, seq %d→%d, continuous %v, split %v", c.name, s, c.pauseMs, c.lastSeq, c.firstSeq, c.continuous, c.split)
		}
	}
	if _, err := MeasureSwitchover(nil, "", lines(1, 0)); err == nil {
		t.Error("no source heartbeat: no error")
	}
	if _, err := MeasureSwitchover(beats(1, 0), "", []guest.Line{{At: at(1), Text: "READY"}}); err == nil {
		t.Error("no destination heartbeat: no error")
	}
}

func TestLongestGap(t *testing.T) {
	hbs := beats(1, 0, 10, 20, 95, 105, 300, 310)
	for _, c := range []struct{ from, to, want int }{
		{0, 310, 195},   // all
		{0, 104, 75},    // up to the 20→95 gap
		{96, 299, 0},    // one heartbeat only
		{20, 105, 75},   // both ends inclusive
		{106, 1000, 10}, // after the gaps
		{400, 500, 0},   // none
	} {
		if got := LongestGap(hbs, at(c.from), at(c.to)); got != time.Duration(c.want)*time.Millisecond {
			t.Errorf("[%d, %d] ms: %v, want %d ms", c.from, c.to, got, c.want)
		}
	}
}

// TestMeasureSwitchoverSplitWithoutSource: netbench reports a split line
// even when the source printed no whole heartbeat.
func TestMeasureSwitchoverSplitWithoutSource(t *testing.T) {
	s, err := MeasureSwitchover(nil, "HB 1", []guest.Line{{At: at(44), Text: "2 100 0"}})
	if err == nil || !s.Split || s.DstFirst.Seq != 12 {
		t.Errorf("%+v, %v; want an error, split, first seq 12", s, err)
	}
}
