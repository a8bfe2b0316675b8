// Package policy decides how a pre-copy live migration proceeds: after each
// round of sending dirty pages it says whether to send another round, to
// throttle the guest's vCPUs and go on (auto-converge), to switch over, or
// to give up. It is plain code over numbers: no I/O, no goroutines, no
// clock of its own. The caller passes the time with every call, so tests
// drive it with a fake clock.
//
// The model: after a round, the pages the guest dirtied while it ran must
// still be sent. If the VM stopped now, downtime would be
//
//	(dirty bytes + state bytes) / bandwidth + fixed cost
//
// where bandwidth is an exponentially weighted moving average of what the
// rounds achieved end to end, state bytes the size of vCPU, VM and device
// state, and fixed cost the measured price of pausing, saving, restoring
// and one round trip. When the estimate fits Config.DowntimeTarget the
// policy switches over. When the guest does not converge (see Decide) it
// throttles the vCPUs in steps, as QEMU's auto-converge does; when that and
// the caps on rounds and total time are exhausted it switches over anyway if
// the estimate fits Config.MaxDowntime, and aborts otherwise with a reason
// that names the numbers.
//
// Who may import: the migration engine and its tests. It depends on the
// standard library only.
package policy

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// PageSize is the size of a guest page, as dirty logs count them.
const PageSize = 4096

// Tuning constants of the policy; see Decide and the bandwidth estimate.
const (
	// BandwidthAlpha is the weight of the newest round in the bandwidth
	// EWMA. At 0.5 a lasting change of the link shows within two or three
	// rounds (older rounds weigh 50%, 25%, 12.5%), while one odd round moves
	// the estimate only halfway. Pre-copy rarely runs more than a few
	// rounds, so a slower average would lag behind the rounds that matter.
	BandwidthAlpha = 0.5
	// MinSampleBytes and MinSampleDuration: a round that sent less, or ran
	// shorter, measures the round trip and the dirty sync more than the
	// link, and would drag the estimate down; it is ignored once the
	// estimate has a real sample (before that it serves as a provisional,
	// pessimistic estimate).
	MinSampleBytes    = 4 << 20
	MinSampleDuration = time.Millisecond
	// StallRounds: the guest is not converging when the dirty bytes left
	// after a round have not fallen below 90% of the lowest earlier value
	// (ProgressRatio) for this many rounds in a row.
	StallRounds   = 3
	ProgressRatio = 0.9
	// HotRatio and HotRounds: the guest is also not converging when it
	// dirties memory at HotRatio × bandwidth or faster for HotRounds rounds
	// in a row (QEMU waits for two such periods before throttling, too).
	HotRatio  = 0.8
	HotRounds = 2
	// DefaultFixedCost is the switchover cost assumed until the engine
	// measures one (SetFixedCost): pause, save, restore, a round trip.
	DefaultFixedCost = 5 * time.Millisecond
	// DefaultStateSize is the state size assumed until SetStateSize.
	DefaultStateSize = 1 << 20
)

// UnknownDowntime is the downtime estimate while no bandwidth has been
// measured.
const UnknownDowntime = time.Duration(math.MaxInt64)

// ErrNotConverging is matched (errors.Is) by the error of an Abort decision.
var ErrNotConverging = errors.New("migration: not converging")

// Config tunes the policy. Start from Defaults.
type Config struct {
	// DowntimeTarget is the pause the policy aims for. QEMU's default is
	// 300 ms; ours is 50 ms: the state to move is small (a few MiB), the
	// test guest's heartbeat is 10 ms, and at 1 GiB/s 50 ms still leaves
	// room for about 40 MiB of dirty pages.
	DowntimeTarget time.Duration
	// MaxDowntime is the longest pause accepted when the target cannot be
	// met (guest not converging, or caps reached). Beyond it the migration
	// aborts. Default 4 × DowntimeTarget.
	MaxDowntime time.Duration
	// BandwidthLimit caps the link the migration may use, in bytes/s; 0
	// means unlimited. The bandwidth estimate never exceeds it.
	BandwidthLimit uint64
	// MaxIterations caps the number of pre-copy rounds (default 30).
	MaxIterations int
	// MaxTotal caps the time from New to the switchover decision (default
	// 60 s).
	MaxTotal time.Duration
	// AutoConverge lets the policy throttle the vCPUs of a guest that does
	// not converge (default true). Without it such a guest is switched over
	// (if within MaxDowntime) or aborted at once.
	AutoConverge bool
	// ThrottleInitial, ThrottleStep and ThrottleMax (percent of vCPU time
	// taken away) set the throttle: first ThrottleInitial, then +Step for
	// each further round that does not converge, up to Max. Defaults
	// 20/10/99, QEMU's cpu-throttle-initial, cpu-throttle-increment and
	// max-cpu-throttle.
	ThrottleInitial int
	ThrottleStep    int
	ThrottleMax     int
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		DowntimeTarget:  50 * time.Millisecond,
		MaxDowntime:     200 * time.Millisecond,
		MaxIterations:   30,
		MaxTotal:        60 * time.Second,
		AutoConverge:    true,
		ThrottleInitial: 20,
		ThrottleStep:    10,
		ThrottleMax:     99,
	}
}

// Validate reports the first field that is out of range.
func (c Config) Validate() error {
	switch {
	case c.DowntimeTarget <= 0:
		return fmt.Errorf("policy: DowntimeTarget %v must be positive", c.DowntimeTarget)
	case c.MaxDowntime < c.DowntimeTarget:
		return fmt.Errorf("policy: MaxDowntime %v is below DowntimeTarget %v", c.MaxDowntime, c.DowntimeTarget)
	case c.MaxIterations < 1:
		return fmt.Errorf("policy: MaxIterations %d must be at least 1", c.MaxIterations)
	case c.MaxTotal <= 0:
		return fmt.Errorf("policy: MaxTotal %v must be positive", c.MaxTotal)
	}
	if !c.AutoConverge {
		return nil
	}
	switch {
	case c.ThrottleMax < 1 || c.ThrottleMax > 99:
		return fmt.Errorf("policy: ThrottleMax %d%% must be 1..99", c.ThrottleMax)
	case c.ThrottleInitial < 1 || c.ThrottleInitial > c.ThrottleMax:
		return fmt.Errorf("policy: ThrottleInitial %d%% must be 1..ThrottleMax (%d%%)", c.ThrottleInitial, c.ThrottleMax)
	case c.ThrottleStep < 1:
		return fmt.Errorf("policy: ThrottleStep %d%% must be at least 1", c.ThrottleStep)
	}
	return nil
}

// IterationResult is what one pre-copy round did, as the engine measured it.
type IterationResult struct {
	Iteration int    // round number, 0 for the first full pass (for logs; the policy counts rounds itself)
	PagesSent uint64 // DATA pages sent
	ZeroPages uint64 // pages sent as ZERO
	BytesSent uint64 // bytes on the wire, headers included
	// Duration is the round's time end to end: from its first byte sent to
	// the destination's ITER_DONE.
	Duration time.Duration
	// DirtyPagesAfter is what the dirty sync after the round found: the
	// pages the next round (or the switchover) must send.
	DirtyPagesAfter uint64
	// DirtyRatePagesPerSec is how fast the guest dirtied pages during the
	// round.
	DirtyRatePagesPerSec float64
}

// Action is what the engine should do next.
type Action int

// Actions.
const (
	Continue   Action = iota // run another round
	Throttle                 // set the vCPU throttle to Decision.ThrottlePercent, then run another round
	SwitchOver               // pause the VM and send the rest
	Abort                    // give up; resume on the source
)

func (a Action) String() string {
	switch a {
	case Continue:
		return "continue"
	case Throttle:
		return "throttle"
	case SwitchOver:
		return "switch over"
	case Abort:
		return "abort"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is the answer to one round.
type Decision struct {
	Action Action
	// ThrottlePercent is the throttle the vCPUs must run with from now on
	// (0: none). It changes only with Action Throttle.
	ThrottlePercent int
	// Forced is set on a SwitchOver that misses DowntimeTarget but fits
	// MaxDowntime, taken because the guest did not converge or a cap was
	// reached.
	Forced bool
	// Reason says why, with the numbers, for logs; for Abort it is the
	// error's text.
	Reason   string
	Estimate Estimate
}

// Err returns the error of an Abort decision (matching ErrNotConverging),
// and nil for any other.
func (d Decision) Err() error {
	if d.Action != Abort {
		return nil
	}
	return notConverging(d.Reason)
}

type notConverging string

func (e notConverging) Error() string        { return string(e) }
func (e notConverging) Is(target error) bool { return target == ErrNotConverging }

// Estimate is the policy's current view, for decisions and progress reports.
type Estimate struct {
	// Bandwidth is the estimated link bandwidth in bytes/s, 0 until a round
	// has been measured.
	Bandwidth float64
	// DirtyRate is how fast the guest dirtied memory in the last round, in
	// bytes/s.
	DirtyRate float64
	// DirtyBytes is what is left to send: the dirty pages of the last sync.
	DirtyBytes uint64
	// RemainingBytes is what a switchover now would send: DirtyBytes plus
	// the state.
	RemainingBytes uint64
	// Downtime is the expected pause if the VM switched over now, or
	// UnknownDowntime.
	Downtime        time.Duration
	Iterations      int // rounds decided so far
	ThrottlePercent int
}

// Policy is the decision state of one migration. It is not safe for
// concurrent use; the engine's control loop owns it.
type Policy struct {
	cfg   Config
	start time.Time

	stateBytes uint64
	fixedCost  time.Duration

	bandwidth   float64 // EWMA, bytes/s; 0 = none yet
	provisional bool    // bandwidth comes from a too-small round only

	iterations int
	dirtyBytes uint64
	dirtyRate  float64 // bytes/s
	seen       bool    // a round has been decided
	best       uint64  // lowest dirtyBytes so far
	stalled    int     // rounds in a row without progress
	hot        int     // rounds in a row with a dirty rate ≥ HotRatio × bandwidth
	throttle   int

	final *Decision // set once the policy switched over or aborted
}

// New returns a policy for a migration that starts at start.
func New(cfg Config, start time.Time) (*Policy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Policy{cfg: cfg, start: start, stateBytes: DefaultStateSize, fixedCost: DefaultFixedCost}, nil
}

// Limits are the settings an operator may change while a migration runs,
// as QEMU's migrate-set-parameters allows: the downtime target, the
// longest downtime accepted and the bandwidth cap (0: none).
type Limits struct {
	DowntimeTarget time.Duration
	MaxDowntime    time.Duration
	BandwidthLimit uint64
}

// Limits returns the current limits.
func (p *Policy) Limits() Limits {
	return Limits{p.cfg.DowntimeTarget, p.cfg.MaxDowntime, p.cfg.BandwidthLimit}
}

// WithLimits returns c with the limits l, or an error (as Validate
// judges it) if they are out of range.
func (c Config) WithLimits(l Limits) (Config, error) {
	c.DowntimeTarget, c.MaxDowntime, c.BandwidthLimit = l.DowntimeTarget, l.MaxDowntime, l.BandwidthLimit
	return c, c.Validate()
}

// SetLimits changes the limits from the next decision on; out of range,
// nothing changes.
func (p *Policy) SetLimits(l Limits) error {
	c, err := p.cfg.WithLimits(l)
	if err != nil {
		return err
	}
	p.cfg = c
	return nil
}

// SetStateSize records the size in bytes of the state the switchover sends
// (vCPUs, VM, devices), as measured or estimated by the engine.
func (p *Policy) SetStateSize(n uint64) { p.stateBytes = n }

// SetFixedCost records the measured fixed cost of a switchover: pause,
// save, restore and one round trip.
func (p *Policy) SetFixedCost(d time.Duration) { p.fixedCost = max(d, 0) }

// sample folds a round's throughput into the bandwidth estimate.
func (p *Policy) sample(r IterationResult) {
	if r.BytesSent == 0 || r.Duration <= 0 {
		return
	}
	bw := float64(r.BytesSent) / r.Duration.Seconds()
	small := r.BytesSent < MinSampleBytes || r.Duration < MinSampleDuration
	switch {
	case small && p.bandwidth == 0:
		p.bandwidth, p.provisional = bw, true
	case small:
		// ignored: it would measure latency, not the link
	case p.bandwidth == 0 || p.provisional:
		p.bandwidth, p.provisional = bw, false
	default:
		p.bandwidth = BandwidthAlpha*bw + (1-BandwidthAlpha)*p.bandwidth
	}
}

// Estimate returns the current estimate.
func (p *Policy) Estimate() Estimate {
	e := Estimate{
		Bandwidth:       p.bandwidth,
		DirtyRate:       p.dirtyRate,
		DirtyBytes:      p.dirtyBytes,
		RemainingBytes:  p.dirtyBytes + p.stateBytes,
		Iterations:      p.iterations,
		ThrottlePercent: p.throttle,
	}
	if limit := float64(p.cfg.BandwidthLimit); limit > 0 && e.Bandwidth > limit {
		e.Bandwidth = limit
	}
	switch {
	case e.RemainingBytes == 0:
		e.Downtime = p.fixedCost
	case e.Bandwidth == 0:
		e.Downtime = UnknownDowntime
	default:
		secs := float64(e.RemainingBytes) / e.Bandwidth
		if secs >= math.MaxInt64/float64(time.Second) {
			e.Downtime = UnknownDowntime
		} else {
			e.Downtime = time.Duration(secs*float64(time.Second)) + p.fixedCost
		}
	}
	return e
}

// Decide takes the result of the round that just ended and says what to do
// next. In order:
//
//   - if the estimated downtime fits DowntimeTarget: SwitchOver;
//   - if MaxIterations rounds have run or MaxTotal has passed since New:
//     give up;
//   - if the guest converges: Continue. It does not converge when its
//     dirty bytes have not fallen below ProgressRatio × their lowest value
//     for StallRounds rounds in a row, or its dirty rate has been at least
//     HotRatio × bandwidth for HotRounds rounds in a row;
//   - with AutoConverge and the throttle below ThrottleMax: Throttle, to
//     ThrottleInitial the first time and by ThrottleStep more for each
//     further round that does not converge;
//   - otherwise give up.
//
// Giving up is a forced SwitchOver if the estimate fits MaxDowntime, and
// Abort otherwise. Once the policy has switched over or aborted, Decide
// returns that same decision again.
func (p *Policy) Decide(now time.Time, r IterationResult) Decision {
	if p.final != nil {
		return *p.final
	}
	p.iterations++
	p.sample(r)
	p.dirtyBytes = r.DirtyPagesAfter * PageSize
	p.dirtyRate = max(r.DirtyRatePagesPerSec, 0) * PageSize

	if !p.seen || float64(p.dirtyBytes) < ProgressRatio*float64(p.best) {
		p.stalled = 0
	} else {
		p.stalled++
	}
	if !p.seen || p.dirtyBytes < p.best {
		p.best = p.dirtyBytes
	}
	p.seen = true
	est := p.Estimate()
	if est.Bandwidth > 0 && p.dirtyRate >= HotRatio*est.Bandwidth {
		p.hot++
	} else {
		p.hot = 0
	}

	if est.Downtime <= p.cfg.DowntimeTarget {
		return p.finish(Decision{
			Action: SwitchOver,
			Reason: fmt.Sprintf("estimated downtime %s fits target %s after %d rounds (%s left at %s)",
				fmtDuration(est.Downtime), fmtDuration(p.cfg.DowntimeTarget), p.iterations,
				fmtBytes(est.RemainingBytes), fmtRate(est.Bandwidth)),
		}, est)
	}
	if p.iterations >= p.cfg.MaxIterations {
		return p.giveUp(fmt.Sprintf("not converging after %d rounds (cap %d)", p.iterations, p.cfg.MaxIterations), est)
	}
	if elapsed := now.Sub(p.start); elapsed >= p.cfg.MaxTotal {
		return p.giveUp(fmt.Sprintf("not converging after %s (cap %s)", fmtDuration(elapsed), fmtDuration(p.cfg.MaxTotal)), est)
	}
	if p.stalled < StallRounds && p.hot < HotRounds {
		return Decision{Action: Continue, ThrottlePercent: p.throttle, Estimate: est,
			Reason: fmt.Sprintf("estimated downtime %s > target %s; guest converging", fmtDuration(est.Downtime), fmtDuration(p.cfg.DowntimeTarget))}
	}
	if p.cfg.AutoConverge && p.throttle < p.cfg.ThrottleMax {
		if p.throttle == 0 {
			p.throttle = p.cfg.ThrottleInitial
		} else {
			p.throttle = min(p.throttle+p.cfg.ThrottleStep, p.cfg.ThrottleMax)
		}
		est.ThrottlePercent = p.throttle
		return Decision{Action: Throttle, ThrottlePercent: p.throttle, Estimate: est,
			Reason: fmt.Sprintf("not converging (%s); throttling vCPUs to %d%%", p.numbers(est), p.throttle)}
	}
	return p.giveUp("not converging", est)
}

// giveUp switches over if the estimate fits MaxDowntime and aborts
// otherwise; why says what ran out.
func (p *Policy) giveUp(why string, est Estimate) Decision {
	if est.Downtime <= p.cfg.MaxDowntime {
		return p.finish(Decision{
			Action: SwitchOver,
			Forced: true,
			Reason: fmt.Sprintf("%s: %s; forced switchover within max downtime %s",
				why, p.numbers(est), fmtDuration(p.cfg.MaxDowntime)),
		}, est)
	}
	return p.finish(Decision{
		Action: Abort,
		Reason: fmt.Sprintf("migration: %s: %s > max %s; allow more downtime or bandwidth, or lighten the guest's load",
			why, p.numbers(est), fmtDuration(p.cfg.MaxDowntime)),
	}, est)
}

func (p *Policy) finish(d Decision, est Estimate) Decision {
	d.ThrottlePercent = p.throttle
	d.Estimate = est
	p.final = &d
	return d
}

// numbers describes the state of the migration for reasons.
func (p *Policy) numbers(est Estimate) string {
	s := fmt.Sprintf("%s dirty at %s dirty rate vs %s link", fmtBytes(est.DirtyBytes), fmtRate(est.DirtyRate), fmtRate(est.Bandwidth))
	if p.throttle > 0 {
		s += fmt.Sprintf(" with vCPUs throttled %d%%", p.throttle)
	}
	return s + "; estimated downtime " + fmtDuration(est.Downtime)
}

func fmtBytes(n uint64) string { return fmtIEC(float64(n), "") }

func fmtRate(bps float64) string {
	if bps == 0 {
		return "unmeasured"
	}
	return fmtIEC(bps, "/s")
}

func fmtIEC(v float64, suffix string) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v == math.Trunc(v) || v >= 100 {
		return fmt.Sprintf("%.0f %s%s", v, units[i], suffix)
	}
	return fmt.Sprintf("%.1f %s%s", v, units[i], suffix)
}

func fmtDuration(d time.Duration) string {
	switch {
	case d == UnknownDowntime:
		return "unknown"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return d.Round(10 * time.Millisecond).String()
}
