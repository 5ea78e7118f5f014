// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* skbtrail primary backend: tp_btf tracepoints and BPF netfilter observers. */
#include "observe.h"

/* ---- tp_btf backend (primary) ---- */

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(tp_netif_receive_skb, struct sk_buff *skb)
{
	struct observe_args a = {.skb = skb, .kind = EVENT_RX, .source = SOURCE_TP, .rx = 1};
	return observe(&a);
}

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(tp_net_dev_start_xmit, struct sk_buff *skb, struct net_device *dev)
{
	struct observe_args a = {.skb = skb, .dev = dev, .kind = EVENT_TX, .source = SOURCE_TP};
	return observe(&a);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	struct observe_args a = {.skb = skb, .kind = EVENT_DROP, .source = SOURCE_TP, .reason = reason};
	return observe(&a);
}

SEC("tp_btf/consume_skb")
int BPF_PROG(tp_consume_skb, struct sk_buff *skb)
{
	struct observe_args a = {.skb = skb, .kind = EVENT_CONSUME, .source = SOURCE_TP};
	return observe(&a);
}

/* A socket was told it has data: the packet at the tail of its receive
 * queue reached a local socket (UDP, raw; TCP data), whether or not
 * netfilter observers sit in that namespace. Only tracked skbs report. */
SEC("tp_btf/sk_data_ready")
int BPF_PROG(tp_sk_data_ready, const struct sock *sk)
{
	struct sk_buff *skb = sk->sk_receive_queue.prev;
	if ((void *)skb == (void *)&sk->sk_receive_queue)
		return 0; /* empty queue */
	struct observe_args a = {.skb = skb, .kind = EVENT_DELIVER, .source = SOURCE_TP};
	return observe(&a);
}

/* ---- BPF netfilter observers: one program per priority stage ---- */

static __always_inline int nf_observe(struct bpf_nf_ctx *ctx, __u8 stage)
{
	struct observe_args a = {.skb = ctx->skb, .nf = ctx->state, .kind = EVENT_NF, .source = SOURCE_NF, .stage = stage};
	observe(&a);
	return 1; /* NF_ACCEPT: observers never change the packet's fate */
}

#define NF_STAGE(n)                                                    \
	SEC("netfilter")                                               \
	int nf_stage_##n(struct bpf_nf_ctx *ctx) { return nf_observe(ctx, n); }

NF_STAGE(0)
NF_STAGE(1)
NF_STAGE(2)
NF_STAGE(3)
NF_STAGE(4)
NF_STAGE(5)
