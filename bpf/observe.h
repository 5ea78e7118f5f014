// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * skbtrail: the logic every kernel program shares (maps, parsing, filter,
 * tracking). Each backend's .c file includes it once.
 *
 * Every program funnels into observe(): an skb already tracked reports an
 * event; an untracked skb is parsed and started as a journey only if it
 * matches the filter (or belongs to a flow of an existing journey). The
 * common path for an untracked packet while no trace is active is one array
 * lookup and one hash lookup.
 */
#ifndef SKBTRAIL_OBSERVE_H
#define SKBTRAIL_OBSERVE_H

#include "headers/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "skbtrail.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/*
 * Reading kernel structs: tp_btf and netfilter programs get trusted BTF
 * pointers and read fields with plain (CO-RE relocated) loads, no helper
 * call; kprobe programs (kprobe.c defines SKBTRAIL_KPROBE) must use
 * bpf_probe_read_kernel. SKB_RD(p, field) hides the difference for one hop.
 */
#ifdef SKBTRAIL_KPROBE
#define SKB_RD(p, field) BPF_CORE_READ(p, field)
#else
#define SKB_RD(p, field) ((p)->field)
#endif

#define ETH_P_IP_BE 0x0008 /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xdd86 /* htons(0x86dd) */
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_ICMP_ 1
#define IPPROTO_ICMPV6_ 58
#define IP_MF_ 0x2000
#define IP_OFFSET_ 0x1fff
#define IP6_OFFSET_MASK_ 0xfff8
#define ICMP_DEST_UNREACH_ 3
#define ICMP_TIME_EXCEEDED_ 11
#define ICMP_PARAMETERPROB_ 12
#define ICMP_FRAG_NEEDED_ 4
#define ICMPV6_DEST_UNREACH_ 1
#define ICMPV6_PKT_TOOBIG_ 2
#define ICMPV6_TIME_EXCEED_ 3
#define ICMPV6_PARAMPROB_ 4
#define ICMPV6_ECHO_REQUEST_ 128
#define ICMPV6_ECHO_REPLY_ 129
#define NEXTHDR_HOP_ 0
#define NEXTHDR_ROUTING_ 43
#define NEXTHDR_FRAGMENT_ 44
#define NEXTHDR_AUTH_ 51
#define NEXTHDR_DEST_ 60
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10
#define VXLAN_HLEN 8
#define ETH_HLEN_ 14
#define ARPHRD_ETHER_ 1

/* Force the generation of Go types for the shared structs. */
const struct event *unused_event __attribute__((unused));
const struct event_cap *unused_event_cap __attribute__((unused));
const struct filter *unused_filter __attribute__((unused));
const struct settings *unused_settings __attribute__((unused));
const struct activity *unused_activity __attribute__((unused));
const struct flow_key *unused_flow_key __attribute__((unused));
const enum addr_family *unused_addr_family __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));
const enum event_source *unused_event_source __attribute__((unused));
const enum stat_index *unused_stat_index __attribute__((unused));

#define RINGBUF_BYTES (1 << 22)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RINGBUF_BYTES);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} settings_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SKBTRAIL_MAX_FILTERS);
	__type(key, __u32);
	__type(value, struct filter);
} filters SEC(".maps");

struct skb_track {
	__u64 journey;
	struct flow_key last;
	__u8 quote; /* the skb is an ICMP error about the journey's packet */
	__u8 pad[7];
};

/* skb pointer -> journey: later events of the same skb need no matching. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct skb_track);
} tracked SEC(".maps");

/* flow -> journey (bit 0 set: the reverse direction). New skbs of a tracked
 * flow (clones, retransmits, replies) join through this map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct flow_key);
	__type(value, __u64);
} flows SEC(".maps");

/* What is in flight: lets every program skip the tracked-map lookup while
 * no skb is tracked, and the flow-map lookup while no flow is recent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct activity);
} activity_map SEC(".maps");

/* Replies and retransmits join through the flow map this long after the
 * last flow was remembered. */
#define FLOW_RECENT_NS (10ULL * 1000 * 1000 * 1000)

/* Journey ids: bit 0 is the direction (set on the reverse direction's
 * events), bits 1..7 the CPU that started the journey, the rest the start
 * time: two CPUs starting journeys in the same nanosecond get distinct ids
 * (wraps after 2^56 ns, about 2.3 years of uptime). */
#define JOURNEY_CPU_BITS 7
#define JOURNEY_CPU_MASK ((1U << JOURNEY_CPU_BITS) - 1)
static __always_inline __u64 new_journey_id(void)
{
	__u64 id = (bpf_ktime_get_ns() << (JOURNEY_CPU_BITS + 1)) |
		   ((__u64)(bpf_get_smp_processor_id() & JOURNEY_CPU_MASK) << 1);
	return id ? id : 2;
}

/* Namespaces where a journey started or passed (netns inode -> 1): with
 * gate_netns, only there can an untracked skb start or join a journey
 * (first sightings in the filter's netns, replies and retransmits where the
 * journey went). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} netns_seen SEC(".maps");

/* Is netns in netns_seen? Looked up at most once per program run. */
static __always_inline int netns_was_seen(__u32 netns, int *seen)
{
	if (*seen < 0)
		*seen = bpf_map_lookup_elem(&netns_seen, &netns) != NULL;
	return *seen;
}

/* Drop reasons the drop monitor does not report. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} ignored_reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

static __always_inline __u32 netns_of(struct sk_buff *skb, struct net_device *dev)
{
#ifdef SKBTRAIL_KPROBE
	if (dev)
		return BPF_CORE_READ(dev, nd_net.net, ns.inum);
	struct sock *sk = BPF_CORE_READ(skb, sk);
	if (sk)
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return 0;
#else
	if (dev)
		return dev->nd_net.net->ns.inum;
	struct sock *sk = skb->sk;
	if (sk)
		return sk->__sk_common.skc_net.net->ns.inum;
	return 0;
#endif
}

/* Fill the L4 part of a tuple from hdr, the first bytes of the L4 header. */
static __always_inline void l4_fields(const __u8 *hdr, struct tuple *t)
{
	if (t->proto == IPPROTO_TCP_ || t->proto == IPPROTO_UDP_) {
		t->sport = ((__u16)hdr[0] << 8) | hdr[1];
		t->dport = ((__u16)hdr[2] << 8) | hdr[3];
		if (t->proto == IPPROTO_TCP_)
			t->tcp_flags = hdr[13];
	} else if (t->proto == IPPROTO_ICMP_) {
		t->icmp_type = hdr[0];
		t->icmp_code = hdr[1];
		/* echo id as the "port" so echo flows can be told apart */
		t->sport = ((__u16)hdr[4] << 8) | hdr[5];
		if (t->icmp_type == ICMP_DEST_UNREACH_ && t->icmp_code == ICMP_FRAG_NEEDED_)
			t->icmp_mtu = ((__u32)hdr[6] << 8) | hdr[7];
	} else if (t->proto == IPPROTO_ICMPV6_) {
		t->icmp_type = hdr[0];
		t->icmp_code = hdr[1];
		if (t->icmp_type == ICMPV6_ECHO_REQUEST_ || t->icmp_type == ICMPV6_ECHO_REPLY_)
			t->sport = ((__u16)hdr[4] << 8) | hdr[5];
		else if (t->icmp_type == ICMPV6_PKT_TOOBIG_)
			t->icmp_mtu = ((__u32)hdr[4] << 24) | ((__u32)hdr[5] << 16) |
				      ((__u32)hdr[6] << 8) | hdr[7];
	}
}

/* An IPv4 header without options and the first 14 bytes after it: one
 * read covers addresses, ports and TCP flags of almost every packet. */
struct ip_l4 {
	struct iphdr ip;
	__u8 l4[14];
};

/* Parse an IPv6 header at l3 (walking its extension headers). Returns the
 * offset of L4 from l3, or -1 (t->proto set when the header itself was
 * read). A global function: the verifier checks it once, not at each of
 * its callers with every state they bring. */
__noinline int parse_ip6(__u64 l3, struct tuple *t);

/* Parse an IP header (IPv4, or IPv6 by its version nibble) at l3. Returns a
 * pointer to L4 or NULL. The IPv4 path is one read, as it always was. */
static __always_inline void *parse_ip(void *l3, struct tuple *t)
{
	struct ip_l4 h;
	if (bpf_probe_read_kernel(&h, sizeof(h), l3)) {
		/* a short packet at the end of its buffer: the header alone */
		__builtin_memset(&h, 0, sizeof(h));
		if (bpf_probe_read_kernel(&h.ip, sizeof(h.ip), l3))
			return NULL;
	}
	if (h.ip.version != 4) {
		if (h.ip.version != 6)
			return NULL;
		/* the global function takes a plain number: read the pointer's
		 * value back through the helper (the verifier's view of it is
		 * a pointer it would refuse to pass) */
		__u64 addr = 0;
		if (bpf_probe_read_kernel(&addr, sizeof(addr), &l3))
			return NULL;
		int off = parse_ip6(addr, t);
		return off < 0 ? NULL : l3 + off;
	}
	t->family = FAMILY_IPV4;
	t->saddr[0] = h.ip.saddr;
	t->daddr[0] = h.ip.daddr;
	t->proto = h.ip.protocol;
	t->tot_len = bpf_ntohs(h.ip.tot_len);
	if (h.ip.frag_off & bpf_htons(IP_MF_ | IP_OFFSET_))
		t->frag = 1;
	/* only the first fragment carries ports */
	if (h.ip.frag_off & bpf_htons(IP_OFFSET_))
		return NULL;
	void *l4 = l3 + (h.ip.ihl * 4);
	if (h.ip.ihl == 5) {
		l4_fields(h.l4, t);
	} else {
		__u8 hdr[14] = {};
		if (bpf_probe_read_kernel(hdr, sizeof(hdr), l4) == 0)
			l4_fields(hdr, t);
	}
	return l4;
}

/* Extension headers walked before giving up on finding L4 (hop-by-hop,
 * routing, destination options, fragment, AH: real packets carry one or
 * two). */
#define IPV6_MAX_EXT_HDRS 6

static __always_inline int ipv6_ext_hdr(__u8 nexthdr)
{
	return nexthdr == NEXTHDR_HOP_ || nexthdr == NEXTHDR_ROUTING_ || nexthdr == NEXTHDR_DEST_ ||
	       nexthdr == NEXTHDR_FRAGMENT_ || nexthdr == NEXTHDR_AUTH_;
}

__noinline int parse_ip6(__u64 l3, struct tuple *t)
{
	struct ipv6hdr ip6;
	if (!t || bpf_probe_read_kernel(&ip6, sizeof(ip6), (void *)l3))
		return -1;
	t->family = FAMILY_IPV6;
	__builtin_memcpy(t->saddr, &ip6.saddr, 16);
	__builtin_memcpy(t->daddr, &ip6.daddr, 16);
	t->tot_len = bpf_ntohs(ip6.payload_len) + sizeof(ip6);
	__u8 nexthdr = ip6.nexthdr;
	__u32 off = sizeof(ip6);
	int later_fragment = 0;
	for (int i = 0; i < IPV6_MAX_EXT_HDRS && ipv6_ext_hdr(nexthdr); i++) {
		__u8 ext[4];
		if (bpf_probe_read_kernel(ext, sizeof(ext), (void *)(l3 + off)))
			return -1;
		if (nexthdr == NEXTHDR_FRAGMENT_) {
			t->frag = 1;
			/* offset in 8-byte units, upper 13 bits of bytes 2-3 */
			if ((((__u16)ext[2] << 8) | ext[3]) & IP6_OFFSET_MASK_)
				later_fragment = 1;
			off += 8;
		} else if (nexthdr == NEXTHDR_AUTH_) {
			off += ((__u32)ext[1] + 2) * 4;
		} else {
			off += ((__u32)ext[1] + 1) * 8;
		}
		nexthdr = ext[0];
	}
	t->proto = nexthdr;
	if (ipv6_ext_hdr(nexthdr) || later_fragment)
		return -1; /* too many extension headers, or no L4 in this fragment */
	__u8 hdr[14] = {};
	if (bpf_probe_read_kernel(hdr, sizeof(hdr), (void *)(l3 + off)) == 0)
		l4_fields(hdr, t);
	else if (bpf_probe_read_kernel(hdr, 8, (void *)(l3 + off)) == 0)
		l4_fields(hdr, t); /* a short datagram: UDP and ICMP fit in 8 bytes */
	return off;
}

static __always_inline int is_tunnel_port(struct settings *f, __u16 port)
{
#pragma unroll
	for (int i = 0; i < SKBTRAIL_MAX_TUNNEL_PORTS; i++) {
		if (f->tunnel_ports[i] && f->tunnel_ports[i] == port)
			return 1;
	}
	return 0;
}

/* What parsing an skb's headers found. */
struct parsed {
	struct tuple pkt;    /* innermost IP header */
	struct tuple outer;  /* outer header when encap */
	struct tuple quoted; /* when pkt is an ICMP error: the packet it quotes (innermost) */
	__u32 vni;
	__u8 encap;
	__u8 icmp_err;       /* pkt is an ICMP error and quoted was read */
};

/* If the UDP datagram at l4 (to a tunnel port) carries VXLAN with an IPv4
 * or IPv6 frame, fill inner with its header, set *il4 to the inner L4 (NULL for a
 * non-first fragment) and return 1; else return 0. */
static __always_inline int vxlan_inner(void *l4, struct tuple *inner, __u32 *vni, void **il4)
{
	/* VXLAN: udp(8) vxlan(8) eth(14) ip */
	__u8 vx[8];
	if (bpf_probe_read_kernel(vx, sizeof(vx), l4 + 8))
		return 0;
	if (!(vx[0] & 0x08)) /* I flag: VNI valid */
		return 0;
	__u16 inner_proto;
	if (bpf_probe_read_kernel(&inner_proto, sizeof(inner_proto), l4 + 8 + VXLAN_HLEN + 12))
		return 0;
	if (inner_proto != ETH_P_IP_BE && inner_proto != ETH_P_IPV6_BE)
		return 0;
	*il4 = parse_ip(l4 + 8 + VXLAN_HLEN + ETH_HLEN_, inner);
	if (!inner->proto)
		return 0;
	*vni = ((__u32)vx[4] << 16) | ((__u32)vx[5] << 8) | vx[6];
	return 1;
}

/* ICMP destination unreachable, time exceeded and parameter problem (and
 * ICMPv6's, and its packet too big) quote the packet they are about. */
static __always_inline int is_icmp_error(struct tuple *t)
{
	if (t->proto == IPPROTO_ICMP_)
		return t->icmp_type == ICMP_DEST_UNREACH_ || t->icmp_type == ICMP_TIME_EXCEEDED_ ||
		       t->icmp_type == ICMP_PARAMETERPROB_;
	return t->proto == IPPROTO_ICMPV6_ && t->icmp_type >= ICMPV6_DEST_UNREACH_ &&
	       t->icmp_type <= ICMPV6_PARAMPROB_;
}

/* Fill e->pkt (and e->outer when VXLAN-encapsulated; e->quoted when the
 * innermost packet is an ICMP error). rx: the skb is on the receive path
 * and skb->data points at the network header. */
static __always_inline int parse_skb(struct sk_buff *skb, struct settings *f, struct parsed *e, int rx)
{
	void *head = SKB_RD(skb, head);
	void *l3;
	if (rx) {
		__u16 proto = SKB_RD(skb, protocol);
		if (proto != ETH_P_IP_BE && proto != ETH_P_IPV6_BE)
			return -1;
		l3 = SKB_RD(skb, data);
	} else {
		__u16 nh = SKB_RD(skb, network_header);
		if (nh == (__u16)~0U)
			return -1;
		l3 = head + nh;
	}
	void *l4 = parse_ip(l3, &e->pkt);
	if (!l4)
		return e->pkt.proto ? 0 : -1;
	if (e->pkt.proto == IPPROTO_UDP_ && is_tunnel_port(f, e->pkt.dport)) {
		struct tuple inner = {};
		void *il4 = NULL;
		if (vxlan_inner(l4, &inner, &e->vni, &il4)) {
			e->outer = e->pkt;
			e->pkt = inner;
			e->encap = 1;
			l4 = il4; /* NULL: an inner fragment without its L4 header */
		}
	}
	if (l4 && is_icmp_error(&e->pkt)) {
		/* the quoted header follows the 8-byte ICMP header; a quoted
		 * VXLAN packet (an error about the underlay packet) is read
		 * down to the frame it carries */
		void *ql4 = parse_ip(l4 + 8, &e->quoted);
		if (ql4 && e->quoted.proto == IPPROTO_UDP_ && is_tunnel_port(f, e->quoted.dport)) {
			struct tuple inner = {};
			__u32 vni;
			void *qil4;
			if (vxlan_inner(ql4, &inner, &vni, &qil4))
				e->quoted = inner;
		}
		e->icmp_err = e->quoted.proto != 0;
	}
	return 0;
}

static __always_inline int filter_match(struct filter *f, struct tuple *t, __u32 netns)
{
	if (!f->enabled)
		return 0;
	if (f->netns && f->netns != netns)
		return 0;
	if (f->proto && f->proto != t->proto)
		return 0;
	if (f->family && f->family != t->family)
		return 0;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if ((t->saddr[i] & f->smask[i]) != f->saddr[i] ||
		    (t->daddr[i] & f->dmask[i]) != f->daddr[i])
			return 0;
	}
	if (f->sport && f->sport != t->sport)
		return 0;
	if (f->dport && f->dport != t->dport)
		return 0;
	if (f->syn_only && (t->proto != IPPROTO_TCP_ ||
			    (t->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN))
		return 0;
	return 1;
}

/* Does any active filter slot match? */
static __always_inline int match_any(__u32 active, struct tuple *t, __u32 netns)
{
	for (__u32 i = 0; i < SKBTRAIL_MAX_FILTERS; i++) {
		if (!(active & (1U << i)))
			continue;
		__u32 key = i;
		struct filter *fl = bpf_map_lookup_elem(&filters, &key);
		if (fl && filter_match(fl, t, netns))
			return 1;
	}
	return 0;
}

static __always_inline void flow_of(struct tuple *t, struct flow_key *k, int reverse)
{
	k->proto = t->proto;
	k->family = t->family;
	if (!reverse) {
		__builtin_memcpy(k->saddr, t->saddr, sizeof(k->saddr));
		__builtin_memcpy(k->daddr, t->daddr, sizeof(k->daddr));
		k->sport = t->sport;
		k->dport = t->dport;
	} else {
		__builtin_memcpy(k->saddr, t->daddr, sizeof(k->saddr));
		__builtin_memcpy(k->daddr, t->saddr, sizeof(k->daddr));
		k->sport = t->dport;
		k->dport = t->sport;
	}
	if (t->proto == IPPROTO_ICMP_ || t->proto == IPPROTO_ICMPV6_) {
		/* echo request and reply share the id; the type differs */
		k->sport = t->sport;
		k->dport = 0;
	}
}

_Static_assert(sizeof(struct flow_key) == 40, "same_flow compares five words");

static __always_inline int same_flow(struct flow_key *a, struct flow_key *b)
{
	__u64 *x = (__u64 *)a, *y = (__u64 *)b;
	/* sizeof(struct flow_key) is 40: five words, the padding zeroed */
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4];
}

/* Remember both directions of the skb's current tuple for its journey. */
static __always_inline void remember_flow(struct tuple *t, __u64 journey)
{
	__u32 zero = 0;
	struct activity *act = bpf_map_lookup_elem(&activity_map, &zero);
	if (act)
		act->last_flow_ns = bpf_ktime_get_ns();
	struct flow_key k = {};
	__u64 rev = journey ^ 1;
	flow_of(t, &k, 0);
	bpf_map_update_elem(&flows, &k, &journey, BPF_ANY);
	flow_of(t, &k, 1);
	bpf_map_update_elem(&flows, &k, &rev, BPF_NOEXIST);
}

/* Copy the first snap bytes of the packet into c: from its Ethernet
 * header when the device is Ethernet and the header is in place, else from
 * its network header. Only the linear part is read. */
static __always_inline void capture(struct sk_buff *skb, struct net_device *dev,
				    struct event_cap *c, __u32 snap, int rx)
{
	c->orig_len = 0;
	c->cap_len = 0;
	c->l2_len = 0;
	c->pad = 0;
	unsigned char *head = SKB_RD(skb, head);
	unsigned char *data = SKB_RD(skb, data);
	__u32 data_off = data - head;
	__u32 l3;
	if (rx) {
		l3 = data_off;
	} else {
		__u16 nh = SKB_RD(skb, network_header);
		if (nh == (__u16)~0U)
			return;
		l3 = nh;
	}
	__u32 start = l3;
	__u16 mac = SKB_RD(skb, mac_header);
	if (mac != (__u16)~0U && (__u32)mac + ETH_HLEN_ == l3 && dev &&
	    SKB_RD(dev, type) == ARPHRD_ETHER_) {
		start = mac;
		c->l2_len = ETH_HLEN_;
	}
	__u32 tail = SKB_RD(skb, tail);
	if (tail <= start || start > data_off + SKB_RD(skb, len)) {
		c->l2_len = 0;
		return;
	}
	c->orig_len = data_off + SKB_RD(skb, len) - start;
	/* 64-bit on purpose: a 32-bit n lets clang pass the verifier a copy
	 * that was never clamped (its upper half unknown) */
	__u64 n = (__u64)tail - start;
	if (n > snap)
		n = snap;
	if (n > SKBTRAIL_SNAPLEN_MAX)
		n = SKBTRAIL_SNAPLEN_MAX;
	if (bpf_probe_read_kernel(c->data, n, head + start) == 0)
		c->cap_len = n;
	else
		c->l2_len = 0;
}

struct observe_args {
	struct sk_buff *skb;
	struct net_device *dev;
	const struct nf_hook_state *nf; /* netfilter observers: hook and devices, read lazily */
	__u32 reason;
	__u8 kind;
	__u8 source;
	__u8 hook;
	__u8 stage;
	__u8 rx;
};

static __always_inline int observe(struct observe_args *a)
{
	__u32 zero = 0;
	/* a local copy: CO-RE reads must start from a kernel type, not observe_args */
	struct sk_buff *skb = a->skb;
	__u64 key = (__u64)skb;
	struct settings *f = bpf_map_lookup_elem(&settings_map, &zero);
	if (!f)
		return 0;
	struct activity *act = bpf_map_lookup_elem(&activity_map, &zero);
	if (!act)
		return 0;
	struct skb_track *tr = NULL;
	if (act->inflight) /* nothing tracked: no lookup */
		tr = bpf_map_lookup_elem(&tracked, &key);
	if (!tr) {
		/* the common path: an skb nobody follows. Netfilter observers
		 * only ever report tracked skbs (journeys start at devices). */
		if (a->kind == EVENT_NF || a->kind == EVENT_DELIVER)
			return 0;
		if (!f->active_filters && !(f->drop_monitor && a->kind == EVENT_DROP))
			return 0;
		/* an untracked skb sent without a socket is being forwarded: it
		 * was already seen where it was created (its socket's tx) or where
		 * it entered the host (rx), so it starts nothing here. It joins a
		 * journey while a flow is recent: the output path copies a
		 * forwarded packet whose headroom is short for the device
		 * (skb_expand_head frees the original) and the copy goes on */
		if (a->kind == EVENT_TX && !SKB_RD(skb, sk) &&
		    !(act->last_flow_ns && bpf_ktime_get_ns() - act->last_flow_ns < FLOW_RECENT_NS))
			return 0;
		/* a normal free of an untracked skb can only join a journey
		 * through the flow map, which is consulted while it is recent */
		if (a->kind == EVENT_CONSUME &&
		    !(act->last_flow_ns && bpf_ktime_get_ns() - act->last_flow_ns < FLOW_RECENT_NS))
			return 0;
	}
#ifndef SKBTRAIL_KPROBE
	if (a->nf) {
		const struct nf_hook_state *st = a->nf;
		a->hook = st->hook;
		/* the device the packet is on at this hook: in for the receive hooks */
		a->dev = st->out;
		if (a->hook <= 2 /* PRE_ROUTING, LOCAL_IN, FORWARD */ || !a->dev)
			a->dev = st->in;
	}
#endif

	/* parse on the stack; the event itself is written straight into the
	 * ring buffer once it is certain to be sent (no per-CPU scratch that a
	 * softirq interrupting this program could overwrite) */
	struct parsed p = {};
	struct net_device *dev = a->dev;
	if (!dev)
		dev = SKB_RD(skb, dev);
	/* the namespace costs three dependent loads: read it only when a
	 * decision needs it, or for the event */
	__u32 netns = 0;
	int seen = -1; /* netns_seen has netns: -1 not looked up yet */
	int monitored_drop = f->drop_monitor && a->kind == EVENT_DROP;
	if (tr || monitored_drop || f->any_netns)
		netns = netns_of(skb, dev);
	if (!tr && f->gate_netns && !monitored_drop && !netns_was_seen(netns, &seen))
		return 0; /* no journey ever came near this namespace */

	/* An untracked skb received on a virtual device (veth, bridge, VXLAN:
	 * rtnl_link_ops set) was sent by a namespace of this host, where its
	 * socket's tx saw it. Parse it only to join a journey in progress, or
	 * when it arrives in a namespace a filter names. Physical devices
	 * (packets from outside the host) always are first sightings. */
	if (!tr && a->kind == EVENT_RX && !monitored_drop && dev && SKB_RD(dev, rtnl_link_ops)) {
		int recent = act->last_flow_ns && bpf_ktime_get_ns() - act->last_flow_ns < FLOW_RECENT_NS;
		if (!recent && !(f->any_netns && netns_was_seen(netns, &seen)))
			return 0;
	}

	int parsed = parse_skb(skb, f, &p, a->rx);

	__u64 journey = 0;
	__u8 quote = 0;
	int end = a->kind == EVENT_DROP || a->kind == EVENT_CONSUME;
	if (tr) {
		journey = tr->journey;
	} else {
		if (parsed < 0) {
			if (!monitored_drop)
				return 0;
		} else if (f->active_filters) {
			struct flow_key k = {};
			flow_of(&p.pkt, &k, 0);
			__u64 *j = NULL;
			if (act->last_flow_ns && bpf_ktime_get_ns() - act->last_flow_ns < FLOW_RECENT_NS)
				j = bpf_map_lookup_elem(&flows, &k);
			if (!j && p.icmp_err && act->last_flow_ns &&
			    bpf_ktime_get_ns() - act->last_flow_ns < FLOW_RECENT_NS) {
				/* an ICMP error about a journey's packet travels the
				 * other way and joins as a quote, not as a reply */
				flow_of(&p.quoted, &k, 0);
				j = bpf_map_lookup_elem(&flows, &k);
				if (j)
					quote = 1;
			}
			if (j)
				journey = quote ? *j ^ 1 : *j;
			else if (a->kind != EVENT_CONSUME && !(a->kind == EVENT_TX && !SKB_RD(skb, sk)) &&
				 match_any(f->active_filters, &p.pkt, netns))
				/* a normal free is never a first sighting: the kernel
				 * frees copies (neighbour queues, TCP's own) that went
				 * nowhere, while the packet goes on in another skb */
				journey = new_journey_id();
		}
		if (!journey) {
			if (!monitored_drop)
				return 0;
			__u32 reason = a->reason;
			if (bpf_map_lookup_elem(&ignored_reasons, &reason))
				return 0;
		} else {
			if (!end) {
				struct skb_track nt = {.journey = journey, .quote = quote};
				flow_of(&p.pkt, &nt.last, 0);
				if (bpf_map_update_elem(&tracked, &key, &nt, BPF_ANY))
					count(STAT_TRACKED_FULL);
				else
					__sync_fetch_and_add(&act->inflight, 1);
			}
			if (!quote) /* an error's own addresses are no flow of the journey */
				remember_flow(&p.pkt, journey);
		}
	}
	if (tr)
		quote = tr->quote;
	if (tr && parsed >= 0 && !quote) {
		struct flow_key now = {};
		flow_of(&p.pkt, &now, 0);
		if (!same_flow(&now, &tr->last)) {
			tr->last = now;
			remember_flow(&p.pkt, journey);
		}
	}

	if (!netns)
		netns = netns_of(skb, dev);
	if (journey && f->gate_netns && !netns_was_seen(netns, &seen)) {
		__u8 one = 1;
		bpf_map_update_elem(&netns_seen, &netns, &one, BPF_ANY);
	}

	/* a drop storm must not starve the traces: an untracked drop (the
	 * drop monitor's) is shed while the ring buffer is over half full,
	 * keeping the rest for the events of traced packets */
	if (!journey && bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > RINGBUF_BYTES / 2) {
		count(STAT_MONITOR_SHED);
		goto out;
	}

	/* a tracked skb's event carries its first bytes while a trace asks */
	struct event_cap *c = NULL;
	struct event *e;
	if (journey && f->snaplen) {
		c = bpf_ringbuf_reserve(&events, sizeof(*c), 0);
		e = (struct event *)c;
	} else {
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	}
	if (!e) {
		count(STAT_RINGBUF_FULL);
		goto out;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->pkt = p.pkt;
	e->outer = p.outer;
	e->vni = p.vni;
	e->encap = p.encap;
	e->netns = netns;
	e->ts_ns = bpf_ktime_get_ns();
	e->skb = key;
	e->journey = journey;
	e->kind = a->kind;
	e->source = a->source;
	e->hook = a->hook;
	e->stage = a->stage;
	e->reason = a->reason;
	e->quote = quote;
	e->len = SKB_RD(skb, len);
	__u64 nfct = SKB_RD(skb, _nfct);
	if (nfct)
		e->ct = (nfct & 7) + 1;
	if (dev) {
		e->ifindex = SKB_RD(dev, ifindex);
		e->mtu = SKB_RD(dev, mtu);
		BPF_CORE_READ_STR_INTO(&e->ifname, dev, name);
	}
	if (c)
		capture(skb, dev, c, f->snaplen, a->rx);
	bpf_ringbuf_submit(e, 0);
out:
	if (tr && end && bpf_map_delete_elem(&tracked, &key) == 0 && act->inflight)
		__sync_fetch_and_sub(&act->inflight, 1);
	return 0;
}

#endif
