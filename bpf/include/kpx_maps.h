/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map definitions shared by every kpx program. The control plane pins each
 * map under its bpffs folder by this name and may resize them before load
 * (--table sizes); the max_entries below are the defaults.
 *
 * The control-plane tables are preallocated: a full sync writes hundreds of
 * thousands of entries, and a preallocated hash takes a batch of 100,000
 * in about a third of the time an allocating one does (25 vs 73 ms here),
 * for some 55 MB of kernel memory at the default sizes. The tables keyed by
 * the dense IDs the control plane hands out (from 1) are arrays: a write
 * costs about half a hash's (26 vs 46-59 ms per 100,000 here), a lookup is
 * an index the verifier inlines, and an entry costs its value alone. An
 * absent entry is all zeros (no backend or Service has address or name 0).
 */
#ifndef KPX_MAPS_H
#define KPX_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "kpx_types.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct kpx_frontend_key);
	__type(value, struct kpx_frontend);
	__uint(max_entries, 65536);
} kpx_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct kpx_slot_key);
	__type(value, struct kpx_slot);
	__uint(max_entries, 262144);
} kpx_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kpx_backend);
	__uint(max_entries, 262144);
} kpx_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kpx_service);
	__uint(max_entries, 65536);
} kpx_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kpx_sock_revnat_key);
	__type(value, struct kpx_sock_revnat);
	__uint(max_entries, 262144);
} kpx_sock_revnat SEC(".maps");

/* Not sized: an entry lives in its socket, as many as there are sockets. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kpx_sock_peer);
} kpx_sock_peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kpx_sock_sendto);
} kpx_sock_sendto SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u32);
	__uint(max_entries, 256);
} kpx_node_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kpx_filter);
	__uint(max_entries, 1);
} kpx_filter SEC(".maps");

/* Bumped by the agent before it writes the tables (odd) and after (even):
 * a reader that must not act on a half-written update checks it is even
 * and unchanged around what it reads (kpx_iter.c), and kpx_sendmsg4 keeps
 * a translation only under an even value, for as long as it holds. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} kpx_sync_seq SEC(".maps");

/* kpx_sync_seq now; odd (mid-update) when the map cannot be read. */
static __always_inline __u64 kpx_sync_seq_now(void)
{
	__u32 key = 0;
	__u64 *seq = bpf_map_lookup_elem(&kpx_sync_seq, &key);

	return seq ? *(volatile __u64 *)seq : 1;
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kpx_ct_key);
	__type(value, struct kpx_ct);
	__uint(max_entries, 262144);
} kpx_ct SEC(".maps");

/* Indexed by enum kpx_stat; per-CPU, so counting costs no shared write. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, KPX_STAT_COUNT);
} kpx_stats SEC(".maps");

#endif
