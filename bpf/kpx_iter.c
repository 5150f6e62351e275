// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Connected UDP sockets whose backend left their Service. connect() gave
 * such a socket a backend once (kpx_connect4), and no program runs on its
 * send()s: it would send to the old backend for ever, where kube-proxy's
 * conntrack cleanup moves the flow. This iterator walks the UDP sockets of
 * one network namespace (the one that opens it) and aborts each socket kpx
 * translated whose backend its Service no longer lists (a draining endpoint
 * still counts: kpx_service_slot_of), or whose Service is gone, as Cilium
 * does: its next send() fails, and the application connects again, to a
 * backend that serves. The reader gets one byte per socket aborted. A
 * separate object, so that a kernel built without bpf_sock_destroy loads
 * the rest.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "include/kpx_lb.h"

/* The kernel's types, as far as this program reads them; CO-RE places
 * the fields as the running kernel lays them out. */
struct sock_common___kpx {
	unsigned short skc_family;
	__be32 skc_daddr;
	__be16 skc_dport;
} __attribute__((preserve_access_index));

struct sock___kpx {
	struct sock_common___kpx __sk_common;
} __attribute__((preserve_access_index));

struct bpf_iter_meta___kpx {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__udp___kpx {
	struct bpf_iter_meta___kpx *meta;
	struct sock___kpx *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common___kpx *sock) __ksym;

#define KPX_AF_INET 2

SEC("iter/udp")
int kpx_udp_stale_sockets(struct bpf_iter__udp___kpx *ctx)
{
	struct sock___kpx *sk = ctx->udp_sk;

	if (!sk || sk->__sk_common.skc_family != KPX_AF_INET)
		return 0;
	struct kpx_sock_peer *peer = bpf_sk_storage_get(&kpx_sock_peer, sk, 0, 0);
	__be32 daddr = sk->__sk_common.skc_daddr;
	__be16 dport = sk->__sk_common.skc_dport;

	/* Only a socket connected to the backend kpx gave it. */
	if (!peer || peer->backend_addr != daddr || peer->backend_port != dport)
		return 0;
	/* The tables are read between two looks at kpx_sync_seq: while the agent
	 * writes them, a backend that stays may be missing for a moment (slots
	 * move), so nothing is aborted then; the sweep after that sync looks
	 * again. */
	__u64 seq = kpx_sync_seq_now();

	if (seq & 1)
		return 0;
	/* As kpx_connect4 found it: a NodePort by its wildcard key too. */
	struct kpx_frontend *fe = kpx_lookup_service(peer->addr, peer->port, IPPROTO_UDP);
	/* A Service with more slots than are looked at keeps its sockets. */
	bool listed = fe && kpx_service_slot_of(fe->service_id, daddr, dport, 0) != KPX_NOT_LISTED;

	asm volatile("" ::: "memory");
	if (listed || kpx_sync_seq_now() != seq)
		return 0;
	/* One byte out per socket aborted: the reader counts them. */
	if (bpf_sock_destroy(&sk->__sk_common) == 0)
		bpf_seq_write(ctx->meta->seq, "x", 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
