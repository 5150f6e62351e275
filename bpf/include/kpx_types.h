/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The contract between the control plane and the dataplane: the key and
 * value layouts of every kpx map. src/contract/codecs.ts mirrors these
 * structs field by field; test/unit/btf-contract.test.ts compares both
 * against the BTF of the committed objects. Addresses and ports are kept in
 * network byte order, as the kernel hands them to the programs.
 */
#ifndef KPX_TYPES_H
#define KPX_TYPES_H

#include <linux/types.h>

/* Frontend kinds, one per way a Service is addressed. */
#define KPX_KIND_CLUSTER_IP 1
#define KPX_KIND_NODE_PORT 2
#define KPX_KIND_EXTERNAL_IP 3
#define KPX_KIND_LOAD_BALANCER 4

/* Endpoint states, as EndpointSlice conditions define them. */
#define KPX_STATE_READY 0
#define KPX_STATE_SERVING_TERMINATING 1

/* Why a Service is recorded in kpx_services without frontends. */
#define KPX_SKIP_NONE 0
#define KPX_SKIP_EXTERNAL_NAME 1
#define KPX_SKIP_HEADLESS 2
#define KPX_SKIP_SERVICE_PROXY_NAME 3

/* Sizes of the name fields: Kubernetes caps namespaces and Service names at
 * 63 characters (DNS-1035 label) and port names at 15 (IANA service name). */
#define KPX_NAME_LEN 64
#define KPX_PORT_NAME_LEN 16

/* kpx_frontends: one entry per address:port/protocol a Service answers on. */
struct kpx_frontend_key {
	__be32 addr;
	__be16 port;
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP */
	__u8 pad;
};

struct kpx_frontend {
	__u32 service_id;
	/* Copied into every frontend of the service so that a connect needs no
	 * lookup beyond frontend and slot. 0 means reject. */
	__u16 backend_count;
	__u8 kind; /* KPX_KIND_* */
	__u8 pad;
};

/* kpx_slots: the usable backends of a service port, slots 0..count-1,
 * then its draining endpoints (serving terminating ones while ready ones
 * take the new flows) up to the first slot missing: no new flow goes to
 * those, but the flows they have stay (kpx_service_slot_of). */
struct kpx_slot_key {
	__u32 service_id;
	__u32 slot;
};

/* The backend's address rides in the slot (it never changes while the ID
 * is held), so a connect() or sendmsg() needs no kpx_backends lookup: a
 * cold one cost about 250 ns of a connect here. */
struct kpx_slot {
	__u32 backend_id;
	__be32 addr;
	__be16 port;
	__u8 state; /* KPX_STATE_* of this endpoint in this service */
	__u8 pad;
};

/* kpx_backend.flags */
/* The endpoint runs on this node: packets from outside are only DNATed and
 * handed to the stack, and replies are translated back on their way out. */
#define KPX_BACKEND_LOCAL 1

/* kpx_backends: backend_id -> where traffic goes. */
struct kpx_backend {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 flags; /* KPX_BACKEND_* */
};

/* kpx_services: service_id -> identity, read back by `kpx list` (no
 * program reads it). A Service kpx deliberately leaves alone is recorded
 * here too, with its reason and no frontend, so the kernel state alone can
 * say why it is not programmed. */
struct kpx_service {
	char namespace[KPX_NAME_LEN];
	char name[KPX_NAME_LEN];
	char port_name[KPX_PORT_NAME_LEN];
	__u8 proto;
	__u8 skip_reason; /* KPX_SKIP_* */
	__u8 pad[6];
};

/* kpx_sock_revnat: where an unconnected UDP socket's sendto() to a Service
 * really went, so recvmsg can show the application the Service address as
 * the source of the replies. One socket may talk to several backends. */
struct kpx_sock_revnat_key {
	__u64 cookie;
	__be32 backend_addr;
	__be16 backend_port;
	__u16 pad;
};

struct kpx_sock_revnat {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* kpx_sock_peer: the socket-local storage of a connected socket (TCP, or
 * UDP after connect()) that kpx translated: the backend it is connected to
 * and the Service it asked for. It lives and dies with the socket, so a
 * long-lived connection keeps it however many other sockets come and go. */
struct kpx_sock_peer {
	__be32 backend_addr;
	__be16 backend_port;
	__u16 pad;
	__be32 addr;
	__be16 port;
	__u16 pad2;
};

/* kpx_sock_sendto: an unconnected UDP socket's last sendto() translation.
 * While kpx_sync_seq still reads sync_seq, the tables are as they were when
 * it was made, so a sendto to the same Service takes it without a lookup:
 * most sockets repeat one destination. Made on a socket's second sendto to
 * a Service, so a socket that sends once never pays for its storage. */
struct kpx_sock_sendto {
	__u64 sync_seq;
	__be32 addr;
	__be16 port;
	__u16 slot; /* where the Service listed the backend: looked at first once the tables change */
	__be32 backend_addr;
	__be16 backend_port;
	__u16 pad2;
};

/* kpx_node_addrs: the node addresses that answer NodePorts (kube-proxy's
 * --nodeport-addresses). A NodePort is one kpx_frontends entry with addr 0;
 * a packet or socket for <addr>:<port> reaches it when addr is listed here.
 * The value is always 1: presence is the fact. */

/* kpx_filter: one entry (key 0), the destinations that may have a
 * frontend. Most connects, datagrams and packets that reach a kpx program
 * are for no Service at all; two bit tests turn them away where the
 * frontend and node address lookups (hash maps, cold for such traffic) took
 * about 300 ns of a connect here. A set bit means "look it up": for every
 * frontend with an address, the bit of addr_bits that kpx_filter_has_addr
 * (kpx_lb.h) tests for it; bit <port> (host order) of nodeport_bits for
 * every NodePort. */
#define KPX_FILTER_ADDR_MUL 2654435761 /* 2^32 / golden ratio, odd */
/* 2^20 address bits: at 100,000 frontend addresses 9% of them are set (a
 * set of 2^16 was 78% full there, and let most traffic through). */
#define KPX_FILTER_ADDR_SHIFT 12
#define KPX_FILTER_ADDR_WORDS 16384
#define KPX_FILTER_PORT_WORDS 1024 /* a bit per port */

struct kpx_filter {
	__u64 addr_bits[KPX_FILTER_ADDR_WORDS];
	__u64 nodeport_bits[KPX_FILTER_PORT_WORDS];
};

/* kpx_ct: connection tracking for packets translated at tc/XDP. Each flow
 * has two entries: the forward one, keyed by the packet as the client sent
 * it, and the reply one, keyed by the packet as the backend answers. Both
 * say how to rewrite a matching packet. */
#define KPX_CT_REPLY 1	  /* entry translates replies back to the client */
#define KPX_CT_REDIRECT 2 /* rewritten packet goes back out (SNAT flow) */
#define KPX_CT_CLOSING 4  /* a FIN or RST was seen: short timeout */

/* kpx_ct.fib: how much of a redirected flow's last FIB result its entry
 * holds (a forward entry is written with the next hop its first packet was
 * routed by; XDP adds the Ethernet addresses, a reply entry gets its own
 * from its first packet). An established flow then costs no FIB lookup per
 * packet (about half of its cost at tc and XDP); the result is dropped each
 * time last_seen_ns is refreshed, so a route or neighbour change reaches a
 * tracked flow within a second. */
#define KPX_FIB_NONE 0	  /* nothing: look it up */
#define KPX_FIB_NEXTHOP 1 /* fib_ifindex and fib_nexthop, as tc's bpf_redirect_neigh takes them */
#define KPX_FIB_L2 2	  /* those and the Ethernet addresses, as XDP writes them */

struct kpx_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct kpx_ct {
	/* The tuple the packet leaves with. */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	/* Forward entries: the backend chosen, checked on every packet so a
	 * flow whose backend is gone picks a new one. */
	__u32 backend_id;
	__u64 last_seen_ns; /* kpx_now_ns() (CLOCK_MONOTONIC, by the tick), refreshed at most every second */
	__u8 flags;	    /* KPX_CT_* */
	__u8 fib;	    /* KPX_FIB_*: which of the fib_ members below hold the flow's last FIB result */
	__u8 pad[2];
	__u32 fib_ifindex;  /* where the rewritten packet leaves */
	__be32 fib_nexthop; /* the gateway, or the destination itself when on-link */
	__u8 fib_dmac[6];
	__u8 fib_smac[6];
};

/* kpx_stats: per-CPU packet counts by the path a packet took through the
 * tc/XDP programs, one slot per value below. Each program run counts: a
 * packet XDP passes on to tc is counted again there, and a translated
 * packet that is then dropped counts on its path and as a drop. Packets
 * that are not kpx's are not counted, so the miss path stays cheap. */
enum kpx_stat {
	KPX_STAT_NEW_FLOW,    /* a new flow was tracked and its first packet translated */
	KPX_STAT_FORWARD,     /* a packet of a tracked flow translated towards its backend */
	KPX_STAT_REPLY,       /* a remote backend's reply translated back at ingress */
	KPX_STAT_LOCAL_REPLY, /* a local backend's reply translated back at egress */
	KPX_STAT_DROP,	      /* kpx's packet, but it could not be delivered */
	KPX_STAT_COUNT,
};

#endif
