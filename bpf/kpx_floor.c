// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Floors, for the benchmarks only (the agent never loads this object): each
 * program does one thing that a kpx program cannot do without, and nothing
 * else, on the same calls as kpx's programs, so that a benchmark can say
 * what that one thing costs on this kernel and this machine. They use kpx's
 * own maps (the benchmark reuses the agent's pins), except the socket
 * storage, which must be created here rather than found.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "include/kpx_lb.h"
#include "include/kpx_pkt.h"

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kpx_sock_peer);
} kpx_floor_sock_peer SEC(".maps");

/* The least a connect() to a Service costs: one kpx_frontends lookup. */
SEC("cgroup/connect4")
int kpx_floor_frontend_lookup(struct bpf_sock_addr *ctx)
{
	struct kpx_frontend *volatile fe = kpx_lookup_frontend(ctx->user_ip4, (__be16)ctx->user_port, IPPROTO_TCP);

	(void)fe;
	return 1;
}

/* What getpeername() needs of a connect() to a Service: the socket's own
 * record of the Service address, created (kpx_connect4 writes the same). */
SEC("cgroup/connect4")
int kpx_floor_peer_record(struct bpf_sock_addr *ctx)
{
	struct kpx_sock_peer *peer = bpf_sk_storage_get(&kpx_floor_sock_peer, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (peer) {
		peer->addr = ctx->user_ip4;
		peer->port = (__be16)ctx->user_port;
	}
	return 1;
}

/* What a new flow cannot do without: its kpx_ct entry, inserted (a new flow
 * of kpx_xdp or kpx_tc_ingress inserts two, forward and reply). */
static __always_inline void kpx_floor_ct_insert(void *data, void *data_end)
{
	struct kpx_pkt p;

	if (kpx_parse(data, data_end, &p) < 0)
		return;
	struct kpx_ct fwd = {
		.saddr = p.tuple.saddr,
		.daddr = p.tuple.daddr,
		.sport = p.tuple.sport,
		.dport = p.tuple.dport,
	};

	bpf_map_update_elem(&kpx_ct, &p.tuple, &fwd, BPF_ANY);
}

SEC("xdp")
int kpx_floor_ct_insert_xdp(struct xdp_md *ctx)
{
	kpx_floor_ct_insert((void *)(long)ctx->data, (void *)(long)ctx->data_end);
	return XDP_PASS;
}

SEC("tc")
int kpx_floor_ct_insert_tc(struct __sk_buff *skb)
{
	kpx_floor_ct_insert((void *)(long)skb->data, (void *)(long)skb->data_end);
	return 0; /* TC_ACT_OK */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
