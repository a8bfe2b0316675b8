// Package net is a virtio-net device (legacy virtio-pci) on a packet
// backend, normally a TAP device opened with OpenTAP.
//
// Queues: 0 receive, 1 transmit, 2 control. Every packet crosses the
// backend as a 10-byte legacy virtio-net header followed by the Ethernet
// frame, the format of a TAP with IFF_VNET_HDR, so headers pass through
// unchanged. Features offered: MAC, STATUS (link always up), CTRL_VQ and
// GUEST_ANNOUNCE; no offloads and no mergeable receive buffers.
//
// Who may import: the vm layer (to create the device and put it on the PCI
// bus) and migration (Pause, Save, Restore, Resume, Announce, GuestIPv4).
// Importers that also use the standard library's net should rename it.
package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godwit-vmm/godwit/internal/devices"
	"github.com/godwit-vmm/godwit/internal/devices/pci"
	"github.com/godwit-vmm/godwit/internal/devices/virtio"
	"github.com/godwit-vmm/godwit/internal/memory"
)

// Feature bits.
const (
	FeatureMAC           = 5
	FeatureStatus        = 16
	FeatureCtrlVQ        = 17
	FeatureGuestAnnounce = 21
)

// Status bits in the configuration space.
const (
	StatusLinkUp   = 1
	StatusAnnounce = 2
)

// Control queue classes, commands and acks.
const (
	ctrlClassRX       = 0
	ctrlClassAnnounce = 3
	ctrlAnnounceAck   = 0
	ctrlOK            = 0
	ctrlErr           = 1
)

// HeaderSize is the legacy virtio-net header without MRG_RXBUF.
const HeaderSize = 10

// MaxPacket bounds a packet (header and frame) in either direction.
const MaxPacket = HeaderSize + 65535 + 14 + 4

// rxQueueLen is how many received packets wait for guest buffers before
// further ones are dropped.
const rxQueueLen = 256

const (
	queueRX   = 0
	queueTX   = 1
	queueCtrl = 2
)

// Backend carries packets between the device and the host.
type Backend interface {
	// ReadPacket reads one packet (header and frame) into p and blocks
	// until one arrives. After Close it returns an error.
	ReadPacket(p []byte) (int, error)
	// WritePacket sends one packet (header and frame).
	WritePacket(p []byte) error
	// Close releases the backend and unblocks ReadPacket.
	Close() error
}

// Stats counts the device's traffic.
type Stats struct {
	RXPackets, RXBytes, RXDropped uint64 // guest-bound
	TXPackets, TXBytes, TXDropped uint64 // host-bound
	TXErrors                      uint64 // backend write failures
	BadChains                     uint64 // malformed descriptor chains completed empty
}

// Device is a virtio-net device. It implements pci.Device.
type Device struct {
	t       *virtio.Transport
	backend Backend
	log     *slog.Logger
	mac     [6]byte

	rxq  chan []byte // packets read from the backend, for the worker
	held []byte      // packet waiting for a guest buffer (worker only)
	// backlog holds packets delivered before rxq's, oldest first: those
	// PendingRX set aside while paused, or a migration source's
	// (Restore). Worker only, or while paused.
	backlog    [][]byte
	readerDone chan struct{}
	closing    atomic.Bool

	// mu guards status and guestIP.
	mu      sync.Mutex
	status  uint16
	guestIP netip.Addr // sender address of the guest's last ARP frame

	rxPackets, rxBytes, rxDropped atomic.Uint64
	txPackets, txBytes, txDropped atomic.Uint64
	txErrors, badChains           atomic.Uint64
}

// New returns a virtio-net device with the given MAC on backend, raising
// irq. It starts reading from the backend at once (packets wait, or are
// dropped, until the guest driver gives buffers). log may be nil.
func New(mem *memory.Guest, backend Backend, mac [6]byte, irq devices.Interrupt, log *slog.Logger) *Device {
	d := &Device{
		backend:    backend,
		mac:        mac,
		status:     StatusLinkUp,
		rxq:        make(chan []byte, rxQueueLen),
		readerDone: make(chan struct{}),
	}
	d.t = virtio.NewTransport(mem, d, irq, log)
	d.log = d.t.Logger()
	go d.readLoop()
	return d
}

// Transport returns the device's virtio transport.
func (d *Device) Transport() *virtio.Transport { return d.t }

// Config implements pci.Device.
func (d *Device) Config() *pci.ConfigSpace { return d.t.Config() }

// BARRead implements pci.Device.
func (d *Device) BARRead(bar int, off uint64, data []byte) { d.t.BARRead(bar, off, data) }

// BARWrite implements pci.Device.
func (d *Device) BARWrite(bar int, off uint64, data []byte) { d.t.BARWrite(bar, off, data) }

// MAC returns the device's MAC address.
func (d *Device) MAC() [6]byte { return d.mac }

// DeviceType implements virtio.Handler.
func (d *Device) DeviceType() uint16 { return virtio.TypeNet }

// Features implements virtio.Handler.
func (d *Device) Features() uint32 {
	return 1<<FeatureMAC | 1<<FeatureStatus | 1<<FeatureCtrlVQ | 1<<FeatureGuestAnnounce
}

// NumQueues implements virtio.Handler.
func (d *Device) NumQueues() int { return 3 }

// ConfigSize implements virtio.Handler: mac[6], status u16.
func (d *Device) ConfigSize() int { return 8 }

// ReadConfig implements virtio.Handler.
func (d *Device) ReadConfig(off int, data []byte) {
	var cfg [8]byte
	copy(cfg[:6], d.mac[:])
	d.mu.Lock()
	binary.LittleEndian.PutUint16(cfg[6:], d.status)
	d.mu.Unlock()
	copy(data, cfg[off:])
}

// WriteConfig implements virtio.Handler. The legacy interface lets a
// driver write the MAC; this device keeps its own and ignores writes.
func (d *Device) WriteConfig(off int, data []byte) {}

// Reset implements virtio.Handler.
func (d *Device) Reset() {
	d.mu.Lock()
	d.status = StatusLinkUp
	d.mu.Unlock()
}

// Process implements virtio.Handler.
func (d *Device) Process(q *virtio.Queue) error {
	switch q.Index() {
	case queueRX:
		return d.processRX(q)
	case queueTX:
		return d.processTX(q)
	case queueCtrl:
		return d.processCtrl(q)
	}
	return nil
}

// readLoop moves packets from the backend to rxq until Close.
func (d *Device) readLoop() {
	defer close(d.readerDone)
	buf := make([]byte, MaxPacket)
	for {
		n, err := d.backend.ReadPacket(buf)
		if err != nil {
			if d.closing.Load() || errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
				return
			}
			d.log.Warn("read from backend", "err", err)
			time.Sleep(10 * time.Millisecond) // a TAP whose link is down, say
			continue
		}
		if n < HeaderSize {
			d.rxDropped.Add(1)
			continue
		}
		select {
		case d.rxq <- append([]byte(nil), buf[:n]...):
			d.t.Kick(queueRX)
		default:
			d.rxDropped.Add(1)
		}
	}
}

// processRX copies waiting packets into the guest's receive buffers. With
// no buffer left it keeps the packet; the guest's next kick on the queue,
// after it refills, brings the worker back.
func (d *Device) processRX(q *virtio.Queue) error {
	for {
		if d.held == nil && len(d.backlog) > 0 {
			d.held, d.backlog = d.backlog[0], d.backlog[1:]
		}
		if d.held == nil {
			select {
			case d.held = <-d.rxq:
			default:
				return nil
			}
		}
		c, err := q.Pop()
		if c == nil {
			return err
		}
		if err != nil {
			d.badChains.Add(1)
			d.log.Debug("bad receive chain", "err", err)
			if err := q.Push(c.Head, 0); err != nil {
				return err
			}
			continue
		}
		pkt := d.held
		if uint64(len(pkt)) > c.WriteLen {
			// Without mergeable buffers a packet must fit one chain.
			d.held = nil
			d.rxDropped.Add(1)
			q.Unpop()
			continue
		}
		n, err := c.WriteAt(pkt, 0)
		if err != nil {
			return err
		}
		d.held = nil
		if err := q.Push(c.Head, uint32(n)); err != nil {
			return err
		}
		d.rxPackets.Add(1)
		d.rxBytes.Add(uint64(len(pkt) - HeaderSize))
	}
}

// processTX sends each chain (header and frame) to the backend.
func (d *Device) processTX(q *virtio.Queue) error {
	var buf []byte
	for {
		c, err := q.Pop()
		if c == nil {
			return err
		}
		if err != nil {
			d.badChains.Add(1)
			d.txDropped.Add(1)
			d.log.Debug("bad transmit chain", "err", err)
		} else if c.ReadLen < HeaderSize || c.ReadLen > MaxPacket {
			d.txDropped.Add(1)
		} else {
			if cap(buf) < int(c.ReadLen) {
				buf = make([]byte, MaxPacket)
			}
			pkt := buf[:c.ReadLen]
			if _, err := c.ReadAt(pkt, 0); err != nil {
				d.txDropped.Add(1)
			} else if err := d.backend.WritePacket(pkt); err != nil {
				d.txErrors.Add(1)
				d.log.Debug("write to backend", "err", err)
			} else {
				d.txPackets.Add(1)
				d.txBytes.Add(uint64(len(pkt) - HeaderSize))
				d.learnIPv4(pkt[HeaderSize:])
			}
		}
		if err := q.Push(c.Head, 0); err != nil {
			return err
		}
	}
}

// processCtrl answers control commands: RX mode OK, announce ack OK and
// clears the announce bit, anything else ERR.
func (d *Device) processCtrl(q *virtio.Queue) error {
	for {
		c, err := q.Pop()
		if c == nil {
			return err
		}
		var written uint32
		if err != nil {
			d.badChains.Add(1)
		} else if c.WriteLen >= 1 {
			ack := byte(ctrlErr)
			var hdr [2]byte
			if n, _ := c.ReadAt(hdr[:], 0); n == 2 {
				switch {
				case hdr[0] == ctrlClassRX:
					ack = ctrlOK
				case hdr[0] == ctrlClassAnnounce && hdr[1] == ctrlAnnounceAck:
					d.mu.Lock()
					d.status &^= StatusAnnounce
					d.mu.Unlock()
					ack = ctrlOK
				}
			}
			if _, err := c.WriteAt([]byte{ack}, c.WriteLen-1); err != nil {
				return err
			}
			written = 1
		}
		if err := q.Push(c.Head, written); err != nil {
			return err
		}
	}
}

// learnIPv4 records the sender address of an ARP frame from the guest.
func (d *Device) learnIPv4(frame []byte) {
	const eth = 14
	if len(frame) < eth+28 || binary.BigEndian.Uint16(frame[12:]) != 0x0806 {
		return
	}
	arp := frame[eth:]
	if binary.BigEndian.Uint16(arp[0:]) != 1 || binary.BigEndian.Uint16(arp[2:]) != 0x0800 || arp[4] != 6 || arp[5] != 4 {
		return
	}
	ip := netip.AddrFrom4([4]byte(arp[14:18]))
	if ip.IsUnspecified() {
		return // an ARP probe
	}
	d.mu.Lock()
	d.guestIP = ip
	d.mu.Unlock()
}

// GuestIPv4 returns the IPv4 address the guest last announced as ARP
// sender, if any.
func (d *Device) GuestIPv4() (netip.Addr, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.guestIP, d.guestIP.IsValid()
}

// Announce asks the guest to announce itself (gratuitous ARP and the like)
// by setting VIRTIO_NET_S_ANNOUNCE and raising a configuration interrupt.
// It reports false, doing nothing, when the driver is not running or did
// not accept GUEST_ANNOUNCE; then the VMM must announce on its behalf.
func (d *Device) Announce() bool {
	const need = 1<<FeatureGuestAnnounce | 1<<FeatureCtrlVQ
	if !d.t.DriverOK() || d.t.DriverFeatures()&need != need {
		return false
	}
	d.mu.Lock()
	d.status |= StatusAnnounce
	d.mu.Unlock()
	d.t.ConfigChanged()
	return true
}

// Stats returns the traffic counters.
func (d *Device) Stats() Stats {
	return Stats{
		RXPackets: d.rxPackets.Load(), RXBytes: d.rxBytes.Load(), RXDropped: d.rxDropped.Load(),
		TXPackets: d.txPackets.Load(), TXBytes: d.txBytes.Load(), TXDropped: d.txDropped.Load(),
		TXErrors: d.txErrors.Load(), BadChains: d.badChains.Load(),
	}
}

// Pause finishes the work in flight and stops touching guest memory and
// sending packets; received packets keep queueing (or dropping) host-side.
func (d *Device) Pause() { d.t.Pause() }

// Resume undoes Pause, or starts a restored device.
func (d *Device) Resume() { d.t.Resume() }

// WaitIdle waits until the device has processed every kick so far.
func (d *Device) WaitIdle() { d.t.WaitIdle() }

// Close stops the device and closes the backend (a TAP disappears; nothing
// on disk is touched).
func (d *Device) Close() error {
	d.closing.Store(true)
	d.t.Close()
	err := d.backend.Close()
	<-d.readerDone
	if err != nil {
		return fmt.Errorf("virtio-net: close backend: %w", err)
	}
	return nil
}
