// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * skbtrail kprobe backend: kprobes and kretprobes feeding the same observe()
 * as the tp_btf programs (one event model, source = SOURCE_KPROBE).
 *
 * Two uses:
 *   - precise points no tracepoint offers: the netfilter verdict of
 *     nf_hook_slow (which hook dropped the packet under legacy iptables) and
 *     the tunnel transmit functions (vxlan_xmit, ip_tunnel_xmit);
 *   - a whole journey on kernels without tp_btf: rx, tx, drop and consume.
 *
 * The loader shares the tracer's maps (MapReplacements), so both backends
 * write the same ring buffer and follow the same tracked skbs. Which of the
 * free points this object reports is fixed at load time (report_drop,
 * report_consume) so that tp_btf and kprobes never both report a free.
 *
 * Compiled per architecture (bpf2go -target amd64): the PT_REGS argument
 * macros read the registers of the target's calling convention.
 */
/* kprobe arguments are plain registers: every kernel read goes through
 * bpf_probe_read_kernel (see SKB_RD in observe.h). */
#define SKBTRAIL_KPROBE 1
#include "observe.h"

/* Set by the loader: this object reports drops / consumes (tp_btf does not). */
volatile const __u8 report_drop = 1;
volatile const __u8 report_consume = 1;

/* Values of enum event->reason for EVENT_NF_VERDICT: the kernel's NF_DROP and
 * NF_ACCEPT verdicts. */
#define NF_DROP_ 0
#define NF_ACCEPT_ 1

/* Most skbs a receive list (__netif_receive_skb_list_core) is followed for:
 * the GRO batch (net.core.gro_normal_batch) defaults to 8. */
#define RX_LIST_MAX 8

/* ---- the free points: drop and consume ---- */

/* The free really frees (the kernel's skb_unref): a kprobe fires on entry,
 * also when the call only drops one of several references. */
static __always_inline int last_ref(struct sk_buff *skb)
{
	return skb && BPF_CORE_READ(skb, users.refs.counter) == 1;
}

/* ---- netfilter verdicts (nf_hook_slow) ----
 *
 * Entry remembers the skb and the hook per task in a small stack: nf_hook_slow
 * nests (bridge netfilter, a softirq interrupting a task that is inside a
 * hook). A drop is reported from inside the free the hook calls, while the
 * skb is still alive, before the drop itself; an accept is reported on
 * return, when the hook's rewrites (NAT) are visible in the headers. */
#define NF_MAX_DEPTH 4

struct nf_frame {
	__u64 skb;     /* 0: not an IPv4 hook, nothing to report */
	__u64 dev;     /* struct net_device * the packet is on at this hook */
	__u8 hook;     /* NF_INET_* */
	__u8 dropped;  /* the drop was reported already */
	__u8 pad[6];
};

struct nf_frames {
	__u32 depth; /* calls in progress, may exceed NF_MAX_DEPTH */
	__u32 pad;
	struct nf_frame f[NF_MAX_DEPTH];
};

/* task (or idle CPU) -> its nf_hook_slow calls in progress */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct nf_frames);
} nf_calls SEC(".maps");

/* Key of the current context: the task, or the CPU for the idle tasks, which
 * all have pid 0. */
static __always_inline __u64 task_key(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)id == 0)
		return (0xffffffffULL << 32) | bpf_get_smp_processor_id();
	return id;
}

/* Anything to report for this skb? The same early exit as observe(). */
static __always_inline int tracing(struct sk_buff *skb)
{
	__u32 zero = 0;
	__u64 key = (__u64)skb;
	struct settings *f = bpf_map_lookup_elem(&settings_map, &zero);
	if (!f)
		return 0;
	return f->active_filters || f->drop_monitor || bpf_map_lookup_elem(&tracked, &key);
}

/* Is a trace or the drop monitor on? An idle tracer costs nf_hook_slow one
 * array lookup on entry and return. Entry and return both ask, so pushes and
 * pops pair up; only a call in progress while tracing starts or stops can
 * pop another call's frame, and then at worst misses or misplaces that one
 * verdict. */
static __always_inline int any_tracing(void)
{
	__u32 zero = 0;
	struct settings *f = bpf_map_lookup_elem(&settings_map, &zero);
	return f && (f->active_filters || f->drop_monitor);
}

SEC("kprobe/nf_hook_slow")
int BPF_KPROBE(kprobe_nf_hook_slow, struct sk_buff *skb, struct nf_hook_state *state)
{
	if (!any_tracing())
		return 0;
	__u64 key = task_key();
	struct nf_frames *fr = bpf_map_lookup_elem(&nf_calls, &key);
	if (!fr) {
		struct nf_frames fresh = {};
		bpf_map_update_elem(&nf_calls, &key, &fresh, BPF_NOEXIST);
		fr = bpf_map_lookup_elem(&nf_calls, &key);
		if (!fr)
			return 0;
	}
	/* push, always: the return pops whatever this call pushed */
	__u32 d = fr->depth;
	fr->depth = d + 1;
	if (d >= NF_MAX_DEPTH)
		return 0;
	struct nf_frame *top = &fr->f[d];
	top->skb = 0;
	top->dropped = 0;
	__u8 pf = BPF_CORE_READ(state, pf);
	if (pf != NFPROTO_IPV4 && pf != NFPROTO_IPV6)
		return 0;
	__u8 hook = BPF_CORE_READ(state, hook);
	/* the device the packet is on at this hook: in for the receive hooks */
	struct net_device *dev = BPF_CORE_READ(state, out);
	if (hook <= 2 /* PRE_ROUTING, LOCAL_IN, FORWARD */ || !dev)
		dev = BPF_CORE_READ(state, in);
	top->skb = (__u64)skb;
	top->dev = (__u64)dev;
	top->hook = hook;
	return 0;
}

SEC("kretprobe/nf_hook_slow")
int BPF_KRETPROBE(kretprobe_nf_hook_slow, int ret)
{
	if (!any_tracing())
		return 0;
	__u64 key = task_key();
	struct nf_frames *fr = bpf_map_lookup_elem(&nf_calls, &key);
	if (!fr)
		return 0;
	__u32 d = fr->depth;
	if (d == 0)
		return 0;
	fr->depth = d - 1;
	if (d > NF_MAX_DEPTH)
		return 0;
	struct nf_frame *top = &fr->f[d - 1];
	/* 1: every hook function accepted, the caller goes on with the skb.
	 * < 0: dropped (reported from the free); 0: stolen or queued, the skb
	 * may be gone. */
	if (ret != 1 || !top->skb || top->dropped)
		return 0;
	struct observe_args a = {
		.skb = (struct sk_buff *)top->skb,
		.dev = (struct net_device *)top->dev,
		.kind = EVENT_NF_VERDICT,
		.source = SOURCE_KPROBE,
		.hook = top->hook,
		.reason = NF_ACCEPT_,
	};
	top->skb = 0;
	return observe(&a);
}

/* A free inside nf_hook_slow of the skb the innermost call is deciding on is
 * its NF_DROP: report the verdict before the drop. */
static __always_inline void nf_drop_verdict(struct sk_buff *skb)
{
	__u64 key = task_key();
	struct nf_frames *fr = bpf_map_lookup_elem(&nf_calls, &key);
	if (!fr)
		return;
	__u32 d = fr->depth;
	if (d == 0 || d > NF_MAX_DEPTH)
		return;
	struct nf_frame *top = &fr->f[d - 1];
	if (top->skb != (__u64)skb || top->dropped)
		return;
	top->dropped = 1;
	struct observe_args a = {
		.skb = skb,
		.dev = (struct net_device *)top->dev,
		.kind = EVENT_NF_VERDICT,
		.source = SOURCE_KPROBE,
		.hook = top->hook,
		.reason = NF_DROP_,
	};
	observe(&a);
}

static __always_inline int on_free(struct sk_buff *skb, __u32 reason)
{
	if (!skb || !tracing(skb))
		return 0;
	__u32 consumed = 0xffffffff;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED))
		consumed = bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED);
	if (reason == consumed) {
		if (report_consume && last_ref(skb)) {
			struct observe_args a = {.skb = skb, .kind = EVENT_CONSUME, .source = SOURCE_KPROBE};
			observe(&a);
		}
		return 0;
	}
	nf_drop_verdict(skb);
	if (report_drop && last_ref(skb)) {
		struct observe_args a = {.skb = skb, .kind = EVENT_DROP, .source = SOURCE_KPROBE, .reason = reason};
		observe(&a);
	}
	return 0;
}

/* Linux 5.17 - 6.10 */
SEC("kprobe/kfree_skb_reason")
int BPF_KPROBE(kprobe_kfree_skb_reason, struct sk_buff *skb, enum skb_drop_reason reason)
{
	return on_free(skb, reason);
}

/* Linux 6.11+: kfree_skb_reason() is an inline wrapper of this */
SEC("kprobe/sk_skb_reason_drop")
int BPF_KPROBE(kprobe_sk_skb_reason_drop, struct sock *sk, struct sk_buff *skb, enum skb_drop_reason reason)
{
	return on_free(skb, reason);
}

SEC("kprobe/consume_skb")
int BPF_KPROBE(kprobe_consume_skb, struct sk_buff *skb)
{
	if (!last_ref(skb))
		return 0;
	struct observe_args a = {.skb = skb, .kind = EVENT_CONSUME, .source = SOURCE_KPROBE};
	return observe(&a);
}

/* ---- transmit and receive ---- */

/* Where net:net_dev_start_xmit fires (xmit_one), one level up: every
 * transmit, with or without a qdisc, reaches the driver through here. A GSO
 * list is reported by its first skb. */
SEC("kprobe/dev_hard_start_xmit")
int BPF_KPROBE(kprobe_dev_hard_start_xmit, struct sk_buff *first, struct net_device *dev)
{
	struct observe_args a = {.skb = first, .dev = dev, .kind = EVENT_TX, .source = SOURCE_KPROBE};
	return observe(&a);
}

/* net:netif_receive_skb fires in __netif_receive_skb_core, which compilers
 * inline or clone (.constprop) and whose first argument changed type over
 * time: probe its two stable callers instead, one skb and a list. */
SEC("kprobe/__netif_receive_skb_one_core")
int BPF_KPROBE(kprobe_netif_receive_skb_one, struct sk_buff *skb)
{
	struct observe_args a = {.skb = skb, .kind = EVENT_RX, .source = SOURCE_KPROBE, .rx = 1};
	return observe(&a);
}

static __noinline int observe_rx(struct sk_buff *skb)
{
	struct observe_args a = {.skb = skb, .kind = EVENT_RX, .source = SOURCE_KPROBE, .rx = 1};
	return observe(&a);
}

SEC("kprobe/__netif_receive_skb_list_core")
int BPF_KPROBE(kprobe_netif_receive_skb_list, struct list_head *head)
{
	/* the skbs are linked through sk_buff.list */
	__u64 off = bpf_core_field_offset(struct sk_buff, list);
	struct list_head *node = BPF_CORE_READ(head, next);
	for (int i = 0; i < RX_LIST_MAX; i++) {
		if (!node || node == head)
			break;
		observe_rx((struct sk_buff *)((void *)node - off));
		node = BPF_CORE_READ(node, next);
	}
	return 0;
}

/* ---- tunnel transmit ----
 *
 * event->hook carries the outer IP protocol of the tunnel: 17 (VXLAN over
 * UDP), 4 (IPIP), 47 (GRE). The skb is the inner packet entering the tunnel;
 * the device is the tunnel device. */
SEC("kprobe/vxlan_xmit")
int BPF_KPROBE(kprobe_vxlan_xmit, struct sk_buff *skb, struct net_device *dev)
{
	struct observe_args a = {.skb = skb, .dev = dev, .kind = EVENT_TUNNEL,
				 .source = SOURCE_KPROBE, .hook = IPPROTO_UDP_};
	return observe(&a);
}

SEC("kprobe/ip_tunnel_xmit")
int BPF_KPROBE(kprobe_ip_tunnel_xmit, struct sk_buff *skb, struct net_device *dev,
	       const struct iphdr *tnl_params, __u8 protocol)
{
	struct observe_args a = {.skb = skb, .dev = dev, .kind = EVENT_TUNNEL,
				 .source = SOURCE_KPROBE, .hook = protocol};
	return observe(&a);
}
