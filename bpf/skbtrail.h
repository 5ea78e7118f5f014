/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Types shared between the kernel programs and Go (through bpf2go -type). */
#ifndef SKBTRAIL_H
#define SKBTRAIL_H

#define SKBTRAIL_IFNAMSIZ 16
#define SKBTRAIL_MAX_TUNNEL_PORTS 4
#define SKBTRAIL_MAX_FILTERS 8
#define SKBTRAIL_SNAPLEN_MAX 256

/* What happened to the skb at this event. */
enum event_kind {
	EVENT_RX = 1,      /* netif_receive_skb: entered a device's receive path */
	EVENT_TX = 2,      /* net_dev_start_xmit: handed to a device's xmit */
	EVENT_DROP = 3,    /* kfree_skb with a drop reason */
	EVENT_CONSUME = 4, /* consume_skb: freed normally (delivered) */
	EVENT_NF = 5,      /* seen by a netfilter observer at (hook, stage) */
	EVENT_TUNNEL = 6,  /* a tunnel transmit function (kprobe backend) */
	EVENT_NF_VERDICT = 7, /* nf_hook_slow returned (kprobe backend) */
	EVENT_DELIVER = 8, /* sk_data_ready: queued to a local socket (the tail of its receive queue) */
};

/* Which kernel mechanism produced the event. */
enum event_source {
	SOURCE_TP = 1,      /* tp_btf tracepoint */
	SOURCE_NF = 2,      /* BPF netfilter link */
	SOURCE_KPROBE = 3,  /* kprobe / kretprobe */
};

/* Address families of a tuple (the IP version). */
enum addr_family {
	FAMILY_IPV4 = 4,
	FAMILY_IPV6 = 6,
};

/* One IP header view (IPv4 or IPv6): addresses in network byte order (an
 * IPv4 address in word 0, the other words 0), ports in host order. */
struct tuple {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;       /* L4 protocol (IPv6: after the extension headers) */
	__u8 tcp_flags;
	__u8 icmp_type;   /* ICMP or ICMPv6 */
	__u8 icmp_code;
	__u16 tot_len;    /* IP total length (IPv6: 40 + payload length) */
	__u8 family;      /* enum addr_family; 0: not parsed */
	__u8 frag;        /* 1: a fragment (IPv4 MF/offset, IPv6 fragment header) */
	__u32 icmp_mtu;   /* next-hop MTU of an ICMP frag-needed / ICMPv6 packet too big */
};

/* Key of the flow map: the part of a tuple that names a flow. */
struct flow_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

struct event {
	__u64 ts_ns;
	__u64 skb;
	__u64 journey;    /* id of the journey this skb belongs to (0: untracked drop) */
	__u32 netns;      /* inode of the device's (or socket's) network namespace */
	__u32 ifindex;
	__u32 reason;     /* enum skb_drop_reason for EVENT_DROP; verdict for EVENT_NF_VERDICT */
	__u32 len;        /* skb->len */
	__u32 mtu;        /* device mtu, 0 when no device */
	__u32 vni;        /* VXLAN network identifier when encap != 0 */
	__u8 kind;        /* enum event_kind */
	__u8 source;      /* enum event_source */
	__u8 hook;        /* netfilter hook (NF_INET_*) for EVENT_NF */
	__u8 stage;       /* index of the observer priority for EVENT_NF */
	__u8 encap;       /* 1: the packet is VXLAN-encapsulated; pkt is the inner header */
	__u8 ct;          /* 0: no conntrack entry attached; else 1 + enum ip_conntrack_info */
	__u8 quote;       /* 1: the skb is an ICMP error quoting a packet of the journey
	                   * (journey has the other direction's bit) */
	__u8 pad;
	struct tuple pkt;   /* innermost IP header */
	struct tuple outer; /* outer header when encap != 0 */
	char ifname[SKBTRAIL_IFNAMSIZ];
};

/* An event of a tracked skb with the packet's first bytes, written instead
 * of a bare struct event while a trace asks for bytes (settings.snaplen). */
struct event_cap {
	struct event ev;
	__u32 orig_len;   /* bytes from the start of data to the end of the packet */
	__u16 cap_len;    /* bytes in data */
	__u8 l2_len;      /* link-layer header bytes at the start of data (0: data starts at IP) */
	__u8 pad;
	__u8 data[SKBTRAIL_SNAPLEN_MAX];
};

/* What starts a journey (one slot per concurrent trace). Zero fields match
 * anything. */
struct filter {
	__u32 saddr[4];   /* network byte order, laid out as in struct tuple */
	__u32 smask[4];
	__u32 daddr[4];
	__u32 dmask[4];
	__u32 netns;      /* only packets first seen in this netns inode */
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 syn_only;
	__u8 enabled;     /* 0: this slot is free */
	__u8 family;      /* enum addr_family: only packets of this IP version; 0: any */
};

/* Settings of all programs. */
struct settings {
	__u32 active_filters; /* bit i set: filter slot i is enabled */
	__u16 tunnel_ports[SKBTRAIL_MAX_TUNNEL_PORTS]; /* UDP ports carrying VXLAN */
	__u8 drop_monitor;    /* 1: report every drop whose reason is not ignored */
	__u8 gate_netns;      /* 1: every active filter names a netns: untracked skbs of
	                       * namespaces no journey has visited are not parsed */
	__u8 any_netns;       /* 1: some active filter names a netns */
	__u8 pad;
	__u16 snaplen;        /* >0: events of tracked skbs carry this many packet bytes
	                       * (at most SKBTRAIL_SNAPLEN_MAX) as struct event_cap */
	__u8 pad2[2];
};

/* Per-CPU counters read by Go. */
enum stat_index {
	STAT_RINGBUF_FULL = 0, /* events lost because the ring buffer was full */
	STAT_TRACKED_FULL = 1, /* tracked-map insert failures */
	STAT_MONITOR_SHED = 2, /* drop-monitor events not written: the ring buffer was over half full */
	STAT_MAX = 3,
};

/* Kernel-side activity counters (one array entry, updated atomically). */
struct activity {
	__u64 inflight;     /* skbs in the tracked map (upper bound: evictions are not subtracted) */
	__u64 last_flow_ns; /* when a flow was last remembered */
};

#endif
