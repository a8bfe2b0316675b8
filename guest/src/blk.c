/*
 * blk.c - legacy virtio-blk driver (one request in flight at a time).
 *
 * A request is the chain [header (16, R)] [data (R or W)] [status (1, W)]
 * (a flush has no data). The caller submits and then sleeps in hlt until
 * the interrupt handler has seen the completion (or polls if the device
 * has no usable IRQ), with a 10 s timeout.
 */
#include "blk.h"
#include "apic.h"
#include "console.h"
#include "lib.h"
#include "virtio.h"

#define VIRTIO_BLK_F_SIZE_MAX	(1u << 1)
#define VIRTIO_BLK_F_RO		(1u << 5)
#define VIRTIO_BLK_F_FLUSH	(1u << 9)

#define VIRTIO_BLK_T_IN		0
#define VIRTIO_BLK_T_OUT	1
#define VIRTIO_BLK_T_FLUSH	4

#define SECTOR		512
#define CHUNK_SECTORS	64		/* 32 KiB per request */
#define WORDS_PER_SECTOR (SECTOR / 8)
#define TIMEOUT_MS	10000

#define PAT_K1		0x9E3779B97F4A7C15UL
#define PAT_K2		0xD6E8FEB86659FD93UL

struct blk_req_hdr {
	u32 type;
	u32 reserved;
	u64 sector;
};

static struct virtio_dev bd;
static struct virtq vq;
static bool present, polled, flush_ok, read_only;
static u64 capacity;			/* sectors */
static u32 chunk_sectors = CHUNK_SECTORS;
static struct blk_req_hdr *req_hdr;
static u8 *req_status;
static u64 *data_buf;
static volatile bool req_done;
static u32 req_len;

u64 blk_pattern_word(u64 seed, u64 sector, u32 w)
{
	return mix64(mix64(seed) ^ (sector + PAT_K1)) + (u64)w * PAT_K2;
}

static void blk_complete(void)
{
	u32 len;
	if (virtq_get_used(&vq, &len) >= 0) {
		req_len = len;
		WRITE_ONCE(req_done, true);
	}
}

static void blk_irq(void *arg)
{
	(void)arg;
	(void)virtio_read_isr(&bd);	/* ack first, then look at the ring */
	blk_complete();
}

void blk_poll(void)
{
	if (present && polled && virtq_has_used(&vq))
		blk_irq(NULL);
}

/* Submit one request and wait. Returns the virtio status (0 = OK) or -1
 * on timeout / queue error. */
static int blk_request(u32 type, u64 sector, void *data, u32 nsect)
{
	struct vbuf b[3];
	int n = 0;

	req_hdr->type = type;
	req_hdr->reserved = 0;
	req_hdr->sector = sector;
	*req_status = 0xFF;
	b[n++] = (struct vbuf){ req_hdr, sizeof(*req_hdr), false };
	if (nsect)
		b[n++] = (struct vbuf){ data, nsect * SECTOR, type == VIRTIO_BLK_T_IN };
	b[n++] = (struct vbuf){ req_status, 1, true };

	req_done = false;
	if (virtq_add(&vq, b, n) < 0)
		return -1;
	virtq_kick(&vq);

	u64 t0 = rdtsc();
	while (!READ_ONCE(req_done)) {
		if (tsc_to_ms(rdtsc() - t0) > TIMEOUT_MS)
			return -1;
		if (polled) {
			blk_poll();
		} else {
			irq_disable();
			if (!READ_ONCE(req_done))
				safe_halt();	/* the completion IRQ or the timer wakes us */
			else
				irq_enable();
		}
	}
	rmb();
	return *req_status;
}

bool blk_probe(const struct pci_dev *pci)
{
	if (present || !virtio_init(&bd, pci, VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_RO | VIRTIO_BLK_F_SIZE_MAX))
		return false;
	if (!virtq_init(&bd, &vq, 0)) {
		kprintf("BLK error: bad queue\n");
		outb(bd.io + VIRTIO_PCI_STATUS, VIRTIO_STATUS_FAILED);
		return false;
	}
	capacity = (u64)virtio_cfg32(&bd, 0) | (u64)virtio_cfg32(&bd, 4) << 32;
	flush_ok = bd.features & VIRTIO_BLK_F_FLUSH;
	read_only = bd.features & VIRTIO_BLK_F_RO;
	if (bd.features & VIRTIO_BLK_F_SIZE_MAX) {
		u32 size_max = virtio_cfg32(&bd, 8);
		if (size_max >= SECTOR && size_max / SECTOR < chunk_sectors)
			chunk_sectors = size_max / SECTOR;
	}
	req_hdr = dma_alloc(sizeof(*req_hdr), 16);
	req_status = dma_alloc(1, 16);
	data_buf = dma_alloc(CHUNK_SECTORS * SECTOR, 4096);

	polled = bd.irq == 0 || bd.irq == 0xFF || !ioapic_route_irq(bd.irq, blk_irq, NULL);
	present = true;
	virtio_driver_ok(&bd);
	kprintf("BLK capacity=%lu flush=%u ro=%u pci=%02x:%02x.%x io=0x%x irq=%u%s queue=%u\n",
		capacity, flush_ok, read_only, pci->bus, pci->dev, pci->fn, bd.io, bd.irq,
		polled ? "(polled)" : "", vq.size);
	return true;
}

bool blk_present(void)
{
	return present;
}

/* ---- commands ----------------------------------------------------------- */

static bool parse_range(const char *name, const char **args, u64 *lba, u64 *count)
{
	if (!present) {
		kprintf("ERR no blk device\n");
		return false;
	}
	if (!parse_u64(args, lba) || !parse_u64(args, count) || *count == 0) {
		kprintf("ERR bad arguments %s\n", name);
		return false;
	}
	if (*lba >= capacity || *count > capacity - *lba) {
		kprintf("%s FAIL %lu %lu range capacity=%lu\n", name, *lba, *count, capacity);
		return false;
	}
	return true;
}

static void fill_pattern(u64 seed, u64 lba, u32 nsect)
{
	for (u32 s = 0; s < nsect; s++) {
		u64 *w = data_buf + (u64)s * WORDS_PER_SECTOR;
		u64 v = mix64(mix64(seed) ^ (lba + s + PAT_K1));
		for (u32 i = 0; i < WORDS_PER_SECTOR; i++, v += PAT_K2)
			w[i] = v;
	}
}

/* Compare the buffer with the pattern; returns the number of bad sectors
 * and the first bad one in *first. */
static u64 check_pattern(u64 seed, u64 lba, u32 nsect, u64 *first)
{
	u64 bad = 0;

	for (u32 s = 0; s < nsect; s++) {
		const u64 *w = data_buf + (u64)s * WORDS_PER_SECTOR;
		u64 v = mix64(mix64(seed) ^ (lba + s + PAT_K1));
		for (u32 i = 0; i < WORDS_PER_SECTOR; i++, v += PAT_K2) {
			if (w[i] != v) {
				if (!bad)
					*first = lba + s;
				bad++;
				break;
			}
		}
	}
	return bad;
}

void cmd_blkw(const char *args)
{
	u64 lba, count, seed;

	if (!parse_range("BLKW", &args, &lba, &count))
		return;
	if (!parse_u64(&args, &seed)) {
		kprintf("ERR bad arguments BLKW\n");
		return;
	}
	if (read_only) {
		kprintf("BLKW FAIL %lu %lu read-only\n", lba, count);
		return;
	}
	u32 crc = 0;
	for (u64 done = 0; done < count;) {
		u32 n = (u32)MIN(count - done, (u64)chunk_sectors);
		fill_pattern(seed, lba + done, n);
		crc = crc32_update(crc, data_buf, n * SECTOR);
		int st = blk_request(VIRTIO_BLK_T_OUT, lba + done, data_buf, n);
		if (st) {
			kprintf("BLKW FAIL %lu %lu write status=%d at=%lu\n", lba, count, st, lba + done);
			return;
		}
		done += n;
	}
	if (flush_ok) {
		int st = blk_request(VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
		if (st) {
			kprintf("BLKW FAIL %lu %lu flush status=%d\n", lba, count, st);
			return;
		}
	}
	for (u64 done = 0; done < count;) {
		u32 n = (u32)MIN(count - done, (u64)chunk_sectors);
		u64 first = 0;
		int st = blk_request(VIRTIO_BLK_T_IN, lba + done, data_buf, n);
		if (st) {
			kprintf("BLKW FAIL %lu %lu read status=%d at=%lu\n", lba, count, st, lba + done);
			return;
		}
		u64 bad = check_pattern(seed, lba + done, n, &first);
		if (bad) {
			kprintf("BLKW FAIL %lu %lu readback bad=%lu first=%lu\n", lba, count, bad, first);
			return;
		}
		done += n;
	}
	kprintf("BLKW OK %lu %lu %08x\n", lba, count, crc);
}

void cmd_blkr(const char *args)
{
	u64 lba, count;

	if (!parse_range("BLKR", &args, &lba, &count))
		return;
	u32 crc = 0;
	for (u64 done = 0; done < count;) {
		u32 n = (u32)MIN(count - done, (u64)chunk_sectors);
		int st = blk_request(VIRTIO_BLK_T_IN, lba + done, data_buf, n);
		if (st) {
			kprintf("BLKR FAIL %lu %lu read status=%d at=%lu\n", lba, count, st, lba + done);
			return;
		}
		crc = crc32_update(crc, data_buf, n * SECTOR);
		done += n;
	}
	kprintf("BLKR %lu %lu %08x\n", lba, count, crc);
}

void cmd_blkv(const char *args)
{
	u64 lba, count, seed, bad = 0, first = 0;

	if (!parse_range("BLKV", &args, &lba, &count))
		return;
	if (!parse_u64(&args, &seed)) {
		kprintf("ERR bad arguments BLKV\n");
		return;
	}
	for (u64 done = 0; done < count;) {
		u32 n = (u32)MIN(count - done, (u64)chunk_sectors);
		u64 f = 0;
		int st = blk_request(VIRTIO_BLK_T_IN, lba + done, data_buf, n);
		if (st) {
			kprintf("BLKV FAIL %lu %lu read status=%d at=%lu\n", lba, count, st, lba + done);
			return;
		}
		u64 b = check_pattern(seed, lba + done, n, &f);
		if (b && !bad)
			first = f;
		bad += b;
		done += n;
	}
	if (bad)
		kprintf("BLKV FAIL %lu %lu bad=%lu first=%lu\n", lba, count, bad, first);
	else
		kprintf("BLKV OK %lu %lu\n", lba, count);
}
