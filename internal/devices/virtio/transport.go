package virtio

import (
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/godwit-vmm/godwit/internal/devices"
	"github.com/godwit-vmm/godwit/internal/devices/pci"
	"github.com/godwit-vmm/godwit/internal/memory"
)

// Handler is one virtio device type behind a Transport.
type Handler interface {
	// DeviceType returns the virtio device type (TypeNet, TypeBlock, ...).
	DeviceType() uint16
	// Features returns the device-type feature bits the device offers.
	Features() uint32
	// NumQueues returns how many queues the device has.
	NumQueues() int
	// ConfigSize returns the size of the device configuration space.
	ConfigSize() int
	// ReadConfig and WriteConfig access the device configuration space
	// at off; the transport keeps accesses inside [0, ConfigSize()).
	// They run on vCPU threads.
	ReadConfig(off int, data []byte)
	WriteConfig(off int, data []byte)
	// Process consumes the available chains of queue q (Pop until nil)
	// and returns them with Push. It runs on the worker goroutine with
	// the queues locked; an error wrapping ErrQueueBroken stops the queue.
	Process(q *Queue) error
	// Reset returns the device-type state to power-on values after the
	// driver reset the device; the worker is idle and the queues locked.
	Reset()
}

// Transport is a legacy virtio-pci function: the PCI configuration space,
// the BAR0 registers, the queues, the ISR and the worker goroutine that
// runs the Handler. It implements pci.Device.
type Transport struct {
	mem  *memory.Guest
	h    Handler
	irq  devices.Interrupt
	log  *slog.Logger
	cfg  *pci.ConfigSpace
	name string

	isr atomic.Uint32 // ISR bits, cleared by a guest read

	// qmu is held while queues are used or changed: by the worker for a
	// processing pass, by register accesses to a queue, by reset, Save and
	// Restore. It guards queues (their contents) and restored. Order: qmu
	// before mu.
	qmu      sync.Mutex
	queues   []*Queue
	restored bool // Restore ran; Resume raises an interrupt

	// mu guards the register state below.
	mu             sync.Mutex
	status         uint8
	driverFeatures uint32
	queueSelect    uint16
	brokenLogged   bool

	w worker
}

// NewTransport returns the transport for h, raising irq. It starts the
// worker goroutine, which idles until the driver sets DRIVER_OK; Close
// stops it. log may be nil.
func NewTransport(mem *memory.Guest, h Handler, irq devices.Interrupt, log *slog.Logger) *Transport {
	if irq == nil {
		irq = devices.NoInterrupt
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	typ := h.DeviceType()
	class := uint32(0xFF0000)
	name := fmt.Sprintf("virtio-%d", typ)
	switch typ {
	case TypeNet:
		class, name = 0x020000, "virtio-net"
	case TypeBlock:
		class, name = 0x010000, "virtio-blk"
	}
	t := &Transport{mem: mem, h: h, irq: irq, log: log.With("device", name), name: name}
	t.cfg = pci.NewConfigSpace(pci.Header{
		VendorID:          PCIVendor,
		DeviceID:          pciLegacyDeviceID0 + typ - 1,
		Revision:          0,
		Class:             class,
		SubsystemVendorID: PCIVendor,
		SubsystemID:       typ,
		InterruptPin:      1,
	})
	size := uint32(regConfig + h.ConfigSize())
	size = max(32, uint32(1)<<bits.Len32(size-1))
	if err := t.cfg.AddBAR(0, pci.BARIO, size); err != nil {
		panic(fmt.Sprintf("virtio: BAR0 of %d bytes: %v", size, err)) // a programming error
	}
	for i := 0; i < h.NumQueues(); i++ {
		t.queues = append(t.queues, newQueue(mem, i))
	}
	t.w.start(t)
	return t
}

// Config implements pci.Device.
func (t *Transport) Config() *pci.ConfigSpace { return t.cfg }

// Guest returns the guest memory the device works on.
func (t *Transport) Guest() *memory.Guest { return t.mem }

// Logger returns the device's logger.
func (t *Transport) Logger() *slog.Logger { return t.log }

// DeviceFeatures returns the feature bits the device offers.
func (t *Transport) DeviceFeatures() uint32 { return t.h.Features() | transportFeatureFlags }

// DriverFeatures returns the feature bits the driver accepted.
func (t *Transport) DriverFeatures() uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.driverFeatures
}

// Status returns the device status register.
func (t *Transport) Status() uint8 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status
}

// DriverOK reports whether the driver has set DRIVER_OK.
func (t *Transport) DriverOK() bool { return t.Status()&StatusDriverOK != 0 }

// BARRead implements pci.Device.
func (t *Transport) BARRead(bar int, off uint64, data []byte) {
	for i := range data {
		data[i] = 0xFF
	}
	if bar != 0 {
		return
	}
	if off >= regConfig {
		t.configAccess(off-regConfig, data, false)
		return
	}
	var v uint64
	switch off {
	case regDeviceFeatures:
		v = uint64(t.DeviceFeatures())
	case regDriverFeatures:
		v = uint64(t.DriverFeatures())
	case regQueuePFN:
		t.qmu.Lock()
		if q := t.selected(); q != nil {
			v = uint64(q.pfn)
		} else {
			v = 0
		}
		t.qmu.Unlock()
	case regQueueSize:
		t.qmu.Lock()
		if q := t.selected(); q != nil {
			v = uint64(q.size)
		} else {
			v = 0
		}
		t.qmu.Unlock()
	case regQueueSelect:
		t.mu.Lock()
		v = uint64(t.queueSelect)
		t.mu.Unlock()
	case regQueueNotify:
		v = 0
	case regStatus:
		v = uint64(t.Status())
	case regISR:
		v = uint64(t.isr.Swap(0))
	default:
		return // a read straddling registers: all-ones
	}
	devices.StoreLE(data, v)
}

// BARWrite implements pci.Device.
func (t *Transport) BARWrite(bar int, off uint64, data []byte) {
	if bar != 0 {
		return
	}
	if off >= regConfig {
		t.configAccess(off-regConfig, data, true)
		return
	}
	v := devices.LoadLE(data)
	switch off {
	case regDriverFeatures:
		t.mu.Lock()
		t.driverFeatures = uint32(v) & t.DeviceFeatures()
		t.mu.Unlock()
	case regQueuePFN:
		t.qmu.Lock()
		if q := t.selected(); q != nil {
			q.setPFN(uint32(v))
			q.indirect = t.DriverFeatures()&(1<<FeatureRingIndirect) != 0
			if err := q.broken; err != nil {
				t.log.Warn("queue address rejected", "queue", q.index, "err", err)
			}
		}
		t.qmu.Unlock()
	case regQueueSelect:
		t.mu.Lock()
		t.queueSelect = uint16(v)
		t.mu.Unlock()
	case regQueueNotify:
		if int(v) < len(t.queues) {
			t.Kick(int(v))
		}
	case regStatus:
		t.setStatus(uint8(v))
	}
}

// selected returns the queue chosen by queue select, or nil; t.qmu is held.
func (t *Transport) selected() *Queue {
	t.mu.Lock()
	sel := int(t.queueSelect)
	t.mu.Unlock()
	if sel < len(t.queues) {
		return t.queues[sel]
	}
	return nil
}

func (t *Transport) configAccess(off uint64, data []byte, write bool) {
	size := uint64(t.h.ConfigSize())
	if off >= size || uint64(len(data)) > size-off {
		return // reads stay all-ones
	}
	if write {
		t.h.WriteConfig(int(off), data)
	} else {
		t.h.ReadConfig(int(off), data)
	}
}

// setStatus handles a driver write of the status register.
func (t *Transport) setStatus(v uint8) {
	if v == 0 {
		t.reset()
		return
	}
	t.mu.Lock()
	old := t.status
	t.status = v | old&StatusNeedsReset
	features := t.driverFeatures
	t.mu.Unlock()
	if v&StatusDriverOK != 0 && old&StatusDriverOK == 0 {
		t.qmu.Lock()
		for _, q := range t.queues {
			q.indirect = features&(1<<FeatureRingIndirect) != 0
		}
		t.qmu.Unlock()
		t.w.setActive(true, len(t.queues))
	}
	if v&StatusFailed != 0 {
		t.w.setActive(false, 0)
	}
}

// reset stops the worker and returns the device to power-on state. It runs
// on the vCPU thread and waits for an in-flight processing pass.
func (t *Transport) reset() {
	t.w.setActive(false, 0)
	t.qmu.Lock()
	defer t.qmu.Unlock()
	for _, q := range t.queues {
		q.reset()
	}
	t.h.Reset()
	t.mu.Lock()
	t.status = 0
	t.driverFeatures = 0
	t.queueSelect = 0
	t.brokenLogged = false
	t.mu.Unlock()
	t.isr.Store(0)
}

// Kick asks the worker to process queue i. It never blocks for long: vCPU
// threads call it for queue notifications, device goroutines when they
// have new work (a received packet).
func (t *Transport) Kick(i int) { t.w.kick(i) }

// Interrupt raises the used-buffer interrupt.
func (t *Transport) Interrupt() {
	t.isr.Or(ISRQueue)
	if err := t.irq.Trigger(); err != nil {
		t.log.Warn("interrupt", "err", err)
	}
}

// ConfigChanged raises the configuration-change interrupt.
func (t *Transport) ConfigChanged() {
	t.isr.Or(ISRConfig)
	if err := t.irq.Trigger(); err != nil {
		t.log.Warn("interrupt", "err", err)
	}
}

// process runs one pass over the queues in mask; called by the worker.
// It returns the queues that still have work left.
func (t *Transport) process(mask uint32) uint32 {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	var more uint32
	irq := false
	for i, q := range t.queues {
		if mask&(1<<i) == 0 || !q.Ready() || q.broken != nil {
			continue
		}
		q.beginPass()
		err := t.h.Process(q)
		if q.more {
			more |= 1 << i
		}
		if q.takeInterrupt() {
			irq = true
		}
		if err != nil && errors.Is(err, ErrQueueBroken) {
			t.markBroken(q, err)
		} else if err != nil {
			t.log.Warn("process queue", "queue", i, "err", err)
		}
	}
	if irq {
		t.Interrupt()
	}
	return more
}

// markBroken records that q is unusable: the device needs a reset.
func (t *Transport) markBroken(q *Queue, err error) {
	if q.broken == nil {
		q.broken = err
	}
	t.mu.Lock()
	t.status |= StatusNeedsReset
	logged := t.brokenLogged
	t.brokenLogged = true
	t.mu.Unlock()
	if !logged {
		t.log.Error("queue broken; the device needs a reset by the guest driver", "queue", q.index, "err", err)
	}
}

// Pause finishes the processing pass in flight and stops taking new work;
// it returns when the device no longer touches guest memory. Kicks that
// arrive while paused are remembered.
func (t *Transport) Pause() { t.w.pause() }

// Resume undoes Pause (or starts a restored device): every queue is
// processed once, in case a kick was lost, and after a Restore the
// used-buffer interrupt is raised, because the driver may be waiting for
// one that was lost in migration.
func (t *Transport) Resume() {
	t.qmu.Lock()
	restored := t.restored
	t.restored = false
	t.qmu.Unlock()
	t.w.resume(len(t.queues))
	if restored && t.DriverOK() {
		t.Interrupt()
	}
}

// WaitIdle waits until the worker has handled every kick so far (or is
// paused or inactive).
func (t *Transport) WaitIdle() { t.w.waitIdle() }

// Close stops the worker. The transport must not be used afterwards.
func (t *Transport) Close() { t.w.stop() }
