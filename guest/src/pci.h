/*
 * pci.h - PCI configuration access (mechanism #1, ports 0xCF8/0xCFC) and a
 * bus-0 scan.
 */
#ifndef GUEST_PCI_H
#define GUEST_PCI_H

#include "arch.h"

struct pci_dev {
	u8 bus, dev, fn;
	u16 vendor, device;
	u32 bar0;		/* raw BAR0 value */
	u8 irq_line;		/* config offset 0x3C */
};

u32 pci_read32(const struct pci_dev *d, u32 off);
void pci_write32(const struct pci_dev *d, u32 off, u32 v);
u16 pci_read16(const struct pci_dev *d, u32 off);
void pci_write16(const struct pci_dev *d, u32 off, u16 v);

/* Scan bus 0 (all functions of multi-function devices). Fills up to max
 * entries and returns the number of functions found. */
int pci_scan_bus0(struct pci_dev *out, int max);

/* Enable I/O decoding and bus mastering; assign BAR0 if it is an I/O BAR
 * the firmware left at 0. Returns the I/O base, or 0 if BAR0 is not I/O. */
u16 pci_enable_io_bar0(struct pci_dev *d);

#endif
