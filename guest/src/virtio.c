/*
 * virtio.c - legacy virtio-pci transport and split virtqueues.
 *
 * Queue memory uses the legacy layout: descriptor table, avail ring,
 * padding to the next 4096-byte boundary, used ring. The device is given
 * its page frame number (address >> 12). Guest physical == virtual here.
 */
#include "virtio.h"
#include "console.h"
#include "lib.h"

#define DMA_POOL_SIZE (1024 * KiB)
static u8 dma_pool[DMA_POOL_SIZE] __noinit __aligned(4096);
static size_t dma_used;

void *dma_alloc(size_t size, size_t align)
{
	size_t off = ALIGN_UP(dma_used, align);

	if (off + size > DMA_POOL_SIZE) {
		kprintf("PANIC dma pool exhausted\n");
		halt_forever();
	}
	dma_used = off + size;
	memset(dma_pool + off, 0, ALIGN_UP(size, 8));
	return dma_pool + off;
}

bool virtio_init(struct virtio_dev *vd, const struct pci_dev *pci, u32 wanted)
{
	vd->pci = *pci;
	vd->io = pci_enable_io_bar0(&vd->pci);
	vd->irq = pci->irq_line;
	if (!vd->io)
		return false;
	outb(vd->io + VIRTIO_PCI_STATUS, 0);			/* reset */
	outb(vd->io + VIRTIO_PCI_STATUS, VIRTIO_STATUS_ACK);
	outb(vd->io + VIRTIO_PCI_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
	vd->host_features = inl(vd->io + VIRTIO_PCI_HOST_FEATURES);
	vd->features = vd->host_features & wanted;
	outl(vd->io + VIRTIO_PCI_GUEST_FEATURES, vd->features);
	return true;
}

bool virtq_init(struct virtio_dev *vd, struct virtq *q, u16 index)
{
	outw(vd->io + VIRTIO_PCI_QUEUE_SEL, index);
	u16 size = inw(vd->io + VIRTIO_PCI_QUEUE_NUM);
	if (!size || (size & (size - 1)))
		return false;

	size_t avail_end = 16UL * size + 2UL * (3 + size);
	size_t used_off = ALIGN_UP(avail_end, 4096);
	size_t total = used_off + ALIGN_UP(2UL * 3 + 8UL * size, 4096);
	u8 *mem = dma_alloc(total, 4096);

	q->io = vd->io;
	q->index = index;
	q->size = size;
	q->desc = (struct vring_desc *)mem;
	q->avail = (struct vring_avail *)(mem + 16UL * size);
	q->used = (struct vring_used *)(mem + used_off);
	q->last_used = 0;
	q->avail_idx = 0;
	q->free_head = 0;
	q->num_free = size;
	for (u16 i = 0; i < size; i++)
		q->desc[i].next = (u16)(i + 1);
	wmb();
	outl(vd->io + VIRTIO_PCI_QUEUE_PFN, (u32)((u64)mem >> 12));
	return true;
}

void virtio_driver_ok(struct virtio_dev *vd)
{
	outb(vd->io + VIRTIO_PCI_STATUS,
	     VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK);
}

u8 virtio_read_isr(struct virtio_dev *vd)
{
	return inb(vd->io + VIRTIO_PCI_ISR);
}

u8 virtio_cfg8(struct virtio_dev *vd, u32 off) { return inb(vd->io + VIRTIO_PCI_CONFIG + off); }
u16 virtio_cfg16(struct virtio_dev *vd, u32 off) { return inw(vd->io + VIRTIO_PCI_CONFIG + off); }
u32 virtio_cfg32(struct virtio_dev *vd, u32 off) { return inl(vd->io + VIRTIO_PCI_CONFIG + off); }

int virtq_add(struct virtq *q, const struct vbuf *bufs, int n)
{
	if (n <= 0 || q->num_free < n)
		return -1;

	u16 head = q->free_head, i = head, last = head;
	for (int k = 0; k < n; k++) {
		struct vring_desc *d = &q->desc[i];
		d->addr = (u64)bufs[k].addr;
		d->len = bufs[k].len;
		d->flags = (u16)((bufs[k].device_writes ? VRING_DESC_F_WRITE : 0) |
				 (k + 1 < n ? VRING_DESC_F_NEXT : 0));
		last = i;
		i = d->next;		/* next free descriptor (free-list link) */
	}
	q->free_head = q->desc[last].next;
	q->num_free = (u16)(q->num_free - n);

	q->avail->ring[q->avail_idx & (q->size - 1)] = head;
	wmb();				/* descriptors and ring entry before idx */
	q->avail_idx++;
	WRITE_ONCE(q->avail->idx, q->avail_idx);
	return head;
}

void virtq_kick(struct virtq *q)
{
	mb();				/* avail->idx visible before the notify */
	outw(q->io + VIRTIO_PCI_QUEUE_NOTIFY, q->index);
}

bool virtq_has_used(struct virtq *q)
{
	return READ_ONCE(q->used->idx) != q->last_used;
}

int virtq_get_used(struct virtq *q, u32 *len)
{
	if (READ_ONCE(q->used->idx) == q->last_used)
		return -1;
	rmb();				/* idx before the entry it covers */
	struct vring_used_elem e = q->used->ring[q->last_used & (q->size - 1)];
	q->last_used++;
	if (e.id >= q->size)
		return -1;
	if (len)
		*len = e.len;

	/* return the chain to the free list */
	u16 i = (u16)e.id;
	u16 n = 1;
	while (q->desc[i].flags & VRING_DESC_F_NEXT) {
		i = q->desc[i].next;
		n++;
	}
	q->desc[i].next = q->free_head;
	q->free_head = (u16)e.id;
	q->num_free = (u16)(q->num_free + n);
	return (int)e.id;
}
