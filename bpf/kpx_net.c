// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Packet-level Service translation on the node's external interfaces, for
 * traffic from other hosts to NodePorts, externalIPs and LoadBalancer IPs.
 * tc ingress translates flows towards backends and SNAT replies back to
 * their clients; tc egress translates the replies of local backends; XDP
 * (optional) does the part that never needs the stack, before an skb
 * exists, and leaves the rest to tc.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "include/kpx_nat.h"

/* The kernel's view of an skb, for the one field __sk_buff lacks: how far
 * its L4 checksum is done (ip_summed). CO-RE places the field as the
 * running kernel lays it out; bpf_cast_to_kern_ctx (6.3) costs nothing,
 * the verifier turns it into a register move. */
struct sk_buff___kpx {
	__u8 ip_summed : 2;
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* include/linux/skbuff.h */
#define KPX_CHECKSUM_COMPLETE 2
#define KPX_CHECKSUM_PARTIAL 3

/* Ones' complement arithmetic on 16-bit words as they lie in the packet
 * (RFC 1624, eqn. 3): the sum of what replacing `from` with `to` adds. */
static __always_inline __u32 kpx_csum_diff16(__u16 from, __u16 to)
{
	return (__u16)~from + (__u32)to;
}

static __always_inline __u32 kpx_csum_diff32(__u32 from, __u32 to)
{
	return kpx_csum_diff16(from >> 16, to >> 16) + kpx_csum_diff16(from & 0xffff, to & 0xffff);
}

/* A checksum with `diff` folded in. */
static __always_inline __u16 kpx_csum_apply(__u16 check, __u32 diff)
{
	__u32 sum = (__u16)~check + diff;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* A CHECKSUM_PARTIAL skb's L4 checksum field holds the pseudo-header sum,
 * not complemented, and the device sums the rest (ports included): only
 * the addresses' difference goes in, as the kernel's
 * inet_proto_csum_replace_by_diff does. */
static __always_inline __u16 kpx_csum_apply_partial(__u16 check, __u32 diff)
{
	__u32 sum = check + diff;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/* Rewrites the addresses, ports and TTL of an skb to `out` and `ttl`, in
 * place (kpx_skb_parse made the headers linear). The IP header is stored
 * with its checksum computed here: a full checksum whatever the skb's
 * state, and the header's sum does not change. The L4 checksum is updated
 * here too, by the skb's state: whole when it is not yet verified or
 * already verified, its pseudo-header part when the device completes it.
 * Only a CHECKSUM_COMPLETE skb goes through the helper, since skb->csum
 * must follow the pseudo-header change and a program cannot write it; in
 * two calls, as addresses are pseudo-header and ports are data. Inline
 * costs ~35 ns less per packet than the two calls (bench packet-cost). */
static __always_inline int kpx_skb_rewrite(struct __sk_buff *skb, const struct kpx_pkt *p, const struct kpx_ct *out, __u8 ttl)
{
	const struct kpx_ct_key *in = &p->tuple;
	__u64 l4_flags = in->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u32 addr_diff = kpx_csum_diff32(in->saddr, out->saddr) + kpx_csum_diff32(in->daddr, out->daddr);
	__u32 ttl_diff = kpx_csum_diff16(bpf_htons((__u16)p->ttl << 8 | in->proto), bpf_htons((__u16)ttl << 8 | in->proto));
	__u32 port_diff = kpx_csum_diff16(in->sport, out->sport) + kpx_csum_diff16(in->dport, out->dport);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + KPX_IP_OFF;
	__be16 *ports = data + (p->l4_off & 0xff);

	if ((void *)(ip + 1) > data_end || (void *)(ports + 2) > data_end)
		return -1;
	ip->ttl = ttl;
	ip->check = kpx_csum_apply(p->ip_check, addr_diff + ttl_diff);
	ip->saddr = out->saddr;
	ip->daddr = out->daddr;
	ports[0] = out->sport;
	ports[1] = out->dport;

	struct sk_buff___kpx *kskb = bpf_cast_to_kern_ctx(skb);
	__u8 summed = BPF_CORE_READ_BITFIELD(kskb, ip_summed);

	if (summed == KPX_CHECKSUM_COMPLETE) {
		if ((in->saddr != out->saddr || in->daddr != out->daddr) &&
		    bpf_l4_csum_replace(skb, p->csum_off, 0, addr_diff, l4_flags | BPF_F_PSEUDO_HDR))
			return -1;
		if ((in->sport != out->sport || in->dport != out->dport) &&
		    bpf_l4_csum_replace(skb, p->csum_off, 0, port_diff, l4_flags))
			return -1;
		return 0;
	}
	if (p->udp_csum_zero)
		return 0; /* sent without a checksum: stays without */

	__u16 *l4_check = data + (p->csum_off & 0xff);

	if ((void *)(l4_check + 1) > data_end)
		return -1;
	__u16 check = summed == KPX_CHECKSUM_PARTIAL ? kpx_csum_apply_partial(*l4_check, addr_diff)
						     : kpx_csum_apply(*l4_check, addr_diff + port_diff);

	/* 0 means "no checksum" in UDP; its ones' complement twin is 0xffff. */
	if (in->proto == IPPROTO_UDP && check == 0)
		check = 0xffff;
	*l4_check = check;
	return 0;
}

/* Sends a rewritten skb on towards its new destination, as a router would
 * (the rewrite decremented the TTL): next hop from the FIB, or from the
 * flow's entry when it holds one; L2 from the neighbour table. */
static __always_inline int kpx_skb_forward(struct __sk_buff *skb, struct kpx_ct *out, struct kpx_ct *tracked)
{
	if (out->fib == KPX_FIB_NONE) {
		struct bpf_fib_lookup fib = {
			.family = KPX_AF_INET,
			.ipv4_src = out->saddr,
			.ipv4_dst = out->daddr,
			.ifindex = skb->ingress_ifindex,
		};

		if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH) != BPF_FIB_LKUP_RET_SUCCESS)
			return TC_ACT_SHOT;
		out->fib_ifindex = fib.ifindex;
		out->fib_nexthop = fib.ipv4_dst;
		if (tracked)
			kpx_ct_keep_fib(tracked, out, KPX_FIB_NEXTHOP);
	}

	struct bpf_redir_neigh nh = {
		.nh_family = KPX_AF_INET,
		.ipv4_nh = out->fib_nexthop,
	};

	return bpf_redirect_neigh(out->fib_ifindex, &nh, sizeof(nh), 0);
}

/* Headers past the linear part of an skb are out of direct reach. */
#define KPX_MAX_HEADERS (sizeof(struct ethhdr) + 60 + sizeof(struct tcphdr))

static __always_inline int kpx_skb_parse(struct __sk_buff *skb, struct kpx_pkt *p)
{
	if ((void *)(long)skb->data + KPX_MAX_HEADERS > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, skb->len < KPX_MAX_HEADERS ? skb->len : KPX_MAX_HEADERS);
	return kpx_parse((void *)(long)skb->data, (void *)(long)skb->data_end, p);
}

/* Every drop of a kpx packet at tc goes through here, so kpx_stats sees it. */
static __always_inline int kpx_tc_drop(void)
{
	kpx_count(KPX_STAT_DROP);
	return TC_ACT_SHOT;
}

SEC("tc")
int kpx_tc_ingress(struct __sk_buff *skb)
{
	struct kpx_pkt p;
	struct kpx_ct out;
	struct kpx_ct *tracked;

	if (kpx_skb_parse(skb, &p) < 0)
		return TC_ACT_OK;
	switch (kpx_nat_ingress(skb, skb->ingress_ifindex, &p, &out, &tracked)) {
	case KPX_PASS:
		return TC_ACT_OK;
	case KPX_DROP:
		return kpx_tc_drop();
	case KPX_TRANSLATE:
		break;
	}
	/* A router would answer ICMP time exceeded; kpx does not forge ICMP. */
	if ((out.flags & KPX_CT_REDIRECT) && p.ttl <= 1)
		return kpx_tc_drop();
	if (!(out.flags & KPX_CT_REDIRECT)) {
		/* A local backend: the stack routes it in. */
		if (kpx_skb_rewrite(skb, &p, &out, p.ttl) < 0)
			return kpx_tc_drop();
		return TC_ACT_OK;
	}
	if (kpx_skb_rewrite(skb, &p, &out, p.ttl - 1) < 0)
		return kpx_tc_drop();
	int verdict = kpx_skb_forward(skb, &out, tracked);

	return verdict == TC_ACT_SHOT ? kpx_tc_drop() : verdict;
}

SEC("tc")
int kpx_tc_egress(struct __sk_buff *skb)
{
	struct kpx_pkt p;
	struct kpx_ct *ct;

	if (kpx_skb_parse(skb, &p) < 0)
		return TC_ACT_OK;
	ct = bpf_map_lookup_elem(&kpx_ct, &p.tuple);
	/* Only local backends' replies leave here untranslated: every other
	 * translated packet was rewritten where it came in. */
	if (!ct || (ct->flags & (KPX_CT_REPLY | KPX_CT_REDIRECT)) != KPX_CT_REPLY)
		return TC_ACT_OK;
	kpx_ct_touch(ct, &p, kpx_now_ns());
	struct kpx_ct out = *ct;

	if (kpx_skb_rewrite(skb, &p, &out, p.ttl) < 0)
		return kpx_tc_drop();
	kpx_count(KPX_STAT_LOCAL_REPLY);
	return TC_ACT_OK;
}

/* Frames from a physical wire carry complete checksums, so direct updates
 * are right here. XDP cannot tell a partial one: a veth whose peer sends
 * with TX checksum offload (kind's nodes) is not for --xdp. */
SEC("xdp")
int kpx_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct kpx_pkt p;
	struct kpx_ct out;
	struct kpx_ct *tracked;

	if (kpx_parse(data, data_end, &p) < 0)
		return XDP_PASS;
	switch (kpx_nat_ingress(ctx, ctx->ingress_ifindex, &p, &out, &tracked)) {
	case KPX_PASS:
		return XDP_PASS;
	case KPX_DROP:
		kpx_count(KPX_STAT_DROP);
		return XDP_DROP;
	case KPX_TRANSLATE:
		break;
	}
	/* A local backend needs the stack to reach it, and a packet whose next
	 * hop is not resolved yet needs the stack's neighbour discovery: tc
	 * finds the flow already tracked and finishes the job. */
	if (!(out.flags & KPX_CT_REDIRECT) || p.ttl <= 1)
		return XDP_PASS;

	if (out.fib != KPX_FIB_L2) {
		struct bpf_fib_lookup fib = {
			.family = KPX_AF_INET,
			.ipv4_src = out.saddr,
			.ipv4_dst = out.daddr,
			.ifindex = ctx->ingress_ifindex,
		};

		if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
			return XDP_PASS;
		out.fib_ifindex = fib.ifindex;
		out.fib_nexthop = fib.ipv4_dst;
		__builtin_memcpy(out.fib_dmac, fib.dmac, ETH_ALEN);
		__builtin_memcpy(out.fib_smac, fib.smac, ETH_ALEN);
		if (tracked)
			kpx_ct_keep_fib(tracked, &out, KPX_FIB_L2);
	}

	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u16 *sport, *dport, *l4_check;

	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	sport = data + (p.l4_off & 0xff);
	if ((void *)(sport + 2) > data_end)
		return XDP_PASS;
	dport = sport + 1;
	l4_check = data + (p.csum_off & 0xff);
	if ((void *)(l4_check + 1) > data_end)
		return XDP_PASS;

	/* Each sum of differences is folded once. */
	__u32 addr_diff = kpx_csum_diff32(p.tuple.saddr, out.saddr) + kpx_csum_diff32(p.tuple.daddr, out.daddr);

	if (!p.udp_csum_zero) {
		__u32 port_diff = kpx_csum_diff16(p.tuple.sport, out.sport) + kpx_csum_diff16(p.tuple.dport, out.dport);
		__u16 check = kpx_csum_apply(*l4_check, addr_diff + port_diff);

		/* 0 means "no checksum" in UDP; its ones' complement twin is 0xffff. */
		if (p.tuple.proto == IPPROTO_UDP && check == 0)
			check = 0xffff;
		*l4_check = check;
	}
	*sport = out.sport;
	*dport = out.dport;

	__u16 ttl_proto = bpf_htons((__u16)p.ttl << 8 | p.tuple.proto);
	__u16 ttl_proto_after = bpf_htons((__u16)(p.ttl - 1) << 8 | p.tuple.proto);

	ip->ttl = p.ttl - 1;
	ip->check = kpx_csum_apply(p.ip_check, addr_diff + kpx_csum_diff16(ttl_proto, ttl_proto_after));
	ip->saddr = out.saddr;
	ip->daddr = out.daddr;

	__builtin_memcpy(eth->h_dest, out.fib_dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, out.fib_smac, ETH_ALEN);
	if (out.fib_ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(out.fib_ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
