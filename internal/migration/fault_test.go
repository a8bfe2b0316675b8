package migration_test

// Fault injection: every failure before the handover leaves the source
// running with its memory intact and the destination never runs without
// the commit; a lost reply after the commit leaves the source paused (or
// stopped, once the destination confirms the commit), never resumed beside
// a running destination. The faults go in through faultProxy
// (proxy_test.go), the policy, the context and the Destination's config.
//
// Each test gives the destination VM its own output counter and console:
// the destination's serial output is also copied into the shared console
// (so that a heartbeat line cut by a switchover is completed there), and
// any byte from it before a commit is a VM that ran twice.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godwit-vmm/godwit/internal/arch/x86"
	"github.com/godwit-vmm/godwit/internal/guest"
	"github.com/godwit-vmm/godwit/internal/migration"
	"github.com/godwit-vmm/godwit/internal/migration/policy"
	"github.com/godwit-vmm/godwit/internal/migration/wire"
	"github.com/godwit-vmm/godwit/internal/testenv"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// countingWriter counts the bytes written through it.
type countingWriter struct {
	n atomic.Int64
	w io.Writer
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.n.Add(int64(len(b)))
	return c.w.Write(b)
}

// received is what Destination.Receive returned.
type received struct {
	v   *vm.VM
	err error
}

// faultPair is a pair whose destination writes to its own console as well
// as the shared one, and whose Destination.Receive runs for the whole test
// (it must survive failed attempts).
type faultPair struct {
	*pair
	dstOut   *countingWriter // every byte the destination VM printed
	dstCon   *guest.Console  // the destination VM's own lines
	recv     chan received
	got      *received // Receive's result once taken
	stopRecv context.CancelFunc
	// recvMayEnd: the test ends Receive itself.
	recvMayEnd bool
}

// newFaultPair boots the test guest as the source (cfg as for newPair) and
// starts a Destination on loopback with base as its host config (Name and
// Console are set here).
func newFaultPair(t *testing.T, cfg vm.Config, base vm.Config) *faultPair {
	t.Helper()
	return newFaultPairOn(t, cfg, base, nil)
}

// newFaultPairOn is newFaultPair with the destination listening on
// wrap(the pair's listener), e.g. migration.TLSListener.
func newFaultPairOn(t *testing.T, cfg vm.Config, base vm.Config, wrap func(net.Listener) net.Listener, setup ...func(*migration.Destination)) *faultPair {
	t.Helper()
	p := newPair(t, cfg)
	fp := &faultPair{pair: p, dstCon: guest.NewConsole(nil), recv: make(chan received, 1)}
	fp.dstOut = &countingWriter{w: io.MultiWriter(p.con, fp.dstCon)}
	base.Name, base.Console = "dst", fp.dstOut
	ln := p.ln
	if wrap != nil {
		ln = wrap(ln)
	}
	p.dst = migration.NewDestination(ln, base, testenv.Logger(t))
	p.dst.AcceptTimeout = 10 * time.Second
	for _, f := range setup {
		f(p.dst)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fp.stopRecv = cancel
	go func() {
		v, err := p.dst.Receive(ctx)
		fp.recv <- received{v, err}
	}()
	t.Cleanup(func() {
		cancel()
		if r := fp.result(30 * time.Second); r != nil && r.v != nil {
			r.v.Stop("test over")
		}
		p.dst.Wait() // no greeter logs after the test
	})
	return fp
}

// result waits up to timeout for Receive to return; nil if it did not.
func (fp *faultPair) result(timeout time.Duration) *received {
	if fp.got != nil {
		return fp.got
	}
	select {
	case r := <-fp.recv:
		fp.got = &r
	case <-time.After(timeout):
	}
	return fp.got
}

// workload starts `W alloc wset rate` on the source and lets it run a
// little.
func (fp *faultPair) workload(alloc, wset, rate int) {
	fp.t.Helper()
	cmd := fmt.Sprintf("W %d %d %d", alloc, wset, rate)
	fp.command(fp.src, cmd, "ACK "+cmd, 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fp.con.WaitHeartbeats(ctx, len(fp.con.Heartbeats())+20); err != nil {
		fp.t.Fatal(err)
	}
}

// send migrates the source to addr (the proxy's, normally).
func (fp *faultPair) send(addr string, opts migration.Options) (*migration.Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	return fp.sendCtx(ctx, addr, opts)
}

func (fp *faultPair) sendCtx(ctx context.Context, addr string, opts migration.Options) (*migration.Report, error) {
	rep, err := migration.Send(ctx, fp.src, addr, opts, testenv.Logger(fp.t))
	if rep != nil {
		fp.t.Logf("report: result %s, %d rounds, %d bytes, %.0f ms; error: %v", rep.Result, len(rep.Rounds), rep.Bytes, rep.TotalMs, err)
	}
	return rep, err
}

// assertDestNeverRan checks that the destination produced no VM and that no
// byte of guest output came from it.
func (fp *faultPair) assertDestNeverRan() {
	fp.t.Helper()
	if fp.got == nil {
		select {
		case r := <-fp.recv:
			fp.got = &r
		default:
		}
	}
	if fp.got != nil {
		if fp.got.v != nil {
			fp.t.Errorf("the destination returned a VM (state %s) without a commit", fp.got.v.Status().State)
		} else if !fp.recvMayEnd {
			fp.t.Errorf("Destination.Receive gave up after a failed attempt: %v", fp.got.err)
		}
	}
	if n := fp.dstOut.n.Load(); n != 0 {
		lines := fp.dstCon.Lines()
		fp.t.Errorf("the destination VM ran without a commit: it printed %d bytes (%d lines, first %q)", n, len(lines), firstText(lines))
	}
}

func firstText(l []guest.Line) string {
	if len(l) == 0 {
		return ""
	}
	return l[0].Text
}

// assertSourceSurvived checks the outcome of a migration that had to fail
// before the handover: err names the cause (every string of want), the
// source runs unthrottled, its heartbeats go on without a sequence gap, its
// workload pages verify, and the destination never ran.
func (fp *faultPair) assertSourceSurvived(err error, want ...string) {
	fp.t.Helper()
	if err == nil {
		fp.t.Fatal("the migration succeeded despite the fault")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			fp.t.Errorf("error %q does not say %q", err, w)
		}
	}
	if st := fp.src.Status().State; st != vm.StateRunning {
		fp.t.Fatalf("source is %s after a failed migration (%v)", st, err)
	}
	if th := fp.src.Throttle(); th != 0 {
		fp.t.Errorf("source still throttled %d%% after a failed migration", th)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fp.con.WaitHeartbeats(ctx, len(fp.con.Heartbeats())+30); err != nil {
		fp.t.Fatalf("source heartbeats stopped after the failed migration: %v", err)
	}
	g := guest.CheckHeartbeats(fp.con.Heartbeats())
	if len(g.SeqErrors) > 0 {
		fp.t.Errorf("heartbeat sequence broken: %v", g.SeqErrors)
	}
	line := fp.command(fp.src, "V", "VERIFY ", 120*time.Second)
	if !strings.HasPrefix(line, "VERIFY OK") {
		fp.t.Errorf("source guest verify after the failed migration: %s", line)
	}
	fp.assertDestNeverRan()
	fp.t.Logf("source survived: %d heartbeats, longest gap %v after seq %d; %s", g.Count, g.LongestGap.Round(time.Millisecond), g.GapAfter, line)
}

// migrateClean migrates straight to the same Destination, which must still
// accept after the failed attempts, and checks the guest on the other side.
func (fp *faultPair) migrateClean() {
	fp.t.Helper()
	_, err := fp.send(fp.ln.Addr().String(), converging())
	if err != nil {
		fp.t.Fatalf("clean migration after the fault: %v", err)
	}
	r := fp.result(60 * time.Second)
	if r == nil || r.v == nil {
		fp.t.Fatalf("Receive after the clean migration: %+v", r)
	}
	if st := fp.src.Status().State; st != vm.StateStopped {
		fp.t.Errorf("source after the clean migration: %s", st)
	}
	fp.checkGuest(r.v, true)
	if len(fp.dstCon.Heartbeats()) == 0 {
		fp.t.Error("no heartbeat from the destination's own console")
	}
}

// steadyRate is the workload's write rate (pages/s, 16 MiB/s) in tests
// that need the migration to reach the switchover: it dirties pages every
// round yet converges even when the race detector slows the data path to
// well under 100 MiB/s.
const steadyRate = 4000

// converging are the options of migrations that should reach the
// switchover: verify mode, and the default policy (with auto-converge).
func converging() migration.Options {
	return migration.Options{Verify: true, Policy: policy.Defaults()}
}

// hopeless is a policy that can never switch over: the engine's fixed
// switchover cost alone (5 ms) exceeds MaxDowntime.
func hopeless(autoConverge bool, total time.Duration) policy.Config {
	return policy.Config{DowntimeTarget: time.Millisecond, MaxDowntime: time.Millisecond,
		MaxIterations: 1000, MaxTotal: total, AutoConverge: autoConverge,
		ThrottleInitial: 20, ThrottleStep: 20, ThrottleMax: 99}
}

func withReplyTimeout(o migration.Options, d time.Duration) migration.Options {
	o.ReplyTimeout = d
	return o
}

// connErr are the words a broken connection shows up with.
func isConnErr(err error) bool {
	s := err.Error()
	for _, w := range []string{"reset by peer", "broken pipe", "EOF", "connection refused", "closed"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// TestFaultCutMidPrecopy: the connections die (RST, as when the
// destination process is killed) after 20 MiB of pages; the source goes on
// running and the same Destination then accepts a clean migration.
func TestFaultCutMidPrecopy(t *testing.T) {
	fp := newFaultPair(t, vm.Config{}, vm.Config{})
	fp.workload(64, 32, steadyRate)
	px := newFaultProxy(t, fp.ln.Addr().String())
	px.CutAfterData = 20 << 20
	_, err := fp.send(px.Addr(), converging())
	if px.Cuts() == 0 {
		t.Fatalf("the proxy never cut (%d data bytes passed): %v", px.DataBytes(), err)
	}
	fp.assertSourceSurvived(err, "migration")
	if err != nil && !isConnErr(err) {
		t.Errorf("error does not name the broken connection: %v", err)
	}
	fp.migrateClean()
}

// TestFaultDestinationCancelled: the destination gives up (its Receive
// context ends, as when its operator cancels or the process is shutting
// down) in the middle of pre-copy; the source learns it and runs on.
func TestFaultDestinationCancelled(t *testing.T) {
	fp := newFaultPair(t, vm.Config{}, vm.Config{})
	fp.workload(64, 32, steadyRate)
	px := newFaultProxy(t, fp.ln.Addr().String())
	fp.recvMayEnd = true
	var fired atomic.Bool
	px.Mutate = func(f frameInfo, off uint64, b []byte) {
		if f.Conn.Role == wire.RoleData && px.DataBytes() > 16<<20 && !fired.Swap(true) {
			fp.stopRecv()
		}
	}
	start := time.Now()
	_, err := fp.send(px.Addr(), converging())
	if !fired.Load() {
		t.Fatalf("never cancelled the destination: %v", err)
	}
	fp.assertSourceSurvived(err, "destination aborted", "the destination gave up")
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("the source took %v to notice the destination giving up", d)
	}
	if r := fp.result(10 * time.Second); r == nil || r.v != nil || r.err == nil {
		t.Errorf("Receive after its context ended: %+v", r)
	}
}

// TestFaultCutAtSwitchover cuts every connection at each step of the
// switchover before COMMIT: the paused source must resume.
func TestFaultCutAtSwitchover(t *testing.T) {
	cases := []struct {
		name   string
		toDest bool
		typ    wire.Type
		nth    int // cut at the nth frame of that type and direction (from 1)
	}{
		{"STATE", true, wire.TypeState, 1},
		{"STATE_OK", false, wire.TypeStateOK, 1},
		{"VERIFY", true, wire.TypeVerify, 1},
		{"VERIFY-ACK", false, wire.TypeAck, 2}, // the first ACK answers CONFIG
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fp := newFaultPair(t, vm.Config{}, vm.Config{})
			fp.workload(64, 32, steadyRate)
			px := newFaultProxy(t, fp.ln.Addr().String())
			seen := 0
			px.OnFrame = func(f frameInfo) proxyAction {
				if f.Conn.Role == wire.RoleControl && f.ToDest == tc.toDest && f.Type == tc.typ {
					if seen++; seen == tc.nth {
						return cutAll
					}
				}
				return forward
			}
			_, err := fp.send(px.Addr(), converging())
			if px.Cuts() == 0 {
				t.Fatalf("the proxy never saw %s: %v", tc.name, err)
			}
			fp.assertSourceSurvived(err, "migration")
			if i == len(cases)-1 {
				fp.migrateClean()
			}
		})
	}
}

// TestFaultCorruptStream feeds the destination malformed migration streams:
// a clear error, an ABORT, and the source runs on.
func TestFaultCorruptStream(t *testing.T) {
	// corruptFirstPages rewrites run 0 of the first PAGES frame.
	corruptFirstPages := func(edit func(run []byte)) func(f frameInfo, off uint64, b []byte) {
		done := false
		return func(f frameInfo, off uint64, b []byte) {
			if done || f.Type != wire.TypePages || !f.ToDest || off != 0 || len(b) < 20 {
				return
			}
			done = true
			edit(b[4:20])
		}
	}
	t.Run("PAGES-gpa-outside-RAM", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 32, steadyRate)
		px := newFaultProxy(t, fp.ln.Addr().String())
		px.Mutate = corruptFirstPages(func(run []byte) { binary.LittleEndian.PutUint64(run, 1<<40) })
		start := time.Now()
		_, err := fp.send(px.Addr(), converging())
		fp.assertSourceSurvived(err, "destination aborted", "0x10000000000")
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the corrupt stream took %v to fail", d)
		}
		fp.migrateClean()
	})
	t.Run("PAGES-bad-kind", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 32, steadyRate)
		px := newFaultProxy(t, fp.ln.Addr().String())
		px.Mutate = corruptFirstPages(func(run []byte) { run[12] = 7 })
		_, err := fp.send(px.Addr(), converging())
		fp.assertSourceSurvived(err, "destination aborted", "unknown kind 7")
	})
	t.Run("page-data-caught-by-verify", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		// 16 MiB hot, 48 MiB stamped once and never written again: a
		// page flipped there in round 0 is never sent again.
		fp.workload(64, 16, steadyRate)
		px := newFaultProxy(t, fp.ln.Addr().String())
		const lo, hi = 48 << 20, 80 << 20 // inside the cold part (16 MiB + [32, 64) MiB)
		var target uint64                 // payload offset to flip in the current frame
		var active bool                   // target is set for the current frame
		var flipped uint64                // gpa of the flipped page, once done
		px.Mutate = func(f frameInfo, off uint64, b []byte) {
			if f.Type != wire.TypePages || !f.ToDest || f.Iter != 0 || flipped != 0 {
				return
			}
			if off == 0 {
				active = false
				nruns := uint64(binary.LittleEndian.Uint32(b))
				data := 4 + 16*nruns
				for i := range nruns {
					e := b[4+16*i:]
					gpa, npages, kind := binary.LittleEndian.Uint64(e), uint64(binary.LittleEndian.Uint32(e[8:])), e[12]
					if kind != byte(wire.KindData) {
						continue
					}
					if gpa >= lo && gpa < hi {
						target = data + 100 // a byte the guest's own verify does not read
						active = true
						if target < uint64(len(b)) {
							b[target] ^= 0x5a
							flipped = gpa
						}
						break
					}
					data += npages * wire.PageSize
				}
				return
			}
			if active && target >= off && target < off+uint64(len(b)) {
				b[target-off] ^= 0x5a
				flipped = 1
			}
		}
		_, err := fp.send(px.Addr(), converging())
		if flipped == 0 {
			t.Fatalf("no page in [%#x, %#x) went by: %v", lo, hi, err)
		}
		t.Logf("flipped a byte of page %#x", flipped)
		fp.assertSourceSurvived(err, "verify")
	})
	t.Run("STATE-garbage", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 32, steadyRate)
		px := newFaultProxy(t, fp.ln.Addr().String())
		px.Mutate = func(f frameInfo, off uint64, b []byte) {
			if f.Type == wire.TypeState && f.ToDest && f.Conn.Role == wire.RoleControl {
				for i := range b {
					b[i] = 0xff
				}
			}
		}
		_, err := fp.send(px.Addr(), converging())
		fp.assertSourceSurvived(err, "destination aborted", "machine state")
	})
	t.Run("HELLO-garbage", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		px := newFaultProxy(t, fp.ln.Addr().String())
		px.OnHello = func(c *proxyConn, hello []byte) {
			if c.Role == wire.RoleControl {
				copy(hello, "GARBAGE!")
			}
		}
		_, err := fp.send(px.Addr(), migration.Options{})
		fp.assertSourceSurvived(err, "not a Godwit migration stream")
	})
	t.Run("HELLO-newer-version", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		px := newFaultProxy(t, fp.ln.Addr().String())
		px.OnHello = func(c *proxyConn, hello []byte) { binary.LittleEndian.PutUint32(hello[8:], 99) }
		_, err := fp.send(px.Addr(), migration.Options{})
		fp.assertSourceSurvived(err, "version 99")
	})
	t.Run("garbage-client", func(t *testing.T) {
		// Not a migration source at all: the Destination drops it and
		// still takes the next, real, migration.
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 32, steadyRate)
		for _, junk := range []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", strings.Repeat("\x00", 100), "GODWITMG"} {
			c, err := net.Dial("tcp", fp.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte(junk))
			if len(junk) < wire.HelloSize {
				c.(*net.TCPConn).CloseWrite()
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			reply, err := io.ReadAll(c)
			c.Close()
			t.Logf("destination answered %q to %q (%v)", reply, junk, err)
		}
		fp.assertDestNeverRan()
		fp.migrateClean()
	})
}

// TestFaultRefusal: the destination refuses CONFIG; the source was never
// paused nor tracked.
func TestFaultRefusal(t *testing.T) {
	// send migrates while watching the source's state: a refusal must
	// come before the source is ever paused.
	send := func(fp *faultPair, addr string) (rep *migration.Report, start, end time.Time, err error) {
		t.Helper()
		stop := make(chan struct{})
		seen := make(chan vm.State, 1)
		go func() {
			defer close(seen)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if st := fp.src.Status().State; st != vm.StateRunning {
					seen <- st
					return
				}
				time.Sleep(200 * time.Microsecond)
			}
		}()
		start = time.Now()
		rep, err = fp.send(addr, converging())
		end = time.Now()
		close(stop)
		if st, ok := <-seen; ok {
			t.Errorf("the source was %s during a refused migration", st)
		}
		return rep, start, end, err
	}
	check := func(fp *faultPair, rep *migration.Report, err error, start, end time.Time, want string) {
		t.Helper()
		fp.assertSourceSurvived(err, "refused", want)
		if rep == nil || rep.Result != "refused" || len(rep.Rounds) != 0 {
			t.Errorf("report after a refusal: %+v", rep)
		}
		// No pause shows in the guest's heartbeats either.
		var prev time.Time
		for _, hb := range fp.con.Heartbeats() {
			if hb.At.After(start) && hb.At.Before(end.Add(100*time.Millisecond)) && !prev.IsZero() && hb.At.Sub(prev) > 300*time.Millisecond {
				t.Errorf("heartbeat gap of %v after %d during a refused migration: was the source paused?", hb.At.Sub(prev), hb.Seq-1)
			}
			prev = hb.At
		}
	}
	t.Run("NIC-without-TAP", func(t *testing.T) {
		testenv.RequireRoot(t)
		tap := fmt.Sprintf("gwft%d", os.Getpid()%1000000)
		fp := newFaultPair(t, vm.Config{Net: &vm.NetConfig{TAP: tap}}, vm.Config{})
		fp.workload(64, 32, steadyRate)
		rep, start, end, err := send(fp, fp.ln.Addr().String())
		check(fp, rep, err, start, end, "without --tap")
	})
	t.Run("disk-not-shared", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "disk.img")
		data := make([]byte, 4<<20)
		for i := range data {
			data[i] = byte(i * 7)
		}
		if err := os.WriteFile(img, data, 0o600); err != nil {
			t.Fatal(err)
		}
		// Keep the VM's image reachable under another name, to put it
		// back at its path after each refusal.
		if err := os.Link(img, img+".orig"); err != nil {
			t.Fatal(err)
		}
		restore := func() {
			os.Remove(img + ".tmp")
			if err := os.Link(img+".orig", img+".tmp"); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(img+".tmp", img); err != nil {
				t.Fatal(err)
			}
		}
		fp := newFaultPair(t, vm.Config{Disk: &vm.DiskConfig{Path: img}}, vm.Config{Disk: &vm.DiskConfig{Path: img}})
		fp.workload(64, 32, steadyRate)
		// Once CONFIG has left the source (which described its image
		// then), another file takes the image's path: the destination
		// sees what a host without the shared storage would.
		px := newFaultProxy(t, fp.ln.Addr().String())
		var replacement []byte
		px.OnFrame = func(f frameInfo) proxyAction {
			if f.Type == wire.TypeConfig && f.ToDest && replacement != nil {
				if err := os.WriteFile(img+".new", replacement, 0o600); err != nil {
					t.Error(err)
				}
				if err := os.Rename(img+".new", img); err != nil {
					t.Error(err)
				}
				replacement = nil
			}
			return forward
		}
		for _, tc := range []struct {
			what string
			file []byte
			want string
		}{
			{"a copy", data, "another file than the source's"},
			{"another size", data[:2<<20], "not the same image"},
		} {
			t.Logf("the destination sees %s", tc.what)
			replacement = tc.file
			rep, start, end, err := send(fp, px.Addr())
			check(fp, rep, err, start, end, tc.want)
			restore()
		}
		// An image replaced at its path while the VM runs, before the
		// migration: the source describes the file it has open, so the
		// destination, which would open the replacement, refuses.
		t.Logf("the image's path names a copy before the migration starts")
		if err := os.WriteFile(img+".new", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(img+".new", img); err != nil {
			t.Fatal(err)
		}
		rep, start, end, err := send(fp, fp.ln.Addr().String())
		check(fp, rep, err, start, end, "another file than the source's")
		restore()
		// With the real image back, the same Destination takes the VM.
		fp.migrateClean()
	})
}

// TestFaultCancel cancels the source's context at three points.
func TestFaultCancel(t *testing.T) {
	t.Run("precopy", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 64, 0)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		src, err := migration.NewSource(fp.src, fp.ln.Addr().String(),
			migration.Options{Verify: true, Policy: hopeless(false, time.Minute)}, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		var at migration.Progress
		go func() {
			for ctx.Err() == nil {
				if p := src.Progress(); p.TransferredBytes > 8<<20 {
					at = p
					cancel()
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		rep, err := src.Run(ctx)
		t.Logf("cancelled at %+v; report %s, %d rounds", at, rep.Result, len(rep.Rounds))
		if at.Phase != "precopy" {
			t.Errorf("cancelled in phase %q, want precopy", at.Phase)
		}
		fp.assertSourceSurvived(err, "cancel")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v is not context.Canceled", err)
		}
	})
	t.Run("switchover", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 32, steadyRate)
		px := newFaultProxy(t, fp.ln.Addr().String())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		px.OnFrame = func(f frameInfo) proxyAction {
			if f.Type == wire.TypeState && f.ToDest {
				cancel() // the source is paused and waits for STATE_OK
			}
			return forward
		}
		_, err := fp.sendCtx(ctx, px.Addr(), converging())
		fp.assertSourceSurvived(err, "cancel")
	})
	t.Run("after-COMMIT", func(t *testing.T) {
		// Once COMMIT is out, cancelling cannot undo the handover: the
		// source must still learn the outcome and stop.
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 32, steadyRate)
		px := newFaultProxy(t, fp.ln.Addr().String())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		px.OnFrame = func(f frameInfo) proxyAction {
			if f.Type == wire.TypeCommit && f.ToDest {
				cancel()
			}
			return forward
		}
		_, err := fp.sendCtx(ctx, px.Addr(), converging())
		r := fp.result(30 * time.Second)
		if r == nil || r.v == nil {
			t.Fatalf("the destination did not commit: %+v", r)
		}
		if st := fp.src.Status().State; st != vm.StateStopped {
			t.Fatalf("source is %s after COMMIT went out and the destination committed (Send: %v)", st, err)
		}
		if err != nil {
			t.Errorf("Send after a committed migration: %v", err)
		}
		fp.checkGuest(r.v, true)
	})
}

// TestFaultNotConverging: a guest that cannot converge under the policy is
// aborted (after throttling), and a destination that stops answering times
// out; the source runs on in both cases.
func TestFaultNotConverging(t *testing.T) {
	t.Run("policy", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 64, 0)
		start := time.Now()
		rep, err := fp.send(fp.ln.Addr().String(), migration.Options{Verify: true, Policy: hopeless(true, 2*time.Second)})
		d := time.Since(start)
		fp.assertSourceSurvived(err, "not converging")
		if !errors.Is(err, policy.ErrNotConverging) {
			t.Errorf("error %v is not policy.ErrNotConverging", err)
		}
		if rep.Result != "aborted" {
			t.Errorf("report result %q, want aborted", rep.Result)
		}
		if d > 10*time.Second {
			t.Errorf("gave up after %v with MaxTotal 2s", d)
		}
		t.Logf("gave up after %v, %d rounds, max throttle %d%%", d.Round(time.Millisecond), len(rep.Rounds), rep.MaxThrottle)
	})
	t.Run("MaxTotal", func(t *testing.T) {
		// A slow link (ITER_DONE held back 700 ms) and a 1 s cap: the cap,
		// not the stall detector (3 rounds), ends it after at most two.
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 64, 0)
		px := newFaultProxy(t, fp.ln.Addr().String())
		px.OnFrame = func(f frameInfo) proxyAction {
			if f.Type == wire.TypeIterDone && !f.ToDest {
				time.Sleep(700 * time.Millisecond)
			}
			return forward
		}
		rep, err := fp.send(px.Addr(), migration.Options{Verify: true, Policy: hopeless(false, time.Second)})
		fp.assertSourceSurvived(err, "not converging after", "(cap 1s)")
		if !errors.Is(err, policy.ErrNotConverging) {
			t.Errorf("error %v is not policy.ErrNotConverging", err)
		}
		if rep.Result != "aborted" || len(rep.Rounds) > 2 {
			t.Errorf("report: result %q after %d rounds, want aborted after 1 or 2", rep.Result, len(rep.Rounds))
		}
	})
	t.Run("reply-timeout", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 32, steadyRate)
		px := newFaultProxy(t, fp.ln.Addr().String())
		px.OnFrame = func(f frameInfo) proxyAction {
			if f.Type == wire.TypeStateOK && !f.ToDest {
				return blackhole // the destination's replies stop arriving
			}
			return forward
		}
		start := time.Now()
		_, err := fp.send(px.Addr(), withReplyTimeout(converging(), 2*time.Second))
		d := time.Since(start)
		fp.assertSourceSurvived(err, "timeout")
		if d > 10*time.Second {
			t.Errorf("gave up after %v with ReplyTimeout 2s", d)
		}
	})
}

// TestFaultLostCommitted: COMMIT reaches the destination, which commits and
// runs, but COMMITTED never reaches the source.
func TestFaultLostCommitted(t *testing.T) {
	// lose sets up the proxy to drop COMMITTED and reset the source's
	// connections; refuse makes the destination unreachable for QUERY.
	lose := func(t *testing.T, fp *faultPair, refuse bool) *faultProxy {
		px := newFaultProxy(t, fp.ln.Addr().String())
		px.OnFrame = func(f frameInfo) proxyAction {
			if f.Type == wire.TypeCommitted && !f.ToDest {
				if refuse {
					px.Refuse()
				}
				return cutSource
			}
			return forward
		}
		return px
	}
	// destRuns checks that the guest runs on the destination only, its
	// heartbeats continuing the source's sequence.
	destRuns := func(t *testing.T, fp *faultPair) *vm.VM {
		r := fp.result(30 * time.Second)
		if r == nil || r.v == nil {
			t.Fatalf("the destination did not return its committed VM: %+v", r)
		}
		fp.checkGuest(r.v, true)
		if len(fp.dstCon.Heartbeats()) < 50 {
			t.Errorf("only %d heartbeats on the destination's own console", len(fp.dstCon.Heartbeats()))
		}
		return r.v
	}
	t.Run("query-confirms-commit", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 32, steadyRate)
		px := lose(t, fp, false)
		conns := 0
		_, err := fp.send(px.Addr(), converging())
		conns = px.Conns()
		if px.Cuts() == 0 {
			t.Fatalf("COMMITTED never went by: %v", err)
		}
		if err != nil {
			t.Errorf("Send after the destination confirmed the commit: %v", err)
		}
		if want := 2 + migration.DefaultStreams; conns != want { // control, the data streams, the QUERY
			t.Errorf("%d connections through the proxy, want %d (control, data streams, QUERY)", conns, want)
		}
		if st := fp.src.Status().State; st != vm.StateStopped {
			t.Fatalf("source is %s after the destination confirmed its commit", st)
		}
		destRuns(t, fp)
	})
	t.Run("destination-unreachable", func(t *testing.T) {
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 32, steadyRate)
		px := lose(t, fp, true)
		rep, err := fp.send(px.Addr(), converging())
		if px.Cuts() == 0 {
			t.Fatalf("COMMITTED never went by: %v", err)
		}
		if err == nil || !strings.Contains(err.Error(), "stays paused") {
			t.Fatalf("Send with COMMITTED lost and no QUERY possible: %v, want an error saying the source stays paused", err)
		}
		if rep.Result != "unknown" {
			t.Errorf("report result %q, want unknown", rep.Result)
		}
		if st := fp.src.Status().State; st != vm.StatePaused {
			t.Fatalf("source is %s with the commit unconfirmed, want paused", st)
		}
		destRuns(t, fp)
		// Still paused while the destination ran all along.
		if st := fp.src.Status().State; st != vm.StatePaused {
			t.Errorf("source became %s on its own", st)
		}
		fp.src.Stop("the operator checked the destination")
	})
	t.Run("COMMIT-lost", func(t *testing.T) {
		// The converse: COMMIT itself never arrives. The destination
		// discards its VM; the source asks, learns it, and resumes.
		fp := newFaultPair(t, vm.Config{}, vm.Config{})
		fp.workload(64, 32, steadyRate)
		px := newFaultProxy(t, fp.ln.Addr().String())
		px.OnFrame = func(f frameInfo) proxyAction {
			if f.Type == wire.TypeCommit && f.ToDest {
				return cutAll
			}
			return forward
		}
		rep, err := fp.send(px.Addr(), converging())
		if px.Cuts() == 0 {
			t.Fatalf("COMMIT never went by: %v", err)
		}
		fp.assertSourceSurvived(err, "did not commit")
		if want := 2 + migration.DefaultStreams; px.Conns() != want {
			t.Errorf("%d connections through the proxy, want %d (control, data streams, QUERY)", px.Conns(), want)
		}
		if rep.Result != "aborted" {
			t.Errorf("report result %q, want aborted", rep.Result)
		}
		fp.migrateClean()
	})
}

// FuzzDecodeMachineState: the STATE payload is peer bytes; decoding them
// must fail cleanly, never panic.
func FuzzDecodeMachineState(f *testing.F) {
	small := &vm.MachineState{Version: vm.MachineStateVersion, SavedAt: time.Unix(1700000000, 0),
		VCPUs: []*x86.VCPUState{{ID: 0, XSAVE: make([]byte, 64)}, {ID: 1}}, VM: &x86.VMState{}}
	b, err := small.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	if real := realMachineState(f); real != nil {
		f.Add(real)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := vm.DecodeMachineState(b)
		if err != nil {
			return
		}
		if s.Version != vm.MachineStateVersion || s.VM == nil || len(s.VCPUs) == 0 {
			t.Fatalf("accepted an incomplete state: %+v", s)
		}
		if _, err := s.Encode(); err != nil {
			t.Fatalf("decoded state does not encode again: %v", err)
		}
	})
}

// realMachineState saves the state of the test guest, or returns nil when
// no accelerator runs VMs here or the guest is missing (the fuzz target then runs on the synthetic
// seed alone).
func realMachineState(f *testing.F) []byte {
	if !testenv.VMAvailable() {
		return nil
	}
	elf := os.Getenv("GODWIT_GUEST")
	if elf == "" {
		elf = filepath.Join("..", "..", "guest", "build", "guest.elf")
	}
	if _, err := os.Stat(elf); err != nil {
		return nil
	}
	con := guest.NewConsole(nil)
	v, err := vm.New(vm.Config{Name: "fuzz-seed", MemBytes: 64 << 20, VCPUs: 2, Kernel: elf, Cmdline: "cpus=2", Console: con}, testenv.Logger(f))
	if err != nil {
		f.Logf("no real seed: %v", err)
		return nil
	}
	defer v.Stop("seed saved")
	if err := v.Start(); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := con.WaitPrefix(ctx, 0, "READY"); err != nil {
		f.Logf("no real seed: %v", err)
		return nil
	}
	if err := v.Pause(); err != nil {
		return nil
	}
	info, _ := v.MigrationInfo()
	st, err := v.SaveState(info)
	if err != nil {
		f.Logf("no real seed: %v", err)
		return nil
	}
	b, err := st.Encode()
	if err != nil {
		return nil
	}
	// Stop it running: in package vm, stopping a VM whose vCPUs are
	// parked can kick a vCPU after its thread unmapped kvm_run (SIGSEGV).
	v.Resume()
	if _, err := vm.DecodeMachineState(b); err != nil {
		f.Fatalf("a real state does not decode: %v", err)
	}
	return b
}
