/*
 * pci.c - PCI configuration space via 0xCF8/0xCFC.
 */
#include "pci.h"
#include "console.h"

#define PCI_ADDR	0xCF8
#define PCI_DATA	0xCFC
#define PCI_COMMAND	0x04
#define PCI_CMD_IO	0x1
#define PCI_CMD_MASTER	0x4
#define PCI_HEADER_TYPE	0x0E
#define PCI_BAR0	0x10
#define PCI_INTLINE	0x3C

/* I/O space handed out to BARs nobody assigned */
static u32 io_next = 0xC000;

static void select_reg(const struct pci_dev *d, u32 off)
{
	outl(PCI_ADDR, 0x80000000u | ((u32)d->bus << 16) | ((u32)d->dev << 11) |
		       ((u32)d->fn << 8) | (off & 0xFC));
}

u32 pci_read32(const struct pci_dev *d, u32 off)
{
	select_reg(d, off);
	return inl(PCI_DATA);
}

void pci_write32(const struct pci_dev *d, u32 off, u32 v)
{
	select_reg(d, off);
	outl(PCI_DATA, v);
}

u16 pci_read16(const struct pci_dev *d, u32 off)
{
	select_reg(d, off);
	return inw(PCI_DATA + (off & 2));
}

void pci_write16(const struct pci_dev *d, u32 off, u16 v)
{
	select_reg(d, off);
	outw(PCI_DATA + (off & 2), v);
}

int pci_scan_bus0(struct pci_dev *out, int max)
{
	int n = 0;

	for (u8 dev = 0; dev < 32; dev++) {
		for (u8 fn = 0; fn < 8; fn++) {
			struct pci_dev d = { .bus = 0, .dev = dev, .fn = fn };
			u32 id = pci_read32(&d, 0);
			if ((id & 0xFFFF) == 0xFFFF) {
				if (fn == 0)
					break;
				continue;
			}
			d.vendor = (u16)id;
			d.device = (u16)(id >> 16);
			d.bar0 = pci_read32(&d, PCI_BAR0);
			d.irq_line = (u8)pci_read32(&d, PCI_INTLINE);
			if (n < max)
				out[n++] = d;
			if (fn == 0 && !(pci_read32(&d, PCI_HEADER_TYPE & ~3u) & 0x00800000))
				break;		/* single-function device */
		}
	}
	return n;
}

u16 pci_enable_io_bar0(struct pci_dev *d)
{
	if (!(d->bar0 & 1))
		return 0;
	if ((d->bar0 & ~3u) == 0) {
		/* unassigned: size it and give it space */
		pci_write32(d, PCI_BAR0, 0xFFFFFFFF);
		u32 size = (~(pci_read32(d, PCI_BAR0) & ~3u) + 1) & 0xFFFF;
		if (!size)
			return 0;
		io_next = (io_next + size - 1) & ~(size - 1);
		pci_write32(d, PCI_BAR0, io_next);
		kprintf("PCI %02x:%02x.%x BAR0 unassigned, set to 0x%x\n", d->bus, d->dev, d->fn, io_next);
		io_next += size;
		d->bar0 = pci_read32(d, PCI_BAR0);
	}
	u16 cmd = pci_read16(d, PCI_COMMAND);
	pci_write16(d, PCI_COMMAND, cmd | PCI_CMD_IO | PCI_CMD_MASTER);
	return (u16)(d->bar0 & ~3u);
}
