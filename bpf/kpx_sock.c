// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level Service translation: a process in the attached cgroup that
 * connects or sends to a Service frontend is given a backend address once,
 * at connect()/sendmsg() time, so its packets never need NAT. recvmsg and
 * getpeername translate back, so the application only ever sees the Service.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/errno.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "include/kpx_lb.h"

#define SYS_PROCEED 1
#define SYS_REJECT 0

static __always_inline __u8 kpx_sock_proto(const struct bpf_sock_addr *ctx)
{
	return ctx->protocol == IPPROTO_UDP ? IPPROTO_UDP : IPPROTO_TCP;
}

/* The call goes on to addr:port in place of the address it was given. */
static __always_inline int kpx_proceed_to(struct bpf_sock_addr *ctx, __be32 addr, __be16 port)
{
	ctx->user_ip4 = addr;
	ctx->user_port = (__u32)port;
	return SYS_PROCEED;
}

/* A connected socket (connect(): TCP, or UDP) keeps its one mapping in its
 * own storage, which dies with it and is never evicted. */
static __always_inline int kpx_remember_peer(struct bpf_sock_addr *ctx, const struct kpx_slot *slot, __be32 addr, __be16 port)
{
	struct kpx_sock_peer *peer;

	peer = bpf_sk_storage_get(&kpx_sock_peer, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!peer)
		return -1;
	peer->backend_addr = slot->addr;
	peer->backend_port = slot->port;
	peer->addr = addr;
	peer->port = port;
	return 0;
}

/* An unconnected UDP socket may send to several Services: one LRU entry per
 * socket and backend. Most sendto()s repeat the last mapping, and a lookup
 * costs far less than a write. Returns whether the mapping was known. */
static __always_inline bool kpx_remember_revnat(__u64 cookie, const struct kpx_slot *slot, __be32 addr, __be16 port)
{
	struct kpx_sock_revnat_key rkey = {
		.cookie = cookie,
		.backend_addr = slot->addr,
		.backend_port = slot->port,
	};
	struct kpx_sock_revnat rval = {
		.addr = addr,
		.port = port,
	};
	struct kpx_sock_revnat *known = bpf_map_lookup_elem(&kpx_sock_revnat, &rkey);

	if (known && known->addr == addr && known->port == port)
		return true;
	bpf_map_update_elem(&kpx_sock_revnat, &rkey, &rval, BPF_ANY);
	return false;
}

/* Keeps a sendto()'s translation in the socket for the next one (struct
 * kpx_sock_sendto): in the storage it has, or, once a mapping repeats, in
 * new storage. Not while kpx_sync_seq is odd: the tables may be half
 * written, and a sync that failed leaves it odd through the next one's
 * writes, which would not make the translation stale. */
static __always_inline void kpx_keep_sendto(struct bpf_sock_addr *ctx, struct kpx_sock_sendto *last, bool repeat, __u64 seq,
					    const struct kpx_slot *slot, __u32 index, __be32 addr, __be16 port)
{
	if (seq & 1)
		return;
	if (!last) {
		if (!repeat)
			return;
		last = bpf_sk_storage_get(&kpx_sock_sendto, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!last)
			return;
	}
	last->sync_seq = seq;
	last->addr = addr;
	last->port = port;
	last->slot = (__u16)index;
	last->backend_addr = slot->addr;
	last->backend_port = slot->port;
}

/* The backend choice of an unconnected socket's sendto(): fixed per socket,
 * so all its datagrams to a Service reach one backend while the Service's
 * endpoints stay the same, as one conntrack flow does under kube-proxy (a
 * protocol of several datagrams, such as QUIC from an unconnected socket,
 * needs that). The cookie's bits are mixed, since cookies count up. */
static __always_inline __u32 kpx_socket_pick(__u64 cookie)
{
	return (__u32)((cookie * 0x9e3779b97f4a7c15ULL) >> 32);
}

/* The frontend ctx addresses, or NULL when the call proceeds untouched or
 * is refused (*verdict says which). */
static __always_inline struct kpx_frontend *kpx_frontend_of(struct bpf_sock_addr *ctx, bool connecting, int *verdict)
{
	__u8 proto = kpx_sock_proto(ctx);
	struct kpx_frontend *fe;

	*verdict = SYS_PROCEED;
	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return NULL;
	fe = kpx_lookup_service(ctx->user_ip4, (__be16)ctx->user_port, proto);
	if (!fe) {
		/* A UDP socket may connect again, here straight to an address: what
		 * it kept from a Service connect must not name its new peer. Only
		 * UDP: on a TCP connect the check cost ~50-100 ns here (a cold line
		 * of the socket), and a TCP socket connects once. */
		if (connecting && proto == IPPROTO_UDP)
			bpf_sk_storage_delete(&kpx_sock_peer, ctx->sk);
		return NULL;
	}
	if (fe->backend_count == 0) {
		/* kube-proxy REJECTs a Service without endpoints: fail at once
		 * with the errno a refused connection gives. */
		bpf_set_retval(-ECONNREFUSED);
		*verdict = SYS_REJECT;
		return NULL;
	}
	return fe;
}

SEC("cgroup/connect4")
int kpx_connect4(struct bpf_sock_addr *ctx)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	struct kpx_frontend *fe;
	struct kpx_slot *slot;
	int verdict;

	fe = kpx_frontend_of(ctx, true, &verdict);
	if (!fe)
		return verdict;
	slot = kpx_select_slot(fe, bpf_get_prandom_u32());
	if (!slot)
		return SYS_PROCEED;
	/* Socket storage can only fail to allocate: the LRU still answers. */
	if (kpx_remember_peer(ctx, slot, addr, port) < 0)
		kpx_remember_revnat(bpf_get_socket_cookie(ctx), slot, addr, port);
	return kpx_proceed_to(ctx, slot->addr, slot->port);
}

SEC("cgroup/sendmsg4")
int kpx_sendmsg4(struct bpf_sock_addr *ctx)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	struct kpx_frontend *fe;
	struct kpx_slot *slot;
	int verdict;

	/* Most datagrams go elsewhere: they skip the socket storage too. */
	if (!kpx_may_be_service(addr, port))
		return SYS_PROCEED;
	/* Read before the tables: a sync that lands after this read makes
	 * what is kept below stale at once. */
	__u64 seq = kpx_sync_seq_now();
	struct kpx_sock_sendto *last = bpf_sk_storage_get(&kpx_sock_sendto, ctx->sk, 0, 0);

	if (last && last->sync_seq == seq && last->addr == addr && last->port == port)
		return kpx_proceed_to(ctx, last->backend_addr, last->backend_port);
	fe = kpx_frontend_of(ctx, false, &verdict);
	if (!fe)
		return verdict;
	/* The tables changed since this socket's last sendto() to this Service:
	 * it stays on its backend while the Service lists it, as a kube-proxy
	 * conntrack flow stays on an endpoint that still serves. (While a sync
	 * rewrites the Service's slots, a backend that moves from one slot to
	 * another is missing for a moment: a sendto then picks again.) */
	if (last && last->addr == addr && last->port == port) {
		int listed = kpx_service_slot_of(fe->service_id, last->backend_addr, last->backend_port, last->slot);

		if (listed >= 0) {
			if (!(seq & 1)) {
				last->sync_seq = seq;
				last->slot = (__u16)listed;
			}
			return kpx_proceed_to(ctx, last->backend_addr, last->backend_port);
		}
	}
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 index = kpx_slot_index(fe, kpx_socket_pick(cookie));

	slot = kpx_slot_at(fe->service_id, index);
	if (!slot)
		return SYS_PROCEED;
	kpx_keep_sendto(ctx, last, kpx_remember_revnat(cookie, slot, addr, port), seq, slot, index, addr, port);
	return kpx_proceed_to(ctx, slot->addr, slot->port);
}

/* Shows the Service address in place of the backend the socket talks to. */
static __always_inline int kpx_untranslate4(struct bpf_sock_addr *ctx)
{
	__be32 backend_addr = ctx->user_ip4;
	__be16 backend_port = (__be16)ctx->user_port;
	struct kpx_sock_peer *peer;

	peer = bpf_sk_storage_get(&kpx_sock_peer, ctx->sk, 0, 0);
	/* The storage speaks for the socket's connection only: a UDP socket
	 * disconnected (connect AF_UNSPEC, which runs no program) keeps it. */
	if (peer && ctx->sk->dst_ip4 == backend_addr && peer->backend_addr == backend_addr && peer->backend_port == backend_port)
		return kpx_proceed_to(ctx, peer->addr, peer->port);

	/* An unconnected socket: its last sendto() first, whether or not the
	 * tables changed since (it did send to that Service), then the LRU. */
	struct kpx_sock_sendto *last = bpf_sk_storage_get(&kpx_sock_sendto, ctx->sk, 0, 0);

	if (last && last->backend_addr == backend_addr && last->backend_port == backend_port)
		return kpx_proceed_to(ctx, last->addr, last->port);

	struct kpx_sock_revnat_key rkey = {
		.cookie = bpf_get_socket_cookie(ctx),
		.backend_addr = backend_addr,
		.backend_port = backend_port,
	};
	struct kpx_sock_revnat *rval;

	rval = bpf_map_lookup_elem(&kpx_sock_revnat, &rkey);
	return rval ? kpx_proceed_to(ctx, rval->addr, rval->port) : SYS_PROCEED;
}

SEC("cgroup/recvmsg4")
int kpx_recvmsg4(struct bpf_sock_addr *ctx)
{
	return kpx_untranslate4(ctx);
}

SEC("cgroup/getpeername4")
int kpx_getpeername4(struct bpf_sock_addr *ctx)
{
	return kpx_untranslate4(ctx);
}

/* A local socket bound to an address:port kpx serves would never see its
 * traffic (the programs translate it first) and would mislead whoever runs
 * it: refuse the bind as taken. A wildcard bind conflicts with NodePorts,
 * which answer on every node address. */
SEC("cgroup/post_bind4")
int kpx_post_bind4(struct bpf_sock *sk)
{
	__be32 addr = sk->src_ip4;
	__be16 port = bpf_htons((__u16)sk->src_port);
	__u8 proto;

	if (sk->protocol == IPPROTO_TCP)
		proto = IPPROTO_TCP;
	else if (sk->protocol == IPPROTO_UDP)
		proto = IPPROTO_UDP;
	else
		return SYS_PROCEED;
	if (!kpx_lookup_service(addr, port, proto))
		return SYS_PROCEED;
	bpf_set_retval(-EADDRINUSE);
	return SYS_REJECT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
