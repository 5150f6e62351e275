/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Backend selection, shared by the socket and packet programs. */
#ifndef KPX_LB_H
#define KPX_LB_H

#include <stdbool.h>
#include <bpf/bpf_endian.h>
#include "kpx_maps.h"

static __always_inline struct kpx_frontend *
kpx_lookup_frontend(__be32 addr, __be16 port, __u8 proto)
{
	struct kpx_frontend_key key = {
		.addr = addr,
		.port = port,
		.proto = proto,
	};

	return bpf_map_lookup_elem(&kpx_frontends, &key);
}

/* Multiply-shift: the top 20 bits of addr (as it lies in memory) times an
 * odd constant, mod 2^32, so that neighbouring addresses spread. */
static __always_inline bool kpx_filter_has_addr(const struct kpx_filter *filter, __be32 addr)
{
	__u32 bit = (__u32)(addr * (__u32)KPX_FILTER_ADDR_MUL) >> KPX_FILTER_ADDR_SHIFT;

	return filter->addr_bits[(bit >> 6) & (KPX_FILTER_ADDR_WORDS - 1)] & (1ULL << (bit & 63));
}

static __always_inline bool kpx_filter_has_nodeport(const struct kpx_filter *filter, __be16 port)
{
	__u32 bit = bpf_ntohs(port);

	return filter->nodeport_bits[(bit >> 6) & (KPX_FILTER_PORT_WORDS - 1)] & (1ULL << (bit & 63));
}

/* False when addr:port reaches no frontend, as kpx_filter says for most
 * destinations at the cost of an array read: a program with work to do
 * before kpx_lookup_service skips it for them. */
static __always_inline bool kpx_may_be_service(__be32 addr, __be16 port)
{
	__u32 zero = 0;
	struct kpx_filter *filter = bpf_map_lookup_elem(&kpx_filter, &zero);

	return filter && (kpx_filter_has_addr(filter, addr) || kpx_filter_has_nodeport(filter, port));
}

/* The frontend a packet or socket for addr:port reaches: an exact entry
 * (ClusterIP, externalIP, LoadBalancer IP), else the NodePort when addr is
 * one of the node addresses that answer NodePorts, or 0. kpx_filter answers
 * "none" for most destinations without a hash lookup. */
static __always_inline struct kpx_frontend *
kpx_lookup_service(__be32 addr, __be16 port, __u8 proto)
{
	__u32 zero = 0;
	struct kpx_filter *filter = bpf_map_lookup_elem(&kpx_filter, &zero);
	struct kpx_frontend *fe;

	if (!filter)
		return NULL;
	if (kpx_filter_has_addr(filter, addr)) {
		fe = kpx_lookup_frontend(addr, port, proto);
		if (fe)
			return fe;
	}
	if (!kpx_filter_has_nodeport(filter, port))
		return NULL;
	/* Address 0 (a wildcard bind) is the NodePort's own key. */
	if (addr != 0 && !bpf_map_lookup_elem(&kpx_node_addrs, &addr))
		return NULL;
	return kpx_lookup_frontend(0, port, proto);
}

static __always_inline struct kpx_slot *kpx_slot_at(__u32 service_id, __u32 index)
{
	struct kpx_slot_key key = { .service_id = service_id, .slot = index };

	return bpf_map_lookup_elem(&kpx_slots, &key);
}

/* The slot kpx_select_slot takes for `pick`: the high half of pick ×
 * count, as even as a modulo (both off by at most count / 2^32) without a
 * division, which is the costliest instruction on this path. */
static __always_inline __u32 kpx_slot_index(const struct kpx_frontend *fe, __u32 pick)
{
	return (__u32)(((__u64)pick * fe->backend_count) >> 32);
}

/* Picks the frontend's slot for `pick`, a uniform 32-bit value (random for
 * a new connection): the backend's ID and address. NULL when the table is
 * mid-update in a way the write order should make impossible; callers then
 * leave the packet or socket untouched rather than guess. */
static __always_inline struct kpx_slot *kpx_select_slot(const struct kpx_frontend *fe, __u32 pick)
{
	return kpx_slot_at(fe->service_id, kpx_slot_index(fe, pick));
}

/* Slots kpx_service_slot_of looks at. */
#define KPX_LISTED_MAX_SLOTS 1024
/* kpx_service_slot_of: the Service does not list the backend. */
#define KPX_NOT_LISTED (-1)
/* kpx_service_slot_of: the Service has more slots than are looked at. */
#define KPX_LISTED_UNKNOWN (-2)

/* Where a Service still lists addr:port: the slot, one that takes new
 * flows or a draining one after them (struct kpx_slot_key), as kube-proxy's
 * conntrack cleanup leaves the flows of an endpoint that still serves. The
 * slot `hint` is looked at first: where the backend was last time. */
static __always_inline int kpx_service_slot_of(__u32 service_id, __be32 addr, __be16 port, __u32 hint)
{
	struct kpx_slot *slot = kpx_slot_at(service_id, hint);

	if (slot && slot->addr == addr && slot->port == port)
		return (int)hint;
	for (__u32 i = 0; i < KPX_LISTED_MAX_SLOTS; i++) {
		slot = kpx_slot_at(service_id, i);
		if (!slot)
			return KPX_NOT_LISTED;
		if (slot->addr == addr && slot->port == port)
			return (int)i;
	}
	return KPX_LISTED_UNKNOWN;
}

/* As kpx_select_slot for a new flow, with the whole backend entry (its
 * flags) for the packet programs. */
static __always_inline struct kpx_backend *
kpx_select_backend(const struct kpx_frontend *fe, __u32 *backend_id)
{
	struct kpx_slot *slot = kpx_select_slot(fe, bpf_get_prandom_u32());

	if (!slot)
		return NULL;
	*backend_id = slot->backend_id;
	struct kpx_backend *be = bpf_map_lookup_elem(&kpx_backends, &slot->backend_id);

	/* An array entry never written reads as zeros: no backend. */
	return be && be->addr ? be : NULL;
}

#endif
