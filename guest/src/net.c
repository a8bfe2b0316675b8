/*
 * net.c - legacy virtio-net driver and a minimal IPv4 responder.
 *
 * Features: MAC, STATUS, CTRL_VQ and GUEST_ANNOUNCE if offered; no
 * offloads, no MRG_RXBUF, so every buffer starts with the 10-byte legacy
 * virtio_net_hdr. Without ANY_LAYOUT the header gets its own descriptor:
 * each RX buffer is a chain [hdr (10, W)] [frame (1514, W)], each TX packet
 * [hdr (10, R)] [frame (R)].
 *
 * All RX processing and all transmits happen in the device's interrupt
 * handler on the BSP (or in net_poll() when there is no IRQ), so the rings
 * need no locking.
 */
#include "net.h"
#include "apic.h"
#include "boot.h"
#include "console.h"
#include "lib.h"
#include "virtio.h"

#define VIRTIO_NET_F_MAC		(1u << 5)
#define VIRTIO_NET_F_STATUS		(1u << 16)
#define VIRTIO_NET_F_CTRL_VQ		(1u << 17)
#define VIRTIO_NET_F_GUEST_ANNOUNCE	(1u << 21)
#define VIRTIO_NET_S_ANNOUNCE		2
#define VIRTIO_NET_CTRL_ANNOUNCE	3
#define VIRTIO_NET_CTRL_ANNOUNCE_ACK	0

#define NET_HDR_LEN	10
#define FRAME_MAX	1514
#define BUF_SIZE	1536
#define NRX		64
#define NTX		32
#define MAX_QSIZE	1024

#define ETH_ARP		0x0806
#define ETH_IPV4	0x0800
#define IP_ICMP		1
#define IP_UDP		17
#define UDP_ECHO_PORT	7

static struct virtio_dev nd;
static struct virtq rxq, txq, ctlq;
static bool present, have_ctrl, polled;
static u8 mac[6];
static u32 my_ip;		/* host byte order; 0 = no IP, no replies */
static u16 ip_id;
static struct net_stats stats;

static u8 *rx_hdr, *rx_buf;		/* NRX headers / buffers */
static u8 *tx_hdr, *tx_buf;		/* NTX headers / buffers */
static u8 tx_busy[NTX];
static s16 rx_slot_of[MAX_QSIZE], tx_slot_of[MAX_QSIZE];	/* head -> slot */
static u8 *ctl_cmd, *ctl_ack;
static bool ctl_busy;

/* ---- byte order helpers (network = big endian) --------------------------- */

static u16 get16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static u32 get32(const u8 *p) { return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3]; }
static void put16(u8 *p, u16 v) { p[0] = (u8)(v >> 8); p[1] = (u8)v; }
static void put32(u8 *p, u32 v) { p[0] = (u8)(v >> 24); p[1] = (u8)(v >> 16); p[2] = (u8)(v >> 8); p[3] = (u8)v; }

/*
 * RFC 1071 ones' complement sum. The sum is byte-order independent, so add
 * native (little-endian) 32-bit words into a 64-bit accumulator, fold, and
 * swap to network order at the end. Returns a partial sum to be folded by
 * csum_fold(); only the last piece of a chained sum may have odd length.
 */
typedef u32 u32_unaligned __attribute__((aligned(1), may_alias));
typedef u16 u16_unaligned __attribute__((aligned(1), may_alias));

static u32 csum_add(u32 sum, const u8 *p, size_t len)
{
	u64 s = 0;

	for (; len >= 4; p += 4, len -= 4)
		s += *(const u32_unaligned *)p;
	if (len >= 2) {
		s += *(const u16_unaligned *)p;
		p += 2;
		len -= 2;
	}
	if (len)
		s += p[0];			/* low byte in little-endian order */
	while (s >> 16)
		s = (s & 0xFFFF) + (s >> 16);
	return sum + (u32)(((s & 0xFF) << 8) | (s >> 8));
}

static u16 csum_fold(u32 sum)
{
	while (sum >> 16)
		sum = (sum & 0xFFFF) + (sum >> 16);
	return (u16)~sum;
}

/* ---- rings -------------------------------------------------------------- */

static void rx_post(int slot)
{
	struct vbuf b[2] = {
		{ rx_hdr + slot * 16, NET_HDR_LEN, true },
		{ rx_buf + slot * BUF_SIZE, FRAME_MAX, true },
	};
	int head = virtq_add(&rxq, b, 2);
	if (head >= 0)
		rx_slot_of[head] = (s16)slot;
}

static void tx_reclaim(void)
{
	int head;
	while ((head = virtq_get_used(&txq, NULL)) >= 0)
		if (tx_slot_of[head] >= 0)
			tx_busy[tx_slot_of[head]] = 0;
	if (have_ctrl)
		while (virtq_get_used(&ctlq, NULL) >= 0)
			ctl_busy = false;
}

/* Reserve a TX buffer; the caller builds the frame there and calls tx_send. */
static int tx_alloc(void)
{
	tx_reclaim();
	for (int i = 0; i < NTX; i++)
		if (!tx_busy[i])
			return i;
	stats.drops++;
	return -1;
}

static void tx_send(int slot, size_t len)
{
	if (len < 60) {			/* pad to the Ethernet minimum */
		memset(tx_buf + slot * BUF_SIZE + len, 0, 60 - len);
		len = 60;
	}
	memset(tx_hdr + slot * 16, 0, 16);
	struct vbuf b[2] = {
		{ tx_hdr + slot * 16, NET_HDR_LEN, false },
		{ tx_buf + slot * BUF_SIZE, (u32)len, false },
	};
	int head = virtq_add(&txq, b, 2);
	if (head < 0) {
		stats.drops++;
		return;
	}
	tx_busy[slot] = 1;
	tx_slot_of[head] = (s16)slot;
	stats.tx++;
	virtq_kick(&txq);
}

/* ---- protocols ---------------------------------------------------------- */

static u8 *eth_reply(int slot, const u8 *dst, u16 type)
{
	u8 *f = tx_buf + slot * BUF_SIZE;
	memcpy(f, dst, 6);
	memcpy(f + 6, mac, 6);
	put16(f + 12, type);
	return f + 14;
}

static void send_arp(u16 oper, const u8 *eth_dst, const u8 *tha, u32 tpa)
{
	int slot = tx_alloc();
	if (slot < 0)
		return;
	u8 *a = eth_reply(slot, eth_dst, ETH_ARP);
	put16(a + 0, 1);		/* Ethernet */
	put16(a + 2, ETH_IPV4);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, oper);
	memcpy(a + 8, mac, 6);
	put32(a + 14, my_ip);
	memcpy(a + 18, tha, 6);
	put32(a + 24, tpa);
	tx_send(slot, 14 + 28);
}

static void handle_arp(const u8 *a, size_t len)
{
	if (len < 28 || get16(a) != 1 || get16(a + 2) != ETH_IPV4 || a[4] != 6 || a[5] != 4)
		return;
	if (get16(a + 6) != 1 || get32(a + 24) != my_ip)
		return;				/* not a request for us */
	stats.arp++;
	send_arp(2, a + 8, a + 8, get32(a + 14));
}

/* Build an IPv4 header (no options) at ip; payload already in place. */
static void ip_header(u8 *ip, u8 tos, u8 proto, u32 dst, size_t payload_len)
{
	ip[0] = 0x45;
	ip[1] = tos;
	put16(ip + 2, (u16)(20 + payload_len));
	put16(ip + 4, ip_id++);
	put16(ip + 6, 0);
	ip[8] = 64;
	ip[9] = proto;
	put16(ip + 10, 0);
	put32(ip + 12, my_ip);
	put32(ip + 16, dst);
	put16(ip + 10, csum_fold(csum_add(0, ip, 20)));
}

static void handle_icmp(const u8 *eth_src, const u8 *ip, const u8 *icmp, size_t len)
{
	if (len < 8 || icmp[0] != 8 || icmp[1] != 0)
		return;				/* echo request only */
	if (csum_fold(csum_add(0, icmp, len)) != 0)
		return;
	int slot = tx_alloc();
	if (slot < 0)
		return;
	u8 *rip = eth_reply(slot, eth_src, ETH_IPV4);
	u8 *r = rip + 20;
	memcpy(r, icmp, len);
	r[0] = 0;				/* echo reply */
	put16(r + 2, 0);
	put16(r + 2, csum_fold(csum_add(0, r, len)));
	ip_header(rip, ip[1], IP_ICMP, get32(ip + 12), len);
	stats.icmp++;
	tx_send(slot, 14 + 20 + len);
}

static void handle_udp(const u8 *eth_src, const u8 *ip, const u8 *udp, size_t len)
{
	if (len < 8 || get16(udp + 2) != UDP_ECHO_PORT)
		return;
	size_t ulen = get16(udp + 4);
	if (ulen < 8 || ulen > len)
		return;
	int slot = tx_alloc();
	if (slot < 0)
		return;
	u32 peer = get32(ip + 12);
	u8 *rip = eth_reply(slot, eth_src, ETH_IPV4);
	u8 *r = rip + 20;
	put16(r + 0, UDP_ECHO_PORT);
	put16(r + 2, get16(udp + 0));
	put16(r + 4, (u16)ulen);
	put16(r + 6, 0);
	memcpy(r + 8, udp + 8, ulen - 8);
	/* checksum over the pseudo header and the datagram */
	u8 pseudo[12];
	put32(pseudo, my_ip);
	put32(pseudo + 4, peer);
	pseudo[8] = 0;
	pseudo[9] = IP_UDP;
	put16(pseudo + 10, (u16)ulen);
	u16 sum = csum_fold(csum_add(csum_add(0, pseudo, 12), r, ulen));
	put16(r + 6, sum ? sum : 0xFFFF);
	ip_header(rip, ip[1], IP_UDP, peer, ulen);
	stats.udp++;
	tx_send(slot, 14 + 20 + ulen);
}

static void handle_ipv4(const u8 *eth_src, const u8 *ip, size_t len)
{
	if (len < 20 || (ip[0] >> 4) != 4)
		return;
	size_t ihl = (size_t)(ip[0] & 0xF) * 4;
	size_t tot = get16(ip + 2);
	if (ihl < 20 || tot < ihl || tot > len || get32(ip + 16) != my_ip)
		return;
	if (get16(ip + 6) & 0x3FFF)
		return;				/* fragments: not supported */
	if (csum_fold(csum_add(0, ip, ihl)) != 0)
		return;
	if (ip[9] == IP_ICMP)
		handle_icmp(eth_src, ip, ip + ihl, tot - ihl);
	else if (ip[9] == IP_UDP)
		handle_udp(eth_src, ip, ip + ihl, tot - ihl);
}

static const u8 bcast[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };

static void handle_frame(const u8 *f, size_t len)
{
	stats.rx++;
	if (!my_ip || len < 14)
		return;
	if (memcmp(f, mac, 6) && memcmp(f, bcast, 6))
		return;
	u16 type = get16(f + 12);
	if (type == ETH_ARP)
		handle_arp(f + 14, len - 14);
	else if (type == ETH_IPV4)
		handle_ipv4(f + 6, f + 14, len - 14);
}

/* ---- announce (migration) ----------------------------------------------- */

static void announce(void)
{
	static const u8 zero_mac[6];

	stats.announce++;
	if (my_ip)	/* gratuitous ARP: request for our own address */
		send_arp(1, bcast, zero_mac, my_ip);
	if (have_ctrl && !ctl_busy) {
		ctl_cmd[0] = VIRTIO_NET_CTRL_ANNOUNCE;
		ctl_cmd[1] = VIRTIO_NET_CTRL_ANNOUNCE_ACK;
		ctl_ack[0] = 0xFF;
		struct vbuf b[2] = { { ctl_cmd, 2, false }, { ctl_ack, 1, true } };
		if (virtq_add(&ctlq, b, 2) >= 0) {
			ctl_busy = true;
			virtq_kick(&ctlq);
		}
	}
	kprintf("NET announce n=%lu garp=%u\n", stats.announce, my_ip ? 1 : 0);
}

/* ---- interrupt ---------------------------------------------------------- */

static void net_process(void)
{
	int head;
	u32 len;
	bool reposted = false;

	tx_reclaim();
	while ((head = virtq_get_used(&rxq, &len)) >= 0) {
		int slot = rx_slot_of[head];
		if (slot < 0)
			continue;
		if (len > NET_HDR_LEN)
			handle_frame(rx_buf + slot * BUF_SIZE, MIN(len - NET_HDR_LEN, (u32)FRAME_MAX));
		rx_post(slot);
		reposted = true;
	}
	if (reposted)
		virtq_kick(&rxq);
}

static void net_irq(void *arg)
{
	(void)arg;
	/* reading ISR acknowledges and deasserts the interrupt */
	u8 isr = virtio_read_isr(&nd);
	if ((isr & VIRTIO_ISR_CONFIG) && (nd.features & VIRTIO_NET_F_STATUS) &&
	    (virtio_cfg16(&nd, 6) & VIRTIO_NET_S_ANNOUNCE))
		announce();
	net_process();
}

void net_poll(void)
{
	if (present && polled)
		net_irq(NULL);
}

/* ---- probe -------------------------------------------------------------- */

bool net_probe(const struct pci_dev *pci)
{
	char ipstr[32];
	u32 want = VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_CTRL_VQ |
		   VIRTIO_NET_F_GUEST_ANNOUNCE;

	if (present || !virtio_init(&nd, pci, want))
		return false;
	/* GUEST_ANNOUNCE needs CTRL_VQ and STATUS */
	if ((nd.features & (VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_STATUS)) !=
	    (VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_STATUS) && (nd.features & VIRTIO_NET_F_GUEST_ANNOUNCE)) {
		nd.features &= ~VIRTIO_NET_F_GUEST_ANNOUNCE;
		outl(nd.io + VIRTIO_PCI_GUEST_FEATURES, nd.features);
	}
	if (!virtq_init(&nd, &rxq, 0) || !virtq_init(&nd, &txq, 1) ||
	    rxq.size > MAX_QSIZE || txq.size > MAX_QSIZE) {
		kprintf("NET error: bad queues\n");
		outb(nd.io + VIRTIO_PCI_STATUS, VIRTIO_STATUS_FAILED);
		return false;
	}
	have_ctrl = (nd.features & VIRTIO_NET_F_CTRL_VQ) && virtq_init(&nd, &ctlq, 2);

	for (int i = 0; i < 6; i++)
		mac[i] = (nd.features & VIRTIO_NET_F_MAC) ? virtio_cfg8(&nd, (u32)i) : 0;
	if (cmdline_get("ip", ipstr, sizeof(ipstr)) && !parse_ipv4(ipstr, &my_ip)) {
		kprintf("WARN bad ip=%s ignored\n", ipstr);
		my_ip = 0;
	}

	for (int i = 0; i < MAX_QSIZE; i++)
		rx_slot_of[i] = tx_slot_of[i] = -1;
	rx_hdr = dma_alloc(NRX * 16, 16);
	rx_buf = dma_alloc(NRX * BUF_SIZE, 64);
	tx_hdr = dma_alloc(NTX * 16, 16);
	tx_buf = dma_alloc(NTX * BUF_SIZE, 64);
	ctl_cmd = dma_alloc(16, 16);
	ctl_ack = dma_alloc(16, 16);
	int nrx = MIN(NRX, rxq.size / 2);
	for (int i = 0; i < nrx; i++)
		rx_post(i);

	polled = nd.irq == 0 || nd.irq == 0xFF || !ioapic_route_irq(nd.irq, net_irq, NULL);
	present = true;
	virtio_driver_ok(&nd);
	virtq_kick(&rxq);

	if (my_ip)
		format_ipv4(ipstr, my_ip);
	else
		snprintf(ipstr, sizeof(ipstr), "none");
	kprintf("NET mac=%02x:%02x:%02x:%02x:%02x:%02x ip=%s\n",
		mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], ipstr);
	kprintf("NET pci=%02x:%02x.%x io=0x%x irq=%u%s features=0x%x rxq=%u txq=%u ctrlq=%u announce=%u\n",
		pci->bus, pci->dev, pci->fn, nd.io, nd.irq, polled ? "(polled)" : "",
		nd.features, rxq.size, txq.size, have_ctrl ? ctlq.size : 0,
		(nd.features & VIRTIO_NET_F_GUEST_ANNOUNCE) ? 1 : 0);
	return true;
}

bool net_present(void)
{
	return present;
}

const struct net_stats *net_get_stats(void)
{
	return &stats;
}
