package policy

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

const (
	MiB = 1 << 20
	GiB = 1 << 30
)

// guest is a simulated pre-copy migration: a guest of ramPages pages that
// dirties pages of a working set at rate pages/s (scaled down by the
// throttle), over a link of bw bytes/s with a round trip of rtt. The clock
// is fake: it advances by each round's duration.
type guest struct {
	ramPages   uint64
	workingSet uint64  // pages the guest keeps rewriting
	rate       float64 // pages/s unthrottled
	bw         float64 // bytes/s
	rtt        time.Duration
	// rateAfter, if set, replaces rate from that round on (a burst that
	// ends).
	rateAfter map[int]float64

	now      time.Time
	throttle int
}

// round runs round i sending pages and returns its result.
func (g *guest) round(i int, pages uint64) IterationResult {
	if r, ok := g.rateAfter[i]; ok {
		g.rate = r
	}
	bytes := pages*PageSize + pages/16*16 + 36 // page bytes plus run tables and headers
	d := time.Duration(float64(bytes)/g.bw*float64(time.Second)) + g.rtt
	g.now = g.now.Add(d)
	rate := g.rate * float64(100-g.throttle) / 100
	dirty := min(g.workingSet, uint64(rate*d.Seconds()))
	return IterationResult{Iteration: i, PagesSent: pages, BytesSent: bytes, Duration: d,
		DirtyPagesAfter: dirty, DirtyRatePagesPerSec: rate}
}

// run migrates g under cfg and returns every decision.
func (g *guest) run(t *testing.T, cfg Config) []Decision {
	t.Helper()
	g.now = time.Unix(1_700_000_000, 0)
	p, err := New(cfg, g.now)
	if err != nil {
		t.Fatal(err)
	}
	p.SetStateSize(2 * MiB)
	var ds []Decision
	pages := g.ramPages
	for i := 0; i < 1000; i++ {
		r := g.round(i, pages)
		d := p.Decide(g.now, r)
		ds = append(ds, d)
		switch d.Action {
		case SwitchOver, Abort:
			if again := p.Decide(g.now, r); again.Action != d.Action {
				t.Errorf("decision changed after %v: %v", d.Action, again.Action)
			}
			return ds
		case Throttle:
			g.throttle = d.ThrottlePercent
		}
		pages = r.DirtyPagesAfter
	}
	t.Fatal("policy never decided")
	return nil
}

func actions(ds []Decision) string {
	var s []string
	for _, d := range ds {
		a := d.Action.String()
		if d.Action == Throttle {
			a += "(" + itoa(d.ThrottlePercent) + ")"
		}
		if d.Forced {
			a += "(forced)"
		}
		s = append(s, a)
	}
	return strings.Join(s, " ")
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func TestScenarios(t *testing.T) {
	const pps = GiB / PageSize // pages per second at 1 GiB/s
	withCaps := func(iters int, total time.Duration) Config {
		c := Defaults()
		c.MaxIterations, c.MaxTotal = iters, total
		return c
	}
	noAuto := Defaults()
	noAuto.AutoConverge = false
	for _, tc := range []struct {
		name   string
		g      guest
		cfg    Config
		want   string // actions, space separated
		reason string // in the last decision's reason
	}{
		{
			name: "idle guest switches over after the first pass",
			g:    guest{ramPages: 256 * MiB / PageSize, bw: GiB},
			cfg:  Defaults(),
			want: "switch over",
		},
		{
			name: "guest with a small working set switches over after two rounds",
			g:    guest{ramPages: GiB / PageSize, workingSet: 100 * MiB / PageSize, rate: 0.1 * pps, bw: GiB, rtt: time.Millisecond},
			cfg:  Defaults(),
			want: "continue switch over",
		},
		{
			name: "guest dirtying below the link converges",
			g:    guest{ramPages: GiB / PageSize, workingSet: GiB / PageSize, rate: 0.4 * pps, bw: GiB, rtt: time.Millisecond},
			cfg:  Defaults(),
			want: "continue continue continue switch over",
		},
		{
			name: "hot guest is throttled until it converges",
			g:    guest{ramPages: GiB / PageSize, workingSet: GiB / PageSize, rate: 1.5 * pps, bw: GiB, rtt: time.Millisecond},
			cfg:  Defaults(),
			want: "continue throttle(20) throttle(30) throttle(40) throttle(50)" + strings.Repeat(" continue", 10) + " switch over",
		},
		{
			name: "hot burst ends: throttle, then convergence",
			g: guest{ramPages: GiB / PageSize, workingSet: GiB / PageSize, rate: 1.5 * pps, bw: GiB, rtt: time.Millisecond,
				rateAfter: map[int]float64{3: 0.05 * pps}},
			cfg:  Defaults(),
			want: "continue throttle(20) throttle(30) switch over",
		},
		{
			name:   "hopeless guest without auto-converge aborts",
			g:      guest{ramPages: GiB / PageSize, workingSet: GiB / PageSize, rate: 3 * pps, bw: GiB, rtt: time.Millisecond},
			cfg:    noAuto,
			want:   "continue abort",
			reason: "migration: not converging: 1 GiB dirty at 3 GiB/s dirty rate vs 1023 MiB/s link; estimated downtime 1.01s > max 200 ms; allow",
		},
		{
			name:   "hopeless guest aborts at the iteration cap",
			g:      guest{ramPages: GiB / PageSize, workingSet: GiB / PageSize, rate: 200 * pps, bw: GiB, rtt: time.Millisecond},
			cfg:    withCaps(4, time.Minute),
			want:   "continue throttle(20) throttle(30) abort",
			reason: "migration: not converging after 4 rounds (cap 4): 1 GiB dirty at 140 GiB/s dirty rate vs 1023 MiB/s link with vCPUs throttled 30%; estimated downtime 1.01s > max 200 ms",
		},
		{
			name:   "hopeless guest aborts at max throttle",
			g:      guest{ramPages: GiB / PageSize, workingSet: GiB / PageSize, rate: 1000 * pps, bw: GiB, rtt: time.Millisecond},
			cfg:    Defaults(),
			want:   "continue throttle(20) throttle(30) throttle(40) throttle(50) throttle(60) throttle(70) throttle(80) throttle(90) throttle(99) abort",
			reason: "with vCPUs throttled 99%",
		},
		{
			name:   "hopeless guest aborts at the time cap",
			g:      guest{ramPages: GiB / PageSize, workingSet: GiB / PageSize, rate: 1000 * pps, bw: GiB, rtt: time.Millisecond},
			cfg:    withCaps(30, 3500*time.Millisecond),
			want:   "continue throttle(20) throttle(30) abort",
			reason: "migration: not converging after 4s (cap 3.5s): 1 GiB dirty at",
		},
		{
			name:   "small working set at the cap is switched over within max downtime",
			g:      guest{ramPages: GiB / PageSize, workingSet: 80 * MiB / PageSize, rate: 2 * pps, bw: GiB, rtt: time.Millisecond},
			cfg:    noAuto,
			want:   "continue switch over(forced)",
			reason: "forced switchover within max downtime 200 ms",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := tc.g.run(t, tc.cfg)
			if got := actions(ds); got != tc.want {
				t.Errorf("actions:\n got  %s\n want %s", got, tc.want)
			}
			last := ds[len(ds)-1]
			t.Logf("last: %s", last.Reason)
			if !strings.Contains(last.Reason, tc.reason) {
				t.Errorf("reason %q, want %q in it", last.Reason, tc.reason)
			}
			if last.Action == Abort {
				if err := last.Err(); !errors.Is(err, ErrNotConverging) || err.Error() != last.Reason {
					t.Errorf("Err() = %v", err)
				}
			} else if last.Err() != nil {
				t.Errorf("Err() = %v for %v", last.Err(), last.Action)
			}
			if last.Action == SwitchOver && !last.Forced && last.Estimate.Downtime > tc.cfg.DowntimeTarget {
				t.Errorf("switched over with estimate %v > target", last.Estimate.Downtime)
			}
		})
	}
}

func TestBandwidthEWMA(t *testing.T) {
	p, _ := New(Defaults(), time.Time{})
	round := func(bytes uint64, d time.Duration) float64 {
		p.Decide(time.Time{}, IterationResult{BytesSent: bytes, Duration: d, DirtyPagesAfter: 1 << 20})
		p.final = nil // keep deciding
		return p.Estimate().Bandwidth
	}
	for i, tc := range []struct {
		bytes uint64
		d     time.Duration
		want  float64
	}{
		{0, time.Second, 0},                           // nothing measured
		{MiB, time.Second, MiB},                       // small: provisional
		{100 * MiB, time.Second, 100 * MiB},           // first real sample replaces it
		{200 * MiB, time.Second, 150 * MiB},           // alpha 0.5
		{MiB, time.Millisecond, 150 * MiB},            // small: ignored
		{50 * MiB, 500 * time.Microsecond, 150 * MiB}, // too short: ignored
		{50 * MiB, time.Second, 100 * MiB},
		{100 * MiB, 0, 100 * MiB}, // no duration: ignored
	} {
		if got := round(tc.bytes, tc.d); math.Abs(got-tc.want) > 1 {
			t.Errorf("round %d: bandwidth %.0f, want %.0f", i, got, tc.want)
		}
	}

	c := Defaults()
	c.BandwidthLimit = 10 * MiB
	p, _ = New(c, time.Time{})
	if got := round(100*MiB, time.Second); got != 10*MiB {
		t.Errorf("limited bandwidth %.0f, want %d", got, 10*MiB)
	}
}

func TestEstimate(t *testing.T) {
	p, _ := New(Defaults(), time.Time{})
	if e := p.Estimate(); e.Downtime != UnknownDowntime || e.RemainingBytes != DefaultStateSize {
		t.Errorf("before any round: %+v", e)
	}
	p.SetStateSize(0)
	if e := p.Estimate(); e.Downtime != DefaultFixedCost {
		t.Errorf("nothing to send: downtime %v", e.Downtime)
	}
	p.SetStateSize(4 * MiB)
	p.SetFixedCost(8 * time.Millisecond)
	d := p.Decide(time.Time{}, IterationResult{BytesSent: GiB, Duration: time.Second, DirtyPagesAfter: 96 * MiB / PageSize, DirtyRatePagesPerSec: 1000})
	e := d.Estimate
	if e.Bandwidth != GiB || e.DirtyBytes != 96*MiB || e.RemainingBytes != 100*MiB || e.DirtyRate != 1000*PageSize || e.Iterations != 1 {
		t.Errorf("estimate %+v", e)
	}
	if want := 100*time.Second/1024 + 8*time.Millisecond; e.Downtime < want-time.Microsecond || e.Downtime > want+time.Microsecond {
		t.Errorf("downtime %v, want %v", e.Downtime, want)
	}
	if d.Action != Continue || p.Estimate() != e {
		t.Errorf("decision %v; Estimate() %+v", d.Action, p.Estimate())
	}
}

// TestConvergenceRules drives Decide with hand-made rounds.
func TestConvergenceRules(t *testing.T) {
	r := func(dirtyMiB uint64, rateMiBs float64) IterationResult {
		return IterationResult{BytesSent: GiB, Duration: time.Second, // 1 GiB/s
			DirtyPagesAfter: dirtyMiB * MiB / PageSize, DirtyRatePagesPerSec: rateMiBs * MiB / PageSize}
	}
	for _, tc := range []struct {
		name   string
		rounds []IterationResult
		want   string
	}{
		{"falling dirty bytes", []IterationResult{r(900, 10), r(800, 10), r(700, 10), r(600, 10), r(500, 10)}, "continue continue continue continue continue"},
		{"stalled three rounds", []IterationResult{r(900, 10), r(900, 10), r(850, 10), r(880, 10), r(890, 10)}, "continue continue continue throttle(20) throttle(30)"},
		{"progress resets the stall", []IterationResult{r(900, 10), r(900, 10), r(900, 10), r(500, 10), r(500, 10), r(500, 10)}, "continue continue continue continue continue continue"},
		{"hot two rounds", []IterationResult{r(900, 900), r(800, 850), r(700, 820), r(600, 100)}, "continue throttle(20) throttle(30) continue"},
		{"hot once", []IterationResult{r(900, 900), r(800, 100), r(700, 900), r(600, 100)}, "continue continue continue continue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := New(Defaults(), time.Time{})
			var ds []Decision
			for _, rr := range tc.rounds {
				ds = append(ds, p.Decide(time.Time{}, rr))
			}
			if got := actions(ds); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.DowntimeTarget = 0 }, "DowntimeTarget 0s must be positive"},
		{func(c *Config) { c.MaxDowntime = 10 * time.Millisecond }, "MaxDowntime 10ms is below DowntimeTarget 50ms"},
		{func(c *Config) { c.MaxIterations = 0 }, "MaxIterations 0"},
		{func(c *Config) { c.MaxTotal = -time.Second }, "MaxTotal -1s"},
		{func(c *Config) { c.ThrottleMax = 100 }, "ThrottleMax 100% must be 1..99"},
		{func(c *Config) { c.ThrottleInitial = 0 }, "ThrottleInitial 0%"},
		{func(c *Config) { c.ThrottleInitial = 99; c.ThrottleMax = 50 }, "ThrottleInitial 99% must be 1..ThrottleMax (50%)"},
		{func(c *Config) { c.ThrottleStep = 0 }, "ThrottleStep 0%"},
		{func(c *Config) { c.AutoConverge = false; c.ThrottleStep = 0 }, ""},
	} {
		c := Defaults()
		tc.change(&c)
		err := c.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("unexpected error %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
		if _, nerr := New(c, time.Time{}); nerr == nil {
			t.Errorf("New accepted %+v", c)
		}
	}
}

// TestSetLimits: a guest that does not converge under a 10 ms target
// switches over once the target is raised mid-migration; a bandwidth cap
// set later bounds the estimate; bad limits change nothing.
func TestSetLimits(t *testing.T) {
	cfg := Defaults()
	cfg.DowntimeTarget, cfg.MaxDowntime, cfg.AutoConverge = 10*time.Millisecond, 40*time.Millisecond, false
	p, err := New(cfg, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	// 1 GiB/s link, 64 MiB left dirty at a rate of half the link: about
	// 70 ms of downtime.
	round := IterationResult{BytesSent: GiB, Duration: time.Second, DirtyPagesAfter: 64 * MiB / PageSize, DirtyRatePagesPerSec: GiB / 2 / PageSize}
	if d := p.Decide(time.Time{}, round); d.Action != Continue {
		t.Fatalf("first round under a 10 ms target: %v, want continue", d.Action)
	}
	if err := p.SetLimits(Limits{DowntimeTarget: 0, MaxDowntime: time.Second}); err == nil {
		t.Error("a zero downtime target accepted")
	}
	if err := p.SetLimits(Limits{DowntimeTarget: 200 * time.Millisecond, MaxDowntime: 100 * time.Millisecond}); err == nil {
		t.Error("a max downtime below the target accepted")
	}
	if l := p.Limits(); l.DowntimeTarget != 10*time.Millisecond {
		t.Fatalf("a refused change changed the limits: %+v", l)
	}
	if err := p.SetLimits(Limits{DowntimeTarget: 200 * time.Millisecond, MaxDowntime: 400 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if d := p.Decide(time.Time{}, round); d.Action != SwitchOver {
		t.Errorf("with a 200 ms target: %v (%s), want switch over", d.Action, d.Reason)
	}
	q, _ := New(Defaults(), time.Time{})
	q.Decide(time.Time{}, round)
	if err := q.SetLimits(Limits{DowntimeTarget: 50 * time.Millisecond, MaxDowntime: 200 * time.Millisecond, BandwidthLimit: 100 * MiB}); err != nil {
		t.Fatal(err)
	}
	if e := q.Estimate(); e.Bandwidth != 100*MiB {
		t.Errorf("bandwidth estimate %v after a 100 MiB/s cap, want the cap", e.Bandwidth)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{fmtBytes(512 * MiB), "512 MiB"},
		{fmtBytes(1536 * MiB), "1.5 GiB"},
		{fmtBytes(100), "100 B"},
		{fmtRate(1.2 * GiB), "1.2 GiB/s"},
		{fmtRate(0), "unmeasured"},
		{fmtDuration(600 * time.Millisecond), "600 ms"},
		{fmtDuration(4500 * time.Microsecond), "4.5 ms"},
		{fmtDuration(UnknownDowntime), "unknown"},
		{fmtDuration(41234 * time.Millisecond), "41.23s"}, {fmtDuration(5 * time.Second), "5s"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
