/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing shared by the tc and XDP programs. */
#ifndef KPX_PKT_H
#define KPX_PKT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "kpx_types.h"

#ifndef offsetof
#define offsetof(type, member) __builtin_offsetof(type, member)
#endif

#define KPX_IP_MF 0x2000
#define KPX_IP_OFFSET 0x1fff

#define KPX_TCP_FIN 0x01
#define KPX_TCP_SYN 0x02
#define KPX_TCP_RST 0x04
#define KPX_TCP_ACK 0x10

/* Where the parts of a TCP or UDP over IPv4 packet are, as offsets from the
 * start of the frame (helpers that rewrite an skb take offsets), plus the
 * packet's tuple. */
struct kpx_pkt {
	struct kpx_ct_key tuple;
	__u32 l4_off;
	__u32 csum_off; /* of the TCP or UDP checksum */
	__u8 tcp_flags;
	__u8 ttl;
	__u16 udp_csum_zero; /* a UDP packet sent without checksum */
	__u16 ip_check;	     /* the IPv4 header checksum as received */
};

#define KPX_IP_OFF ((__u32)sizeof(struct ethhdr))

/* Fills p for an unfragmented TCP or UDP over IPv4 frame. Anything else
 * (ARP, IPv6, ICMP, fragments, which carry no ports past the first) is not
 * kpx's to translate: returns -1 and the caller passes the packet on. */
static __always_inline int kpx_parse(void *data, void *data_end, struct kpx_pkt *p)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl;

	/* The tuple is a kpx_ct key: its padding must be zero, not stack garbage. */
	__builtin_memset(&p->tuple, 0, sizeof(p->tuple));
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->version != 4)
		return -1;
	if (ip->frag_off & bpf_htons(KPX_IP_MF | KPX_IP_OFFSET))
		return -1;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return -1;
	p->l4_off = KPX_IP_OFF + ihl;
	p->ttl = ip->ttl;
	p->ip_check = ip->check;
	p->tuple.saddr = ip->saddr;
	p->tuple.daddr = ip->daddr;
	p->tuple.proto = ip->protocol;
	p->tcp_flags = 0;
	p->udp_csum_zero = 0;

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = (void *)ip + ihl;

		if ((void *)(th + 1) > data_end)
			return -1;
		p->tuple.sport = th->source;
		p->tuple.dport = th->dest;
		p->csum_off = p->l4_off + offsetof(struct tcphdr, check);
		p->tcp_flags = ((__u8 *)th)[13];
		return 0;
	}
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = (void *)ip + ihl;

		if ((void *)(uh + 1) > data_end)
			return -1;
		p->tuple.sport = uh->source;
		p->tuple.dport = uh->dest;
		p->csum_off = p->l4_off + offsetof(struct udphdr, check);
		p->udp_csum_zero = uh->check == 0;
		return 0;
	}
	return -1;
}

#endif
