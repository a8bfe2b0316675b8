package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/godwit-vmm/godwit/internal/memory"
)

// QueueSize is the size of every queue (fixed: the legacy interface does
// not let the driver choose).
const QueueSize = 256

// legacyAlign is the alignment of the used ring in the legacy layout.
const legacyAlign = 4096

// Ring flag bits.
const (
	descFNext     = 1
	descFWrite    = 2
	descFIndirect = 4

	availFNoInterrupt = 1
)

const descSize = 16

// ErrQueueBroken is returned once a queue's rings are unusable (an index
// out of range, a ring outside RAM). The queue stays broken until the
// driver resets the device.
var ErrQueueBroken = errors.New("virtio: queue broken, device needs reset")

// Queue is one split virtqueue in the legacy layout. It is used by one
// goroutine at a time: the transport's worker, or a register access made
// while the transport holds its queue lock.
type Queue struct {
	mem   *memory.Guest
	index int
	size  uint16

	pfn                 uint32
	desc, avail, used   uint64 // ring addresses, valid when pfn != 0
	nextAvail, nextUsed uint16
	indirect            bool  // VIRTIO_RING_F_INDIRECT_DESC negotiated
	broken              error // why the queue is unusable, or nil
	pushed              bool  // used entries added since the last interrupt check
	budget              int   // chains Pop may still return in this pass
	more                bool  // Pop stopped because the budget ran out
}

func newQueue(mem *memory.Guest, index int) *Queue {
	return &Queue{mem: mem, index: index, size: QueueSize}
}

// Index returns the queue's number in its device.
func (q *Queue) Index() int { return q.index }

// Ready reports whether the driver has given the queue an address.
func (q *Queue) Ready() bool { return q.pfn != 0 }

// Broken returns why the queue is unusable, or nil.
func (q *Queue) Broken() error { return q.broken }

// reset forgets the queue's address and indices.
func (q *Queue) reset() {
	*q = Queue{mem: q.mem, index: q.index, size: q.size}
}

// ringBytes returns the size of the whole legacy ring area for size n.
func ringBytes(n uint64) uint64 {
	availEnd := n*descSize + 6 + 2*n
	usedStart := (availEnd + legacyAlign - 1) &^ (legacyAlign - 1)
	return usedStart + 6 + 8*n
}

// setPFN places the queue at pfn<<12 (0 disables it) and resets its indices.
func (q *Queue) setPFN(pfn uint32) {
	q.reset()
	q.pfn = pfn
	if pfn == 0 {
		return
	}
	n := uint64(q.size)
	q.desc = uint64(pfn) << 12
	q.avail = q.desc + n*descSize
	q.used = (q.avail + 6 + 2*n + legacyAlign - 1) &^ (legacyAlign - 1)
	if _, err := q.mem.Slice(q.desc, ringBytes(n)); err != nil {
		q.broken = fmt.Errorf("%w: queue %d at %#x: %v", ErrQueueBroken, q.index, q.desc, err)
	}
}

func (q *Queue) fail(format string, args ...any) error {
	q.broken = fmt.Errorf("%w: queue %d: %s", ErrQueueBroken, q.index, fmt.Sprintf(format, args...))
	return q.broken
}

// beginPass allows Pop to return up to one queue's worth of chains, so a
// driver that keeps adding buffers cannot hold the worker forever.
func (q *Queue) beginPass() {
	q.budget = int(q.size)
	q.more = false
}

// Pop takes the next available descriptor chain.
//
// It returns (nil, nil) when no chain is available. A chain whose
// descriptors are invalid comes back with an error: the device must still
// complete it (Push, with a failure status where it can write one) and may
// go on with the next. An error with a nil chain wraps ErrQueueBroken: stop
// using the queue.
func (q *Queue) Pop() (*Chain, error) {
	if q.broken != nil {
		return nil, q.broken
	}
	if q.pfn == 0 {
		return nil, nil
	}
	idx, err := q.mem.LoadUint16(q.avail + 2)
	if err != nil {
		return nil, q.fail("read avail idx: %v", err)
	}
	pending := idx - q.nextAvail
	if pending == 0 {
		return nil, nil
	}
	if pending > q.size {
		return nil, q.fail("avail idx %d is %d ahead of the device's %d (queue size %d)", idx, pending, q.nextAvail, q.size)
	}
	if q.budget <= 0 {
		q.more = true
		return nil, nil
	}
	q.budget--
	// The ring entry is read after idx (an atomic load: nothing is
	// reordered before it), so it is the one the driver published.
	head, err := q.mem.LoadUint16(q.avail + 4 + 2*uint64(q.nextAvail%q.size))
	if err != nil {
		return nil, q.fail("read avail ring: %v", err)
	}
	if head >= q.size {
		return nil, q.fail("avail ring entry %d names descriptor %d", q.nextAvail, head)
	}
	q.nextAvail++
	c := &Chain{mem: q.mem, Head: head}
	if err := q.walk(c); err != nil {
		return c, fmt.Errorf("virtio: queue %d chain at descriptor %d: %w", q.index, head, err)
	}
	return c, nil
}

// Unpop gives back the chain Pop returned last, which the device could not
// use (a packet too big for it): the next Pop returns it again.
func (q *Queue) Unpop() {
	q.nextAvail--
}

type desc struct {
	addr  uint64
	len   uint32
	flags uint16
	next  uint16
}

func (q *Queue) readDesc(table uint64, i uint16) (desc, error) {
	var b [descSize]byte
	if err := q.mem.ReadAt(b[:], table+uint64(i)*descSize); err != nil {
		return desc{}, err
	}
	le := binary.LittleEndian
	return desc{le.Uint64(b[0:]), le.Uint32(b[8:]), le.Uint16(b[12:]), le.Uint16(b[14:])}, nil
}

// walk collects c's buffers, checking every address, index and length.
func (q *Queue) walk(c *Chain) error {
	table, tableLen := q.desc, q.size
	i := c.Head
	d, err := q.readDesc(table, i)
	if err != nil {
		return q.fail("read descriptor %d: %v", i, err) // the table itself is gone
	}
	if d.flags&descFIndirect != 0 {
		switch {
		case !q.indirect:
			return errors.New("indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC")
		case d.flags&descFNext != 0:
			return errors.New("indirect descriptor with NEXT set")
		case d.len == 0 || d.len%descSize != 0 || d.len/descSize > MaxIndirect:
			return fmt.Errorf("indirect table of %d bytes (want a multiple of %d, at most %d entries)", d.len, descSize, MaxIndirect)
		}
		if _, err := q.mem.Slice(d.addr, uint64(d.len)); err != nil {
			return fmt.Errorf("indirect table: %w", err)
		}
		table, tableLen, i = d.addr, uint16(d.len/descSize), 0
		if d, err = q.readDesc(table, 0); err != nil {
			return fmt.Errorf("indirect table: %w", err)
		}
	}
	// A chain longer than its table has a loop.
	for n := uint16(1); ; n++ {
		if d.flags&descFIndirect != 0 {
			return fmt.Errorf("nested or chained indirect descriptor at %d", i)
		}
		if err := c.add(d); err != nil {
			return fmt.Errorf("descriptor %d: %w", i, err)
		}
		if d.flags&descFNext == 0 {
			return nil
		}
		if n >= tableLen {
			return fmt.Errorf("chain longer than its table of %d descriptors (loop)", tableLen)
		}
		if d.next >= tableLen {
			return fmt.Errorf("descriptor %d: next %d outside table of %d", i, d.next, tableLen)
		}
		i = d.next
		if d, err = q.readDesc(table, i); err != nil {
			return fmt.Errorf("descriptor %d: %w", i, err)
		}
	}
}

// Push returns chain head to the driver with n bytes written into its
// writable buffers, and publishes it by storing the used idx.
func (q *Queue) Push(head uint16, n uint32) error {
	if q.broken != nil {
		return q.broken
	}
	if q.pfn == 0 {
		return nil
	}
	var e [8]byte
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], n)
	if err := q.mem.WriteAt(e[:], q.used+4+8*uint64(q.nextUsed%q.size)); err != nil {
		return q.fail("write used ring: %v", err)
	}
	q.nextUsed++
	// An atomic store: the element above is visible before the new idx.
	if err := q.mem.StoreUint16(q.used+2, q.nextUsed); err != nil {
		return q.fail("write used idx: %v", err)
	}
	q.pushed = true
	return nil
}

// takeInterrupt reports whether used entries were added since the last
// call and the driver wants an interrupt for them.
func (q *Queue) takeInterrupt() bool {
	if !q.pushed || q.pfn == 0 {
		return false
	}
	q.pushed = false
	// The used idx store before this was a locked (full-barrier)
	// operation, so the driver either sees the new idx or we see its
	// NO_INTERRUPT flag cleared.
	flags, err := q.mem.LoadUint16(q.avail)
	if err != nil {
		return true
	}
	return flags&availFNoInterrupt == 0
}
