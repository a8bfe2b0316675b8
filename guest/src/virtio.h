/*
 * virtio.h - legacy (0.9.5) virtio-pci transport and split virtqueues.
 */
#ifndef GUEST_VIRTIO_H
#define GUEST_VIRTIO_H

#include "arch.h"
#include "pci.h"

/* legacy virtio-pci I/O registers (BAR0), no MSI-X */
#define VIRTIO_PCI_HOST_FEATURES	0x00	/* u32 */
#define VIRTIO_PCI_GUEST_FEATURES	0x04	/* u32 */
#define VIRTIO_PCI_QUEUE_PFN		0x08	/* u32 */
#define VIRTIO_PCI_QUEUE_NUM		0x0C	/* u16 */
#define VIRTIO_PCI_QUEUE_SEL		0x0E	/* u16 */
#define VIRTIO_PCI_QUEUE_NOTIFY		0x10	/* u16 */
#define VIRTIO_PCI_STATUS		0x12	/* u8 */
#define VIRTIO_PCI_ISR			0x13	/* u8, read acks */
#define VIRTIO_PCI_CONFIG		0x14	/* device-specific config */

#define VIRTIO_STATUS_ACK		1
#define VIRTIO_STATUS_DRIVER		2
#define VIRTIO_STATUS_DRIVER_OK		4
#define VIRTIO_STATUS_FAILED		128

#define VIRTIO_ISR_QUEUE		1
#define VIRTIO_ISR_CONFIG		2

#define VRING_DESC_F_NEXT		1
#define VRING_DESC_F_WRITE		2

struct vring_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

struct vring_avail {
	u16 flags;
	u16 idx;
	u16 ring[];
};

struct vring_used_elem {
	u32 id;
	u32 len;
};

struct vring_used {
	u16 flags;
	u16 idx;
	struct vring_used_elem ring[];
};

struct virtq {
	u16 io;			/* device I/O base */
	u16 index;		/* queue number */
	u16 size;		/* entries, set by the device */
	u16 num_free;
	u16 free_head;
	u16 last_used;		/* next used entry to consume */
	u16 avail_idx;		/* shadow of avail->idx */
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
};

struct virtio_dev {
	struct pci_dev pci;
	u16 io;
	u8 irq;			/* IOAPIC pin (PCI InterruptLine), 0xFF: none */
	u32 host_features;
	u32 features;		/* negotiated */
};

/* One buffer of a descriptor chain. */
struct vbuf {
	void *addr;
	u32 len;
	bool device_writes;
};

/* Reset the device, acknowledge it, and negotiate (host & wanted). */
bool virtio_init(struct virtio_dev *vd, const struct pci_dev *pci, u32 wanted);
/* Set up queue number index (memory from the DMA pool). */
bool virtq_init(struct virtio_dev *vd, struct virtq *q, u16 index);
void virtio_driver_ok(struct virtio_dev *vd);
u8 virtio_read_isr(struct virtio_dev *vd);

u8 virtio_cfg8(struct virtio_dev *vd, u32 off);
u16 virtio_cfg16(struct virtio_dev *vd, u32 off);
u32 virtio_cfg32(struct virtio_dev *vd, u32 off);

/* Add a chain (device-readable buffers first) and publish it in the avail
 * ring. Returns the head descriptor index or -1 if the ring is full. */
int virtq_add(struct virtq *q, const struct vbuf *bufs, int n);
void virtq_kick(struct virtq *q);
/* Take one completed chain; returns its head and frees its descriptors,
 * or -1 if none. *len = bytes the device wrote. */
int virtq_get_used(struct virtq *q, u32 *len);
bool virtq_has_used(struct virtq *q);

/* Zeroed, aligned memory for rings and buffers (never freed). */
void *dma_alloc(size_t size, size_t align);

#endif
