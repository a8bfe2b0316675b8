package migration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godwit-vmm/godwit/internal/memory"
	"github.com/godwit-vmm/godwit/internal/migration/wire"
	"github.com/godwit-vmm/godwit/internal/vm"
)

// Destination waits for one incoming migration on a listener.
//
// Every accepted connection is greeted on its own goroutine: the TLS
// handshake (where the listener is TLS), HELLO and, on a control
// connection, the first frame, all within HelloTimeout. Only then does
// it reach the one session under way, so a peer that connects and
// stalls delays nobody, and a peer that fails the handshake or names
// another session (Session) is refused before any byte of state is read.
type Destination struct {
	ln   net.Listener
	base vm.Config // host-local settings: name, TAP name, console
	log  *slog.Logger

	// AcceptTimeout bounds the wait for the data connections after CONFIG
	// and for each control frame while a migration is under way.
	AcceptTimeout time.Duration
	// HelloTimeout bounds a new connection's TLS handshake, HELLO and
	// first frame.
	HelloTimeout time.Duration
	// Session, if set, is the only session accepted: in a pool the one
	// derived from the migration's ID (SessionFor), which the agent told
	// this VMM of. Connections of any other session are refused at HELLO.
	Session *wire.SessionID
	// Announce is the schedule of RARP/GARP announcements after the VM
	// runs here (vm.DefaultAnnounce unless changed; Rounds 0 disables).
	Announce vm.AnnounceConfig
	// CommitGate, if set, is called when COMMIT arrives, before the VM
	// runs here: an error means this side may not take the VM (in a pool:
	// the handover transaction on the owner key lost or could not be
	// decided), and the VM is discarded as if the source had aborted.
	CommitGate func(ctx context.Context) error

	mu       sync.Mutex // guards sessions and running
	sessions map[wire.SessionID]wire.CommitState
	// running holds the session under way, closed when it has ended: a
	// QUERY about it waits for the outcome (a source whose COMMIT was
	// lost asks before this side has noticed).
	running map[wire.SessionID]chan struct{}

	controls  chan *greeted // control connections with their CONFIG
	data      chan *greeted // data connections after HELLO
	acceptErr chan error    // the listener failed
	committed chan struct{} // closed once a VM runs here
	startOnce sync.Once     // starts the accept loop
	started   atomic.Bool
	loopDone  chan struct{} // closed when the accept loop and every greeter have ended

	gmu      sync.Mutex // guards greeting
	greeting map[net.Conn]bool
	greeters sync.WaitGroup
}

// greeted is a connection past its handshake and HELLO (and, for a
// control connection, its CONFIG frame).
type greeted struct {
	nc      net.Conn
	c       *wire.Conn
	hello   wire.Hello
	payload []byte // control: CONFIG
}

// SessionFor is the session ID of the migration with the given ID: the
// source uses it (Options.Session) and the destination expects it
// (Destination.Session), so a session is bound to the one migration the
// pool recorded.
func SessionFor(migrationID string) wire.SessionID {
	sum := sha256.Sum256([]byte("godwit-migration\x00" + migrationID))
	var id wire.SessionID
	copy(id[:], sum[:])
	return id
}

// NewDestination prepares to receive a VM on ln. base holds what belongs to
// this host (Name, Console, the TAP name in Net); the VM's shape comes from
// the source.
func NewDestination(ln net.Listener, base vm.Config, log *slog.Logger) *Destination {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Destination{ln: ln, base: base, log: log.With("vm", base.Name), AcceptTimeout: 30 * time.Second,
		HelloTimeout: 10 * time.Second, Announce: vm.DefaultAnnounce,
		sessions: map[wire.SessionID]wire.CommitState{}, running: map[wire.SessionID]chan struct{}{},
		controls: make(chan *greeted), data: make(chan *greeted),
		acceptErr: make(chan error, 1), committed: make(chan struct{}), loopDone: make(chan struct{}),
		greeting: map[net.Conn]bool{}}
}

// Receive waits until one migration commits, and returns the running VM.
// Migrations that fail or abort are discarded (their VM never ran) and
// Receive waits for the next one, as a QEMU `-incoming` does not: a
// refused or broken attempt should not cost the operator a restart.
// After the commit the listener keeps answering QUERY until ctx ends.
func (d *Destination) Receive(ctx context.Context) (*vm.VM, error) {
	d.startOnce.Do(func() {
		d.started.Store(true)
		context.AfterFunc(ctx, func() { d.ln.Close() })
		go d.acceptLoop()
	})
	for {
		var g *greeted
		select {
		case g = <-d.controls:
		case err := <-d.acceptErr:
			if ctx.Err() != nil {
				return nil, fmt.Errorf("migration: waiting for an incoming VM: %w", ctx.Err())
			}
			return nil, fmt.Errorf("migration: accept: %w", err)
		case <-ctx.Done():
			return nil, fmt.Errorf("migration: waiting for an incoming VM: %w", ctx.Err())
		}
		v, err := d.session(ctx, g)
		if err != nil {
			d.log.Warn("incoming migration failed; waiting for another", "from", g.nc.RemoteAddr(), "err", err)
			continue
		}
		close(d.committed)
		return v, nil
	}
}

// acceptLoop greets every connection on its own goroutine until the
// listener closes; then it closes the connections still being greeted and
// waits for their greeters.
func (d *Destination) acceptLoop() {
	defer close(d.loopDone)
	for {
		nc, err := d.ln.Accept()
		if err != nil {
			d.gmu.Lock()
			for c := range d.greeting {
				c.Close()
			}
			d.greeting = nil
			d.gmu.Unlock()
			d.greeters.Wait()
			d.acceptErr <- err
			return
		}
		d.gmu.Lock()
		d.greeting[nc] = true
		d.greeters.Add(1)
		d.gmu.Unlock()
		go func() {
			defer d.greeters.Done()
			d.greet(nc)
			d.gmu.Lock()
			delete(d.greeting, nc)
			d.gmu.Unlock()
		}()
	}
}

// Wait waits, after the Receive context has ended, until the listener is
// closed and no goroutine of d runs any more.
func (d *Destination) Wait() {
	if d.started.Load() {
		<-d.loopDone
	}
}

// greet takes a new connection through the TLS handshake, HELLO and the
// first control frame, answers QUERY itself, and hands the rest on.
func (d *Destination) greet(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		wire.SetKeepalive(tc)
		tc.SetNoDelay(true)
	}
	nc.SetDeadline(time.Now().Add(d.HelloTimeout))
	if tc, ok := nc.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			d.log.Warn("migration connection refused at the TLS handshake", "from", nc.RemoteAddr(), "err", err)
			nc.Close()
			return
		}
	}
	c := wire.NewConn(nc)
	refuse := func(why error) {
		// Say why: the peer may be a Godwit source of another version.
		c.WriteFrame(wire.TypeError, 0, 0, wire.EncodeReason(why.Error()))
		nc.Close()
		d.log.Warn("migration connection refused", "from", nc.RemoteAddr(), "err", why)
	}
	h, err := c.ReadHello()
	if err != nil {
		refuse(err)
		return
	}
	if d.Session != nil && h.Session != *d.Session {
		refuse(fmt.Errorf("migration: session %s is not the one this destination waits for", h.Session))
		return
	}
	g := &greeted{nc: nc, c: c, hello: h}
	to := d.data
	if h.Role == wire.RoleControl {
		fh, payload, err := c.ReadFrame(wire.MaxControlPayload)
		if err != nil {
			nc.Close()
			return
		}
		switch fh.Type {
		case wire.TypeQuery:
			d.replyQuery(c, h.Session)
			nc.Close()
			return
		case wire.TypeConfig:
			g.payload, to = payload, d.controls
		default:
			refuse(fmt.Errorf("migration: first frame is %v, want CONFIG", fh.Type))
			return
		}
	}
	nc.SetDeadline(time.Time{})
	wait := time.NewTimer(d.AcceptTimeout)
	defer wait.Stop()
	select {
	case to <- g:
	case <-d.committed:
		refuse(errors.New("migration: this destination already received its VM"))
	case <-wait.C:
		refuse(errors.New("migration: no session took this connection in time"))
	case <-d.loopDone:
		nc.Close()
	}
}

func (d *Destination) replyQuery(c *wire.Conn, id wire.SessionID) {
	d.mu.Lock()
	ended := d.running[id]
	d.mu.Unlock()
	if ended != nil {
		wait := time.NewTimer(d.AcceptTimeout)
		select {
		case <-ended:
		case <-wait.C:
		}
		wait.Stop()
	}
	d.mu.Lock()
	st, ok := d.sessions[id]
	d.mu.Unlock()
	if !ok {
		st = wire.UnknownSession
	}
	p, _ := wire.EncodeQueryReply(wire.QueryReply{State: st})
	c.WriteFrame(wire.TypeQueryReply, 0, 0, p)
}

// incoming is the state of one migration being received.
type incoming struct {
	d       *Destination
	ctrl    *wire.Conn
	hello   wire.Hello
	cfg     wire.Config
	vm      *vm.VM
	streams []*wire.Conn
	ends    []chan uint32 // DATA_END iterations per stream
	errs    chan error
	done    chan struct{} // closed when the session ends, releasing stream readers

	// failed is the first failure seen outside the control loop (a data
	// stream, the Receive context); fail interrupts the loop's read.
	failed atomic.Pointer[error]
	// readers counts the stream readers: they write guest RAM, so they
	// must be gone before the VM is discarded.
	readers   sync.WaitGroup
	closeOnce sync.Once
	lateRX    bool // granted wire.FeatureLateRX
}

// session runs one control connection whose CONFIG has arrived. It
// returns the VM once committed, or an error after discarding the VM.
func (d *Destination) session(ctx context.Context, g *greeted) (*vm.VM, error) {
	h, nc := g.hello, g.nc
	ended := make(chan struct{})
	d.mu.Lock()
	d.running[h.Session] = ended
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.running, h.Session)
		d.mu.Unlock()
		close(ended)
	}()
	in := &incoming{d: d, ctrl: g.c, hello: h, errs: make(chan error, 1+int(h.Streams)), done: make(chan struct{})}
	defer in.closeStreams()
	// A Receive that ends (cancel, shutdown) abandons the migration under
	// way instead of finishing it for nobody.
	stopCancel := context.AfterFunc(ctx, func() {
		in.fail(fmt.Errorf("migration: the destination gave up: %w", ctx.Err()))
	})
	defer stopCancel()
	v, err := in.run(ctx, g.payload)
	if err != nil {
		in.discard(err)
		nc.Close()
		return nil, err
	}
	// The control connection stays open until the source closes it, so
	// that COMMITTED is not cut off by a reset.
	go func() { io.Copy(io.Discard, nc); nc.Close() }()
	return v, nil
}

// discard stops a VM that must never run and tells the source why.
func (in *incoming) discard(cause error) {
	in.d.mu.Lock()
	in.d.sessions[in.hello.Session] = wire.NotCommitted
	in.d.mu.Unlock()
	// ABORT first: the source finds the reason there when its data
	// streams break a moment later.
	in.ctrl.SetWriteDeadline(time.Now().Add(time.Second))
	in.ctrl.WriteFrame(wire.TypeAbort, 0, 0, wire.EncodeReason(cause.Error()))
	// The stream readers write into the VM's RAM: stop them before it
	// is unmapped.
	in.closeStreams()
	if in.vm != nil {
		in.vm.Stop("incoming migration failed: " + cause.Error())
		in.vm = nil
	}
}

// fail records a failure seen outside the control loop and interrupts the
// loop's wait for the next control frame, so that the session aborts now
// rather than at the next frame or after AcceptTimeout.
func (in *incoming) fail(err error) {
	if in.failed.CompareAndSwap(nil, &err) {
		in.ctrl.SetReadDeadline(time.Now())
	}
	select {
	case in.errs <- err:
	default:
	}
}

func (in *incoming) refuse(why error) error {
	in.ctrl.SetWriteDeadline(time.Now().Add(time.Second))
	in.ctrl.WriteFrame(wire.TypeError, 0, 0, wire.EncodeReason(why.Error()))
	return why
}

func (in *incoming) run(ctx context.Context, cfgPayload []byte) (*vm.VM, error) {
	d := in.d
	cfg, err := wire.DecodeConfig(cfgPayload)
	if err != nil {
		return nil, in.refuse(err)
	}
	in.cfg = cfg
	if cfg.Streams != int(in.hello.Streams) {
		return nil, in.refuse(fmt.Errorf("migration: CONFIG says %d streams, HELLO %d", cfg.Streams, in.hello.Streams))
	}
	vcfg, err := incomingConfig(d.base, cfg)
	if err != nil {
		return nil, in.refuse(err)
	}
	if err := checkHost(cfg); err != nil {
		return nil, in.refuse(err)
	}
	v, err := vm.NewIncoming(vcfg, d.log)
	if err != nil {
		return nil, in.refuse(fmt.Errorf("migration: create the VM here: %w", err))
	}
	in.vm = v
	local, err := v.MigrationInfo()
	if err != nil {
		return nil, in.refuse(err)
	}
	if err := checkCompatible(cfg, local); err != nil {
		return nil, in.refuse(err)
	}
	// Grant what this side supports of what the source asked for; a
	// source that asked for nothing gets the empty ACK it expects.
	var ack []byte
	if len(cfg.Features) > 0 {
		var granted []string
		if slices.Contains(cfg.Features, wire.FeatureLateRX) {
			granted = append(granted, wire.FeatureLateRX)
			in.lateRX = true
		}
		ack = wire.EncodeAccept(granted)
	}
	if err := in.ctrl.WriteFrame(wire.TypeAck, 0, 0, ack); err != nil {
		return nil, err
	}
	d.log.Info("incoming migration accepted", "mem_mib", vcfg.MemBytes>>20, "vcpus", vcfg.VCPUs, "streams", cfg.Streams)
	if err := in.acceptStreams(); err != nil {
		return nil, err
	}
	return in.control(ctx)
}

// acceptStreams takes the session's data connections from the greeters.
// A connection of another session is closed and does not end this one.
func (in *incoming) acceptStreams() error {
	n := in.cfg.Streams
	in.streams = make([]*wire.Conn, n)
	in.ends = make([]chan uint32, n)
	timeout := time.NewTimer(in.d.AcceptTimeout)
	defer timeout.Stop()
	for got := 0; got < n; {
		var g *greeted
		select {
		case g = <-in.d.data:
		case <-timeout.C:
			return fmt.Errorf("migration: %d of %d data streams arrived within %s", got, n, in.d.AcceptTimeout)
		}
		h := g.hello
		if h.Session != in.hello.Session || int(h.Stream) >= n || in.streams[h.Stream] != nil {
			g.nc.Close()
			in.d.log.Warn("data connection of another session or a duplicate stream refused", "from", g.nc.RemoteAddr(), "stream", h.Stream)
			continue
		}
		in.streams[h.Stream] = g.c
		in.ends[h.Stream] = make(chan uint32, 4)
		got++
	}
	sink := &ramSink{mem: in.vm.Memory()}
	for i, c := range in.streams {
		in.readers.Go(func() { in.readStream(i, c, sink) })
	}
	return nil
}

// readStream stores PAGES of one data stream straight into guest RAM.
func (in *incoming) readStream(i int, c *wire.Conn, sink *ramSink) {
	for {
		h, err := c.ReadHeader()
		if err == nil {
			switch h.Type {
			case wire.TypePages:
				_, err = c.ReadPages(h, sink)
			case wire.TypeDataEnd:
				select {
				case in.ends[i] <- h.Iteration:
				case <-in.done:
					return
				}
				continue
			default:
				err = fmt.Errorf("%v frame on a data stream", h.Type)
			}
		}
		if err != nil {
			select {
			case <-in.done: // the session is over and closed the stream
			default:
				in.fail(fmt.Errorf("migration: data stream %d: %w", i, err))
			}
			return
		}
	}
}

// closeStreams closes the data streams and waits for their readers.
func (in *incoming) closeStreams() {
	in.closeOnce.Do(func() {
		close(in.done)
		for _, c := range in.streams {
			if c != nil {
				c.Close()
			}
		}
		in.readers.Wait()
	})
}

// control answers the source's control frames until COMMIT.
func (in *incoming) control(ctx context.Context) (*vm.VM, error) {
	c := in.ctrl
	restored := false
	var sums chan []uint32 // verify table, computed once the last pages are in
	// The checksum goroutine reads guest RAM: it must be done before a
	// failed session discards the VM.
	var summing sync.WaitGroup
	defer summing.Wait()
	for {
		c.SetReadDeadline(time.Now().Add(in.d.AcceptTimeout))
		if e := in.failed.Load(); e != nil {
			return nil, *e
		}
		h, p, err := c.ReadFrame(wire.MaxControlPayload)
		if err != nil {
			if e := in.failed.Load(); e != nil {
				return nil, *e
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("migration: control connection: %w", err)
		}
		switch h.Type {
		case wire.TypeIterBegin, wire.TypeProgress:
		case wire.TypeIterEnd:
			if err := in.waitRound(h.Iteration); err != nil {
				return nil, err
			}
			if err := c.WriteFrame(wire.TypeIterDone, 0, h.Iteration, nil); err != nil {
				return nil, err
			}
		case wire.TypeState:
			if in.cfg.Verify {
				sums = make(chan []uint32, 1)
				ch := sums
				summing.Go(func() { ch <- checksumRAM(in.vm.Memory().Regions()) })
			}
			ms, err := vm.DecodeMachineState(p)
			if err != nil {
				return nil, err
			}
			if err := in.vm.RestoreState(ms); err != nil {
				return nil, err
			}
			restored = true
			if err := c.WriteFrame(wire.TypeStateOK, 0, h.Iteration, nil); err != nil {
				return nil, err
			}
		case wire.TypeVerify:
			want, err := wire.DecodeVerify(p)
			if err != nil {
				return nil, err
			}
			if sums == nil {
				return nil, errors.New("migration: VERIFY before STATE, or not announced in CONFIG")
			}
			if err := wire.CompareChecksums(want, <-sums); err != nil {
				return nil, fmt.Errorf("migration: verify failed, guest RAM differs from the source: %w", err)
			}
			if err := c.WriteFrame(wire.TypeAck, 0, h.Iteration, nil); err != nil {
				return nil, err
			}
		case wire.TypeRX:
			if !in.lateRX || !restored {
				return nil, errors.New("migration: RX before STATE, or not granted")
			}
			pk, err := wire.DecodeRX(p)
			if err != nil {
				return nil, err
			}
			if err := in.vm.QueueRX(pk); err != nil {
				return nil, err
			}
		case wire.TypeCommit:
			if !restored {
				return nil, errors.New("migration: COMMIT before STATE")
			}
			return in.commit()
		case wire.TypeAbort:
			why, _ := wire.DecodeReason(h.Type, p)
			return nil, fmt.Errorf("migration: source aborted: %s", why)
		default:
			return nil, fmt.Errorf("migration: unexpected %v on the control connection", h.Type)
		}
	}
}

// waitRound waits until every data stream has delivered DATA_END(iter).
func (in *incoming) waitRound(iter uint32) error {
	timeout := time.NewTimer(in.d.AcceptTimeout)
	defer timeout.Stop()
	for i, ch := range in.ends {
		select {
		case got := <-ch:
			if got != iter {
				return fmt.Errorf("migration: stream %d ended round %d during round %d", i, got, iter)
			}
		case err := <-in.errs:
			return err
		case <-timeout.C:
			return fmt.Errorf("migration: stream %d did not finish round %d", i, iter)
		}
	}
	return nil
}

// commit starts the VM and confirms. From here on this side owns the VM.
func (in *incoming) commit() (*vm.VM, error) {
	v := in.vm
	if gate := in.d.CommitGate; gate != nil {
		ctx, cancel := context.WithTimeout(context.Background(), in.d.AcceptTimeout)
		err := gate(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("migration: not taking the VM: %w", err)
		}
	}
	// The second fence: the disk image lock, released by the paused
	// source after its last disk sync.
	if err := v.LockDisks(); err != nil {
		return nil, fmt.Errorf("migration: not taking the VM: %w", err)
	}
	in.d.mu.Lock()
	in.d.sessions[in.hello.Session] = wire.Committed
	in.d.mu.Unlock()
	// Tell the network before anything else, even before the vCPUs
	// run and take the host's CPUs: every millisecond the switches
	// point at the old port is lost traffic. What arrives meanwhile
	// waits in the TAP for the guest.
	v.Announce(in.d.Announce)
	if err := v.Start(); err != nil {
		// The state is loaded but the vCPUs will not run: nothing ran
		// twice, but the VM is lost here; say so loudly.
		return nil, fmt.Errorf("migration: start the VM after COMMIT: %w", err)
	}
	if err := in.ctrl.WriteFrame(wire.TypeCommitted, 0, 0, nil); err != nil {
		in.d.log.Warn("COMMITTED not delivered; the source will ask", "err", err)
	}
	in.d.log.Info("incoming migration committed; vm running")
	return v, nil
}

// ramSink is the destination guest RAM as wire.PageSink.
type ramSink struct{ mem *memory.Guest }

func (s *ramSink) PageSlice(gpa uint64, npages uint32) ([]byte, error) {
	return s.mem.Incoming(gpa, uint64(npages)*memory.PageSize)
}

func (s *ramSink) ZeroPages(gpa uint64, npages uint32) error {
	b, err := s.mem.Incoming(gpa, uint64(npages)*memory.PageSize)
	if err != nil {
		return err
	}
	// Fresh RAM already reads as zero; reading does not allocate it,
	// writing would.
	for off := 0; off < len(b); off += memory.PageSize {
		if p := b[off : off+memory.PageSize]; !bytes.Equal(p, zeroPage[:]) {
			clear(p)
		}
	}
	return nil
}
