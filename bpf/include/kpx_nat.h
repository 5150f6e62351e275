/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address translation for traffic that reaches the node from outside
 * (NodePort, externalIP, LoadBalancer IP), shared by tc and XDP: connection
 * tracking in kpx_ct, backend choice, SNAT port claims. The callers apply
 * the resulting rewrite in their own way (skb helpers or direct writes).
 */
#ifndef KPX_NAT_H
#define KPX_NAT_H

#include <stdbool.h>
#include "kpx_lb.h"
#include "kpx_pkt.h"

#define KPX_AF_INET 2

/* SNAT ports sit above Linux's default ephemeral range (32768-60999), so a
 * translated flow never takes the port of a local socket's connection. */
#define KPX_SNAT_PORT_MIN 61000
#define KPX_SNAT_PORT_COUNT (65536 - KPX_SNAT_PORT_MIN)
#define KPX_SNAT_TRIES 8

#define KPX_NSEC 1000000000ULL
/* Idle timeouts, as Cilium's defaults: an entry past its timeout no longer
 * holds its SNAT port and a packet that finds it starts a new flow. */
#define KPX_CT_TCP_TIMEOUT (6 * 3600 * KPX_NSEC)
#define KPX_CT_CLOSING_TIMEOUT (10 * KPX_NSEC)
#define KPX_CT_UDP_TIMEOUT (60 * KPX_NSEC)
/* last_seen_ns is written at most this often: one write per packet would
 * bounce the entry's cache line between CPUs. */
#define KPX_CT_REFRESH (KPX_NSEC)

/* The kernel's tick rate. The agent reads it from the kernel's config and
 * gives it to libbpf, 0 where there is none (src/datapath/kernel-config.ts:
 * libbpf alone would refuse the load then). The verifier knows the value,
 * so only the branch it selects below is kept. */
extern unsigned int CONFIG_HZ __kconfig __weak;

/* CLOCK_MONOTONIC to the tick, as bpf_ktime_get_coarse_ns() gives it:
 * timeouts are seconds, so the tick is plenty. For the usual tick rates,
 * from jiffies, which the verifier inlines as one load: 7 ns less per tc
 * packet, 5-12 per XDP packet, than the helper. Jiffies start 300 s before
 * wrapping 32 bits (the kernel's INITIAL_JIFFIES), taken off so that
 * entries stamped either way (by an earlier build, or on a kernel whose
 * rate is not listed here) compare: the two clocks differ by a constant
 * from boot, 190 ms on the VM this was measured on, which a timeout of
 * seconds does not notice. */
static __always_inline __u64 kpx_now_ns(void)
{
	__u64 ns_per_jiffy;

	switch (CONFIG_HZ) {
	case 100:
		ns_per_jiffy = KPX_NSEC / 100;
		break;
	case 250:
		ns_per_jiffy = KPX_NSEC / 250;
		break;
	case 1000:
		ns_per_jiffy = KPX_NSEC / 1000;
		break;
	default:
		return bpf_ktime_get_coarse_ns();
	}
	return (bpf_jiffies64() - (__u64)(__u32)(-300 * (int)CONFIG_HZ)) * ns_per_jiffy;
}

static __always_inline void kpx_count(enum kpx_stat stat)
{
	__u32 key = stat;
	__u64 *count = bpf_map_lookup_elem(&kpx_stats, &key);

	if (count)
		*count += 1; /* per-CPU: no other writer */
}

enum kpx_verdict {
	KPX_PASS,      /* not ours: hand the packet on untouched */
	KPX_DROP,      /* ours, but it cannot be delivered */
	KPX_TRANSLATE, /* rewrite to the returned tuple */
};

static __always_inline bool kpx_ct_expired(const struct kpx_ct *ct, __u8 proto, __u64 now)
{
	__u64 timeout = KPX_CT_UDP_TIMEOUT;

	if (proto == IPPROTO_TCP)
		timeout = (ct->flags & KPX_CT_CLOSING) ? KPX_CT_CLOSING_TIMEOUT : KPX_CT_TCP_TIMEOUT;
	/* Signed: an entry stamped by a finer clock may be a tick ahead. */
	return (__s64)(now - ct->last_seen_ns) > (__s64)timeout;
}

/* The key under which the packets leaving with tuple `out` come back. */
static __always_inline struct kpx_ct_key kpx_ct_reverse(const struct kpx_ct *out, __u8 proto)
{
	struct kpx_ct_key key = {
		.saddr = out->daddr,
		.daddr = out->saddr,
		.sport = out->dport,
		.dport = out->sport,
		.proto = proto,
	};
	return key;
}

static __always_inline void kpx_ct_touch(struct kpx_ct *ct, const struct kpx_pkt *p, __u64 now)
{
	if ((__s64)(now - ct->last_seen_ns) > (__s64)KPX_CT_REFRESH) {
		ct->last_seen_ns = now;
		ct->fib = KPX_FIB_NONE; /* this packet looks the route up again */
	}
	if (!(p->tcp_flags & (KPX_TCP_FIN | KPX_TCP_RST)) || (ct->flags & KPX_CT_CLOSING))
		return;
	/* Either side closing ends the flow: both entries get the short timeout. */
	struct kpx_ct_key other_key = kpx_ct_reverse(ct, p->tuple.proto);
	struct kpx_ct *other = bpf_map_lookup_elem(&kpx_ct, &other_key);

	ct->flags |= KPX_CT_CLOSING;
	if (other)
		other->flags |= KPX_CT_CLOSING;
}

/* Keeps the FIB result in `from` (the caller's copy of the entry) in the
 * flow's entry, unless the LRU gave that element to another flow since it
 * was found. The state is stored last (a compiler barrier keeps it there);
 * a reader on another CPU may still copy a half-written result during the
 * rare rewrite, which costs that one packet. */
static __always_inline void kpx_ct_keep_fib(struct kpx_ct *ct, const struct kpx_ct *from, __u8 state)
{
	if (ct->saddr != from->saddr || ct->daddr != from->daddr || ct->sport != from->sport || ct->dport != from->dport)
		return;
	ct->fib_ifindex = from->fib_ifindex;
	ct->fib_nexthop = from->fib_nexthop;
	if (state == KPX_FIB_L2) {
		__builtin_memcpy(ct->fib_dmac, from->fib_dmac, sizeof(ct->fib_dmac));
		__builtin_memcpy(ct->fib_smac, from->fib_smac, sizeof(ct->fib_smac));
	}
	asm volatile("" ::: "memory");
	ct->fib = state;
}

/* Whether a forward entry's backend left every Service (its array entry
 * zeroed), or its ID now means another address. */
static __always_inline bool kpx_ct_backend_gone(const struct kpx_ct *ct)
{
	struct kpx_backend *be = bpf_map_lookup_elem(&kpx_backends, &ct->backend_id);

	return !be || be->addr != ct->daddr || be->port != ct->dport;
}

/* Routes a new flow's first packet towards fwd->daddr: the address this
 * node sends from becomes fwd->saddr, and the next hop is kept in fwd (the
 * flow's entry is written with it, so no packet of the flow looks it up
 * again until the entry is refreshed). */
static __always_inline int kpx_route_new_flow(void *ctx, __u32 ifindex, struct kpx_ct *fwd)
{
	struct bpf_fib_lookup fib = {
		.family = KPX_AF_INET,
		.ipv4_dst = fwd->daddr,
		.ifindex = ifindex,
	};
	long ret;

	ret = bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (ret != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	fwd->saddr = fib.ipv4_src;
	fwd->fib_ifindex = fib.ifindex;
	fwd->fib_nexthop = fib.ipv4_dst;
	fwd->fib = KPX_FIB_NEXTHOP;
	return 0;
}

/* Claims a free SNAT port towards the backend by inserting the reply entry
 * with BPF_NOEXIST: two CPUs can never claim the same one. An expired
 * holder is taken over. */
static __always_inline int kpx_claim_snat_port(struct kpx_ct *fwd, const struct kpx_ct *reply, __u8 proto, __u64 now)
{
	__u32 start = bpf_get_prandom_u32();

#pragma unroll
	for (int i = 0; i < KPX_SNAT_TRIES; i++) {
		fwd->sport = bpf_htons(KPX_SNAT_PORT_MIN + (start + i * 2503) % KPX_SNAT_PORT_COUNT);
		struct kpx_ct_key rkey = kpx_ct_reverse(fwd, proto);

		if (bpf_map_update_elem(&kpx_ct, &rkey, reply, BPF_NOEXIST) == 0)
			return 0;
		struct kpx_ct *holder = bpf_map_lookup_elem(&kpx_ct, &rkey);

		if (holder && kpx_ct_expired(holder, proto, now)) {
			bpf_map_update_elem(&kpx_ct, &rkey, reply, BPF_ANY);
			return 0;
		}
	}
	return -1;
}

/*
 * What to do with a packet arriving from outside: follow its tracked flow,
 * or start one if it is addressed to a NodePort, externalIP or LoadBalancer
 * IP. A local backend gets the packet with the client's address (DNAT); a
 * remote one gets it from this node's address (DNAT + SNAT) so that the
 * replies come back here to be translated. `tracked` is the flow's entry
 * when the packet followed one (where a FIB result is kept), else NULL.
 */
static __always_inline enum kpx_verdict
kpx_nat_ingress(void *ctx, __u32 ifindex, const struct kpx_pkt *p, struct kpx_ct *out, struct kpx_ct **tracked)
{
	const struct kpx_ct_key *t = &p->tuple;
	__u64 now = kpx_now_ns();
	struct kpx_ct *ct;
	bool stale = false;

	*tracked = NULL;
	ct = bpf_map_lookup_elem(&kpx_ct, t);
	if (ct) {
		bool new_syn = (p->tcp_flags & (KPX_TCP_SYN | KPX_TCP_ACK)) == KPX_TCP_SYN && (ct->flags & KPX_CT_CLOSING);

		if (ct->flags & KPX_CT_REPLY) {
			if (!(ct->flags & KPX_CT_REDIRECT))
				return KPX_PASS; /* a local backend's reply; egress handles it */
			kpx_ct_touch(ct, p, now);
			*out = *ct;
			*tracked = ct;
			kpx_count(KPX_STAT_REPLY);
			return KPX_TRANSLATE;
		}
		/* A TCP connection stays on its backend whatever the Service does
		 * since, as kube-proxy's conntrack keeps it: a terminating pod
		 * drains its connections, and mid-stream packets sent elsewhere
		 * would only be reset. A UDP flow, whose entry kube-proxy clears
		 * when its endpoint goes, and a new connection pick again. */
		bool recheck = t->proto != IPPROTO_TCP || (p->tcp_flags & (KPX_TCP_SYN | KPX_TCP_ACK)) == KPX_TCP_SYN;

		if (!new_syn && !kpx_ct_expired(ct, t->proto, now) && !(recheck && kpx_ct_backend_gone(ct))) {
			kpx_ct_touch(ct, p, now);
			*out = *ct;
			*tracked = ct;
			kpx_count(KPX_STAT_FORWARD);
			return KPX_TRANSLATE;
		}
		stale = true;
	}

	struct kpx_frontend *fe = kpx_lookup_service(t->daddr, t->dport, t->proto);

	if (!fe || fe->kind == KPX_KIND_CLUSTER_IP)
		return KPX_PASS;
	if (fe->backend_count == 0)
		return KPX_DROP;
	__u32 backend_id;
	struct kpx_backend *be = kpx_select_backend(fe, &backend_id);

	if (!be)
		return KPX_PASS;
	if (stale) {
		struct kpx_ct_key old_reply = kpx_ct_reverse(ct, t->proto);

		bpf_map_delete_elem(&kpx_ct, &old_reply);
	}

	struct kpx_ct fwd = {
		.saddr = t->saddr,
		.daddr = be->addr,
		.sport = t->sport,
		.dport = be->port,
		.backend_id = backend_id,
		.last_seen_ns = now,
	};
	struct kpx_ct reply = {
		.saddr = t->daddr,
		.daddr = t->saddr,
		.sport = t->dport,
		.dport = t->sport,
		.last_seen_ns = now,
		.flags = KPX_CT_REPLY,
	};

	if (be->flags & KPX_BACKEND_LOCAL) {
		struct kpx_ct_key rkey = kpx_ct_reverse(&fwd, t->proto);

		bpf_map_update_elem(&kpx_ct, &rkey, &reply, BPF_ANY);
	} else {
		if (kpx_route_new_flow(ctx, ifindex, &fwd) < 0)
			return KPX_DROP;
		fwd.flags = KPX_CT_REDIRECT;
		reply.flags |= KPX_CT_REDIRECT;
		if (kpx_claim_snat_port(&fwd, &reply, t->proto, now) < 0)
			return KPX_DROP;
	}
	bpf_map_update_elem(&kpx_ct, t, &fwd, BPF_ANY);
	*out = fwd;
	kpx_count(KPX_STAT_NEW_FLOW);
	return KPX_TRANSLATE;
}

#endif
