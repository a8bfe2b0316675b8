package migration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/godwit-vmm/godwit/internal/memory"
	"github.com/godwit-vmm/godwit/internal/migration/policy"
	"github.com/godwit-vmm/godwit/internal/migration/wire"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// chunkPages is how many pages the sender clears and reads at once: 2 MiB,
// the unit that maps to one data stream.
const chunkPages = 512

// Progress is a live view of a running migration for the API.
type Progress struct {
	Phase            string  `json:"phase"` // connecting, precopy, switchover, done
	Iteration        int     `json:"iteration"`
	TransferredBytes uint64  `json:"transferred_bytes"`
	RemainingPages   uint64  `json:"remaining_pages"`
	TotalPages       uint64  `json:"total_pages"`
	BandwidthMiBs    float64 `json:"bandwidth_mib_s"`
	ExpectedDownMs   float64 `json:"expected_downtime_ms"`
	Throttle         int     `json:"throttle_pct"`
}

// Source is one outgoing migration. Progress may be read while Run runs.
type Source struct {
	vm   *vm.VM
	addr string
	opts Options
	log  *slog.Logger

	mu       sync.Mutex // guards progress and limits
	progress Progress
	// limits: the policy's, changed by SetLimits and applied before each
	// decision.
	limits policy.Limits
	limit  *rateLimiter // paces the data streams

	ctrl    *wire.Conn
	streams []*stream
	regions []*memory.Region
	bitmaps [][]uint64
	present *pagemap
	report  Report
	bytes   atomic.Uint64

	sessionID wire.SessionID
	// lateRX: the destination takes the packets that reach the paused
	// VM in an RX frame before COMMIT (wire.FeatureLateRX).
	lateRX bool
}

// NewSource prepares a migration of v to the destination at addr.
func NewSource(v *vm.VM, addr string, opts Options, log *slog.Logger) (*Source, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id := newSessionID()
	if opts.Session != nil {
		id = *opts.Session
	}
	pc := opts.Policy
	s := &Source{vm: v, addr: addr, opts: opts, sessionID: id, limit: newRateLimiter(pc.BandwidthLimit),
		limits: policy.Limits{DowntimeTarget: pc.DowntimeTarget, MaxDowntime: pc.MaxDowntime, BandwidthLimit: pc.BandwidthLimit}}
	s.report = Report{ID: fmt.Sprintf("%x", id[:4]), Destination: addr, Streams: opts.Streams}
	s.log = log.With("migration", s.report.ID, "to", addr)
	s.progress.Phase = "connecting"
	return s, nil
}

// SetLimits changes the downtime target, the longest downtime accepted
// and the bandwidth cap (0: none) of the running migration, as QEMU's
// migrate-set-parameters does. The cap applies from the next write, the
// downtime limits from the next round's decision; a switchover under way
// is not affected. Values out of range change nothing.
func (s *Source) SetLimits(l policy.Limits) error {
	if _, err := s.opts.Policy.WithLimits(l); err != nil {
		return fmt.Errorf("migration: %w", err)
	}
	s.mu.Lock()
	s.limits = l
	s.mu.Unlock()
	s.limit.setRate(l.BandwidthLimit)
	s.log.Info("migration limits changed", "downtime_target", l.DowntimeTarget, "max_downtime", l.MaxDowntime, "bandwidth", l.BandwidthLimit)
	return nil
}

// Limits returns the limits in force (or pending for the next round).
func (s *Source) Limits() policy.Limits {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limits
}

// Progress returns a snapshot of the migration's progress.
func (s *Source) Progress() Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.progress
	p.TransferredBytes = s.bytes.Load()
	return p
}

func (s *Source) setProgress(f func(p *Progress)) {
	s.mu.Lock()
	f(&s.progress)
	s.mu.Unlock()
}

// Send migrates v to the destination at addr. On success the source VM has
// been stopped (it runs on the destination now). On failure before the
// commit the source VM runs as before and the error says why; after a lost
// commit reply it stays paused unless the destination confirms it did not
// commit.
func Send(ctx context.Context, v *vm.VM, addr string, opts Options, log *slog.Logger) (*Report, error) {
	s, err := NewSource(v, addr, opts, log)
	if err != nil {
		return nil, err
	}
	return s.Run(ctx)
}

// Run performs the migration; see Send.
func (s *Source) Run(ctx context.Context) (*Report, error) {
	start := time.Now()
	err := s.run(ctx, start)
	s.report.TotalMs = ms(time.Since(start))
	s.report.Bytes = s.bytes.Load()
	for _, r := range s.report.Rounds {
		s.report.DataPages += r.DataPages
		s.report.ZeroPages += r.ZeroPages
		s.report.SkippedPages += r.SkippedPages
	}
	s.setProgress(func(p *Progress) { p.Phase = "done" })
	if err != nil {
		s.report.Error = err.Error()
		if s.report.Result == "" {
			s.report.Result = "failed"
		}
		s.log.Error("migration failed", "err", err, "result", s.report.Result)
		return &s.report, err
	}
	s.report.Result = "completed"
	s.log.Info("migration completed", "total_ms", s.report.TotalMs, "downtime_ms", s.report.DowntimeMs,
		"bytes", s.report.Bytes, "rounds", len(s.report.Rounds))
	return &s.report, nil
}

func (s *Source) run(ctx context.Context, start time.Time) (err error) {
	v := s.vm
	info, err := v.MigrationInfo()
	if err != nil {
		return err
	}
	id := s.sessionID
	if err := s.connect(ctx, id); err != nil {
		return err
	}
	defer s.closeAll()
	cfg := s.wireConfig(info)
	if err := s.sendControl(wire.TypeConfig, 0, mustEncode(wire.EncodeConfig(cfg))); err != nil {
		return err
	}
	h, payload, err := s.reply(ctx)
	if err != nil {
		if s.opts.TLS == nil && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			// A TLS destination drops a plaintext greeting this way.
			return fmt.Errorf("%w (the destination closed the connection at the greeting: does it require TLS?)", err)
		}
		return err
	}
	switch h.Type {
	case wire.TypeAck:
		acc, err := wire.DecodeAccept(payload)
		if err != nil {
			return s.abort(err)
		}
		s.lateRX = acc.Grants(wire.FeatureLateRX)
	case wire.TypeError:
		why, _ := wire.DecodeReason(h.Type, payload)
		s.report.Result = "refused"
		return fmt.Errorf("migration: destination %s refused: %s", s.addr, why)
	default:
		return fmt.Errorf("migration: destination answered CONFIG with %v", h.Type)
	}
	if err := s.openStreams(ctx, id); err != nil {
		return s.abort(err)
	}
	s.report.SetupMs = ms(time.Since(start))

	// From here on the source VM is being tracked; any failure before
	// COMMIT undoes that and leaves it running.
	if err := v.StartDirtyLog(); err != nil {
		return s.abort(err)
	}
	if s.present, err = openPagemap(); err != nil {
		v.StopDirtyLog()
		return s.abort(err)
	}
	defer s.present.Close()
	// Unless the VM was handed over (and stopped), tracking ends with
	// Send: whether it runs again or stays paused after a lost COMMIT
	// reply, a later migration must start with a fresh, all-dirty log.
	handedOver := false
	defer func() {
		if !handedOver {
			v.SetThrottle(0)
			v.StopDirtyLog()
		}
	}()
	s.regions = v.Memory().Regions()
	var total uint64
	for _, r := range s.regions {
		s.bitmaps = append(s.bitmaps, make([]uint64, (r.Pages()+63)/64))
		total += r.Pages()
	}
	s.setProgress(func(p *Progress) { p.Phase = "precopy"; p.TotalPages = total })

	pol, err := policy.New(s.opts.Policy, time.Now())
	if err != nil {
		return s.abort(err)
	}
	pol.SetStateSize(64 << 10)
	pol.SetFixedCost(5 * time.Millisecond)

	// Round 0 starts with every page dirty (the log is initially set).
	if _, err := v.DirtyLog(s.bitmaps); err != nil {
		return s.abort(err)
	}
	var forced bool
	for iter := 0; ; iter++ {
		if err := ctx.Err(); err != nil {
			return s.abort(fmt.Errorf("migration: cancelled: %w", err))
		}
		t0 := time.Now()
		rd, err := s.sendRound(ctx, uint32(iter), iter == 0)
		if err != nil {
			return s.abort(err)
		}
		dur := time.Since(t0)
		dirty, err := v.DirtyLog(s.bitmaps)
		if err != nil {
			return s.abort(err)
		}
		rd.DirtyPages = uint64(dirty)
		rd.DurationMs = ms(dur)
		rd.DirtyRate = float64(dirty) / max(dur.Seconds(), 1e-6)
		rd.MBps = float64(rd.Bytes) / (1 << 20) / max(dur.Seconds(), 1e-6)
		rd.Throttle = v.Throttle()
		s.report.Rounds = append(s.report.Rounds, rd)
		s.mu.Lock()
		pol.SetLimits(s.limits) // validated by SetLimits
		s.mu.Unlock()
		d := pol.Decide(time.Now(), policy.IterationResult{
			Iteration: iter, PagesSent: rd.DataPages, ZeroPages: rd.ZeroPages, BytesSent: rd.Bytes,
			Duration: dur, DirtyPagesAfter: uint64(dirty), DirtyRatePagesPerSec: rd.DirtyRate,
		})
		est := pol.Estimate()
		s.setProgress(func(p *Progress) {
			p.Iteration = iter + 1
			p.RemainingPages = uint64(dirty)
			p.BandwidthMiBs = est.Bandwidth / (1 << 20)
			p.ExpectedDownMs = ms(est.Downtime)
			p.Throttle = v.Throttle()
		})
		s.log.Debug("round done", "iter", iter, "pages", rd.DataPages, "zero", rd.ZeroPages,
			"ms", rd.DurationMs, "dirty_after", dirty, "decision", d.Action)
		switch d.Action {
		case policy.Continue:
			continue
		case policy.Throttle:
			v.SetThrottle(d.ThrottlePercent)
			s.report.MaxThrottle = max(s.report.MaxThrottle, d.ThrottlePercent)
			continue
		case policy.Abort:
			s.report.Result = "aborted"
			return s.abort(d.Err())
		case policy.SwitchOver:
			forced = d.Forced
		}
		break
	}
	s.report.Forced = forced
	handedOver, err = s.switchover(ctx, uint32(len(s.report.Rounds)))
	return err
}

// switchover pauses the VM, sends the rest and the state, and commits. It
// reports whether the source VM was handed over (and stopped). After COMMIT
// is sent the source never resumes on its own (see lostCommit).
func (s *Source) switchover(ctx context.Context, iter uint32) (bool, error) {
	v := s.vm
	s.setProgress(func(p *Progress) { p.Phase = "switchover" })
	v.SetThrottle(0)
	if len(s.streams) > 0 {
		s.streams[0].limit.disable()
	}
	paused := time.Now()
	if err := v.Pause(); err != nil {
		return false, s.abort(err)
	}
	steps := newStepTimer(paused)
	steps.mark("pause")
	resume := func(cause error) (bool, error) {
		err := s.abort(cause)
		return s.resumeAfterPause(ctx, err)
	}
	info, err := v.MigrationInfo()
	if err != nil {
		return resume(err)
	}
	st, err := v.SaveState(info)
	if err != nil {
		return resume(err)
	}
	// The disk is synced (Pause): hand its lock to the destination.
	if err := v.UnlockDisks(); err != nil {
		return resume(err)
	}
	steps.mark("save_state")
	// The last dirty pages: everything written up to the pause, including
	// by devices while they drained.
	if _, err := v.DirtyLog(s.bitmaps); err != nil {
		return resume(err)
	}
	rd, err := s.sendRound(ctx, iter, false)
	if err != nil {
		return resume(err)
	}
	rd.DurationMs = ms(time.Since(paused))
	s.report.Rounds = append(s.report.Rounds, rd)
	steps.mark("last_pages")
	// Packets that reached this host since the pause go to the
	// destination, which delivers them, where QEMU loses them. A
	// destination that cannot take them just before COMMIT gets them
	// with the state.
	if !s.lateRX {
		s.report.RXHandedOver = v.AddPendingRX(st)
	}
	state, err := st.Encode()
	if err != nil {
		return resume(err)
	}
	s.report.StateBytes = len(state)
	// The checksums (verify mode) are computed while the state travels
	// and is restored.
	var sums chan []uint32
	if s.opts.Verify {
		sums = make(chan []uint32, 1)
		// It reads guest RAM: a switchover that fails must not return
		// (after which the caller may stop the VM and unmap its RAM)
		// while it runs.
		var summing sync.WaitGroup
		defer summing.Wait()
		summing.Go(func() { sums <- checksumRAM(s.regions) })
	}
	if err := s.sendControl(wire.TypeState, iter, state); err != nil {
		return resume(err)
	}
	if err := s.expect(ctx, wire.TypeStateOK); err != nil {
		return resume(err)
	}
	steps.mark("state_restored")
	if s.opts.Verify {
		p, err := wire.EncodeVerify(<-sums)
		if err != nil {
			return resume(err)
		}
		if err := s.sendControl(wire.TypeVerify, iter, p); err != nil {
			return resume(err)
		}
		if err := s.expect(ctx, wire.TypeAck); err != nil {
			return resume(fmt.Errorf("migration: verify: %w", err))
		}
		s.report.Verified = true
		steps.mark("verify")
	}
	if err := ctx.Err(); err != nil {
		return resume(fmt.Errorf("migration: cancelled: %w", err))
	}
	// The packets taken last cover the whole blackout but the COMMIT
	// round trip and the destination's start; COMMIT follows without
	// waiting, and a destination that refuses them never commits.
	if s.lateRX {
		pk := v.PendingRX()
		if len(pk) > 0 {
			p, err := wire.EncodeRX(pk)
			if err != nil {
				return resume(err)
			}
			if err := s.sendControl(wire.TypeRX, iter, p); err != nil {
				return resume(err)
			}
		}
		s.report.RXHandedOver = len(pk)
		steps.mark("rx")
	}
	// Once COMMIT is out, a cancel can no longer take the handover back:
	// the answer is awaited (within ReplyTimeout), or asked for, anyway.
	ctx = context.WithoutCancel(ctx)
	if err := s.sendControl(wire.TypeCommit, iter, nil); err != nil {
		// Not known to have arrived: the destination discards its VM when
		// the connection drops without COMMIT, so resuming is safe only if
		// it confirms; ask.
		return s.lostCommit(ctx, err)
	}
	if err := s.expect(ctx, wire.TypeCommitted); err != nil {
		return s.lostCommit(ctx, err)
	}
	steps.mark("commit")
	s.report.DowntimeMs = ms(time.Since(paused))
	s.report.Switchover = steps.done()
	v.Stop(fmt.Sprintf("migrated to %s", s.addr))
	return true, nil
}

// lostCommit handles a COMMIT whose answer never came: the source stays
// paused unless the destination says, on a new connection, that it did not
// commit and will never run the VM. It reports whether the source VM was
// stopped (the destination confirmed its commit).
func (s *Source) lostCommit(ctx context.Context, cause error) (bool, error) {
	reply, err := s.query(ctx)
	// Where the destination cannot tell, a pool's owner key can: the
	// take-back transaction either wins (the destination can then never
	// commit, so resuming is safe) or loses (the destination owns the VM,
	// so this side stops).
	if s.opts.ResumeGate != nil && (err != nil || (reply.State != wire.Committed && reply.State != wire.NotCommitted)) {
		s.report.Result = "aborted"
		return s.resumeAfterPause(ctx, fmt.Errorf("migration: no answer to COMMIT (%v), the destination could not say whether it committed", cause))
	}
	switch {
	case err != nil:
		s.report.Result = "unknown"
		return false, fmt.Errorf("migration: no answer to COMMIT (%v) and the destination cannot be asked (%v): the source stays paused; check the destination, then stop or resume the source by hand", cause, err)
	case reply.State == wire.Committed:
		s.vm.Stop(fmt.Sprintf("migrated to %s (confirmed after a lost reply)", s.addr))
		return true, nil
	case reply.State == wire.NotCommitted:
		s.report.Result = "aborted"
		return s.resumeAfterPause(ctx, fmt.Errorf("migration: destination did not commit (%v); the source runs again", cause))
	default:
		s.report.Result = "unknown"
		return false, fmt.Errorf("migration: destination does not know the session after a lost COMMIT reply (%v): the source stays paused", cause)
	}
}

// streamFailed explains a failed data stream. A destination that gives up
// sends ABORT on the control connection before it drops the data streams,
// so a write error there usually only echoes the destination's reason:
// look for it, briefly, and report it.
func (s *Source) streamFailed(err error) error {
	s.ctrl.SetReadDeadline(time.Now().Add(time.Second))
	h, p, rerr := s.ctrl.ReadFrame(wire.MaxMessagePayload)
	if rerr == nil && (h.Type == wire.TypeAbort || h.Type == wire.TypeError) {
		why, _ := wire.DecodeReason(h.Type, p)
		return fmt.Errorf("migration: destination aborted: %s (%w)", why, err)
	}
	return err
}

// resumeAfterPause resumes the paused source after a failed switchover,
// unless Options.ResumeGate says another host owns the VM now (then it
// stops here) or cannot tell (then it stays paused). It reports whether
// the VM left this host, and cause (with what happened) as the error.
func (s *Source) resumeAfterPause(ctx context.Context, cause error) (bool, error) {
	if gate := s.opts.ResumeGate; gate != nil {
		ok, err := gate(context.WithoutCancel(ctx))
		switch {
		case err != nil:
			s.report.Result = "unknown"
			return false, fmt.Errorf("%w; the source stays paused: its ownership cannot be confirmed: %v", cause, err)
		case !ok:
			s.vm.Stop("another host owns the VM after a failed migration")
			return true, fmt.Errorf("%w; the destination took ownership, so the source stopped", cause)
		}
	}
	// Take the disk locks back first: if another VM holds an image now,
	// running here would fork the disk.
	if err := s.vm.LockDisks(); err != nil {
		s.report.Result = "unknown"
		return false, fmt.Errorf("%w; the source stays paused: %v", cause, err)
	}
	if err := s.vm.Resume(); err != nil {
		return false, errors.Join(cause, fmt.Errorf("migration: resume source: %w", err))
	}
	return false, cause
}

// abort tells the destination to give up (best effort) and returns cause.
func (s *Source) abort(cause error) error {
	if s.ctrl != nil {
		s.ctrl.SetWriteDeadline(time.Now().Add(time.Second))
		s.ctrl.WriteFrame(wire.TypeAbort, 0, 0, wire.EncodeReason(cause.Error()))
	}
	if s.report.Result == "" {
		s.report.Result = "aborted"
	}
	return cause
}

// connect opens the control connection and says HELLO.
func (s *Source) connect(ctx context.Context, id wire.SessionID) error {
	c, err := s.dial(ctx)
	if err != nil {
		return err
	}
	s.ctrl = c
	return c.WriteHello(wire.Hello{Version: wire.ProtocolVersion, Session: id, Role: wire.RoleControl, Streams: uint8(s.opts.Streams)})
}

func (s *Source) dial(ctx context.Context) (*wire.Conn, error) {
	d := net.Dialer{Timeout: s.opts.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("migration: connect to destination %s: %w", s.addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		wire.SetKeepalive(tc)
		tc.SetNoDelay(true)
	}
	if s.opts.TLS != nil {
		cfg := s.opts.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(s.addr)
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("migration: TLS with destination %s: %w", s.addr, err)
		}
		nc = tc
	}
	return wire.NewConn(nc), nil
}

func (s *Source) openStreams(ctx context.Context, id wire.SessionID) error {
	limit := s.limit
	// A cancel must not wait for the streams' paced writes.
	context.AfterFunc(ctx, limit.disable)
	for i := range s.opts.Streams {
		c, err := s.dial(ctx)
		if err != nil {
			return err
		}
		st := newStream(c, &s.bytes, limit)
		s.streams = append(s.streams, st)
		if err := c.WriteHello(wire.Hello{Version: wire.ProtocolVersion, Session: id, Role: wire.RoleData,
			Stream: uint8(i), Streams: uint8(s.opts.Streams)}); err != nil {
			return fmt.Errorf("migration: data stream %d: %w", i, err)
		}
	}
	return nil
}

func (s *Source) closeAll() {
	for _, st := range s.streams {
		st.close()
	}
	if s.ctrl != nil {
		s.ctrl.Close()
	}
}

func (s *Source) sendControl(t wire.Type, iter uint32, payload []byte) error {
	s.ctrl.SetWriteDeadline(time.Now().Add(s.opts.ReplyTimeout))
	if err := s.ctrl.WriteFrame(t, 0, iter, payload); err != nil {
		return fmt.Errorf("migration: send %v: %w", t, err)
	}
	s.bytes.Add(uint64(wire.HeaderSize + len(payload)))
	return nil
}

// reply waits for the next control frame from the destination, turning an
// ABORT or ERROR into an error.
func (s *Source) reply(ctx context.Context) (wire.Header, []byte, error) {
	deadline := time.Now().Add(s.opts.ReplyTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	s.ctrl.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { s.ctrl.SetReadDeadline(time.Now()) })
	defer stop()
	h, p, err := s.ctrl.ReadFrame(wire.MaxControlPayload)
	if err != nil {
		if ctx.Err() != nil {
			return h, nil, fmt.Errorf("migration: cancelled: %w", ctx.Err())
		}
		return h, nil, fmt.Errorf("migration: waiting for the destination: %w", err)
	}
	if h.Type == wire.TypeAbort {
		why, _ := wire.DecodeReason(h.Type, p)
		return h, nil, fmt.Errorf("migration: destination aborted: %s", why)
	}
	return h, p, nil
}

func (s *Source) expect(ctx context.Context, t wire.Type) error {
	h, p, err := s.reply(ctx)
	if err != nil {
		return err
	}
	if h.Type == wire.TypeError {
		why, _ := wire.DecodeReason(h.Type, p)
		return fmt.Errorf("migration: destination error: %s", why)
	}
	if h.Type != t {
		return fmt.Errorf("migration: destination sent %v, want %v", h.Type, t)
	}
	return nil
}

// query asks the destination on a new connection whether it committed.
func (s *Source) query(ctx context.Context) (wire.QueryReply, error) {
	var r wire.QueryReply
	c, err := s.dial(ctx)
	if err != nil {
		return r, err
	}
	defer c.Close()
	hello := wire.Hello{Version: wire.ProtocolVersion, Role: wire.RoleControl, Streams: uint8(s.opts.Streams)}
	copy(hello.Session[:], s.sessionID[:])
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteHello(hello); err != nil {
		return r, err
	}
	if err := c.WriteFrame(wire.TypeQuery, 0, 0, nil); err != nil {
		return r, err
	}
	h, p, err := c.ReadFrame(wire.MaxControlPayload)
	if err != nil {
		return r, err
	}
	if h.Type != wire.TypeQueryReply {
		return r, fmt.Errorf("destination answered QUERY with %v", h.Type)
	}
	return wire.DecodeQueryReply(p)
}

func mustEncode(b []byte, err error) []byte {
	if err != nil {
		panic(err) // encoding our own structs cannot fail
	}
	return b
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// stepTimer records how long each switchover step took, for the report:
// the downtime is their sum.
type stepTimer struct {
	last  time.Time
	steps map[string]float64
}

func newStepTimer(t time.Time) *stepTimer { return &stepTimer{last: t, steps: map[string]float64{}} }

func (st *stepTimer) mark(name string) {
	now := time.Now()
	st.steps[name] = ms(now.Sub(st.last))
	st.last = now
}

func (st *stepTimer) done() map[string]float64 { return st.steps }

// checksumRAM computes the verify table of guest RAM, not reading pages
// that were never touched.
func checksumRAM(regions []*memory.Region) []uint32 {
	host := make([][]byte, len(regions))
	for i, r := range regions {
		host[i] = r.Host
	}
	skip, done, err := untouchedSkipper(regions)
	if err != nil {
		return wire.ChecksumRAM(host, nil)
	}
	defer done()
	return wire.ChecksumRAM(host, skip)
}
