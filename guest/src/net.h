/*
 * net.h - virtio-net driver with a tiny responder: ARP, ICMP echo, UDP echo
 * (port 7), gratuitous ARP on VIRTIO_NET_S_ANNOUNCE.
 */
#ifndef GUEST_NET_H
#define GUEST_NET_H

#include "arch.h"
#include "pci.h"

struct net_stats {
	u64 rx, tx, arp, icmp, udp, announce, drops;
};

bool net_probe(const struct pci_dev *pci);	/* 1af4:1000 */
bool net_present(void);
void net_poll(void);		/* used when the device has no usable IRQ */
const struct net_stats *net_get_stats(void);

#endif
