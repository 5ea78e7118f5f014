package tracer

import (
	"fmt"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// HookPoint is a place in the kernel's packet path where skbtrail observes
// skbs. Each is served by one backend, chosen by ChooseBackends.
type HookPoint string

// The hook points, in the order a report lists them.
const (
	HookDrop      HookPoint = "drop"        // freed with a drop reason
	HookTx        HookPoint = "tx"          // handed to a device's transmit
	HookRx        HookPoint = "rx"          // entered a device's receive path
	HookConsume   HookPoint = "consume"     // freed normally
	HookNFVerdict HookPoint = "nf-verdict"  // which netfilter hook accepted or dropped
	HookTunnel    HookPoint = "tunnel-xmit" // entered a tunnel device's transmit
)

// HookPoints lists every hook point in report order.
var HookPoints = []HookPoint{HookDrop, HookTx, HookRx, HookConsume, HookNFVerdict, HookTunnel}

// Mechanism is the kernel attachment that serves a hook point.
type Mechanism string

// Mechanisms.
const (
	MechTpBTF     Mechanism = "tp_btf"
	MechKprobe    Mechanism = "kprobe"
	MechNetfilter Mechanism = "netfilter-link"
	MechNone      Mechanism = "none"
)

// Backend is the mechanism chosen for one hook point.
type Backend struct {
	Point     HookPoint `json:"hook_point"`
	Mechanism Mechanism `json:"mechanism"`
	// Attach names what gets attached, e.g. "tp_btf/kfree_skb" or
	// "kretprobe/nf_hook_slow".
	Attach []string `json:"attach"`
	// Degraded says what this choice costs compared with the preferred
	// mechanism; empty when the preferred one is used.
	Degraded string `json:"degraded,omitempty"`
}

// Kernel functions the kprobe backend attaches to. Where a point lists
// several, the first this kernel has is used (freeSymbols) or every one it
// has (rxSymbols, tunnel).
const (
	symNFHookSlow   = "nf_hook_slow"
	symConsumeSkb   = "consume_skb"
	symDevXmit      = "dev_hard_start_xmit"
	symVxlanXmit    = "vxlan_xmit"
	symIPTunnelXmit = "ip_tunnel_xmit"
)

var (
	// freeSymbols: the free with a reason; kfree_skb_reason became an
	// inline wrapper of sk_skb_reason_drop in Linux 6.11.
	freeSymbols = []string{"sk_skb_reason_drop", "kfree_skb_reason"}
	// rxSymbols: the callers of __netif_receive_skb_core for one skb and
	// for a list (the core itself is inlined or cloned by compilers).
	rxSymbols = []string{"__netif_receive_skb_one_core", "__netif_receive_skb_list_core"}
)

// KprobeSymbols are the kernel functions the kprobe backend may attach to.
func KprobeSymbols() []string {
	s := []string{symNFHookSlow, symConsumeSkb, symDevXmit, symVxlanXmit, symIPTunnelXmit}
	s = append(s, freeSymbols...)
	return append(s, rxSymbols...)
}

func firstPresent(have map[string]bool, names []string) string {
	for _, n := range names {
		if have[n] {
			return n
		}
	}
	return ""
}

func allPresent(have map[string]bool, names []string) []string {
	var out []string
	for _, n := range names {
		if have[n] {
			out = append(out, n)
		}
	}
	return out
}

func prefixed(prefix string, names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n
	}
	return out
}

// nfStagesText lists the netfilter observer priorities of each hook.
func nfStagesText() string {
	var hooks []string
	for h := uint8(0); h <= journey.HookPostRouting; h++ {
		var p []string
		for _, s := range journey.HookStages[h] {
			p = append(p, fmt.Sprint(journey.NFStages[s]))
		}
		hooks = append(hooks, journey.HookName(h)+" "+strings.Join(p, ","))
	}
	return strings.Join(hooks, "; ")
}

// ChooseBackends picks the mechanism of every hook point from what the
// kernel offers: kprobes for the points only they see precisely (the
// netfilter verdict of nf_hook_slow, the tunnel transmit functions), tp_btf
// for the rest, and the next best where the preferred one is missing. It
// only reads f: the same features always give the same choice.
func ChooseBackends(f Features) []Backend {
	out := make([]Backend, 0, len(HookPoints))
	if why := f.blocker(); why != "" {
		for _, p := range HookPoints {
			out = append(out, Backend{Point: p, Mechanism: MechNone, Degraded: why})
		}
		return out
	}
	tp := f.TpBTF.Available
	kp := f.Kprobe.Available
	free := firstPresent(f.Symbols, freeSymbols)
	rx := allPresent(f.Symbols, rxSymbols)

	// the points a tracepoint serves as well as a kprobe
	simple := func(p HookPoint, tpName string, kprobes []string, lost string) Backend {
		switch {
		case tp:
			return Backend{Point: p, Mechanism: MechTpBTF, Attach: []string{"tp_btf/" + tpName}}
		case kp && len(kprobes) > 0:
			return Backend{Point: p, Mechanism: MechKprobe, Attach: prefixed("kprobe/", kprobes...),
				Degraded: fmt.Sprintf("tp_btf unavailable: %s events come from %s (same events, more overhead per packet)", p, kprobeNames(kprobes, p))}
		}
		return Backend{Point: p, Mechanism: MechNone,
			Degraded: fmt.Sprintf("neither tp_btf nor %s: %s", kprobeNames(kprobes, p), lost)}
	}
	has := func(name string) []string {
		if name == "" || !f.Symbols[name] {
			return nil
		}
		return []string{name}
	}
	out = append(out,
		simple(HookDrop, "kfree_skb", has(free), "drops are not seen"),
		simple(HookTx, "net_dev_start_xmit", has(symDevXmit), "transmits are not seen"),
	)
	recv := simple(HookRx, "netif_receive_skb", rx, "receives are not seen")
	if recv.Mechanism == MechKprobe && len(rx) < len(rxSymbols) {
		var missing []string
		for _, s := range rxSymbols {
			if !f.Symbols[s] {
				missing = append(missing, s)
			}
		}
		recv.Degraded += "; " + strings.Join(missing, ", ") + " not in this kernel (inlined?): the receives it handles are not seen"
	}
	out = append(out, recv)
	consume := simple(HookConsume, "consume_skb", has(symConsumeSkb), "deliveries are not seen")
	if consume.Mechanism == MechKprobe && free != "" {
		// frees with reason SKB_CONSUMED are consumes too
		consume.Attach = append(consume.Attach, "kprobe/"+free)
	}
	out = append(out, consume)

	// netfilter verdict: nf_hook_slow knows the hook that decided; its drops
	// are caught in the free it calls.
	nf := Backend{Point: HookNFVerdict}
	switch {
	case kp && f.Symbols[symNFHookSlow] && free != "":
		nf.Mechanism = MechKprobe
		nf.Attach = []string{"kprobe/" + symNFHookSlow, "kretprobe/" + symNFHookSlow, "kprobe/" + free}
		if f.NetfilterLink.Available {
			// the observers still see each stage's NAT and conntrack state
			nf.Attach = append(nf.Attach, netfilterAttach+"ipv4 observers (NAT and conntrack per stage): "+nfStagesText())
		}
	case f.NetfilterLink.Available:
		nf.Mechanism = MechNetfilter
		nf.Attach = []string{netfilterAttach + "ipv4 observers: " + nfStagesText()}
		nf.Degraded = "nf_hook_slow kprobe unavailable: the dropping hook is the last netfilter observer that saw the packet; table and rule come from nftrace (nf_tables) or the rule counters (iptables-legacy)"
	default:
		nf.Mechanism = MechNone
		nf.Degraded = "neither nf_hook_slow kprobe nor BPF netfilter links: a netfilter drop is reported without its hook"
	}
	out = append(out, nf)

	// tunnel transmit
	tun := Backend{Point: HookTunnel}
	tunSyms := allPresent(f.Symbols, []string{symVxlanXmit, symIPTunnelXmit})
	switch {
	case kp && len(tunSyms) > 0:
		tun.Mechanism = MechKprobe
		tun.Attach = prefixed("kprobe/", tunSyms...)
		if !f.Symbols[symVxlanXmit] {
			tun.Degraded = "vxlan_xmit not in this kernel (vxlan module not loaded): vxlan outer source taken from the tx tracepoint on the underlay device"
		}
	case tp || (kp && f.Symbols[symDevXmit]):
		// the tx hook point sees the tunnel device and the underlay device
		tun.Mechanism = MechTpBTF
		tun.Attach = []string{"tp_btf/net_dev_start_xmit (tunnel and underlay devices)"}
		if !tp {
			tun.Mechanism = MechKprobe
			tun.Attach = []string{"kprobe/" + symDevXmit + " (tunnel and underlay devices)"}
		}
		if !kp {
			tun.Degraded = "vxlan_xmit kprobe unavailable: outer source taken from the tx tracepoint on the underlay device; ipip/gre seen only as their outer packet"
		} else {
			tun.Degraded = "vxlan_xmit and ip_tunnel_xmit not in this kernel: outer source taken from the tx tracepoint on the underlay device"
		}
	default:
		tun.Mechanism = MechNone
		tun.Degraded = "no transmit backend: encapsulation is not seen"
	}
	return append(out, tun)
}

// kprobeNames names the kprobes a point would fall back to.
func kprobeNames(kprobes []string, p HookPoint) string {
	if len(kprobes) == 0 {
		return "a kprobe for " + string(p)
	}
	return strings.Join(prefixed("kprobe/", kprobes...), ", ")
}

// blocker is the reason no backend can work at all, or "".
func (f Features) blocker() string {
	switch {
	case !f.BTF.Available:
		return "no kernel BTF (/sys/kernel/btf/vmlinux): the CO-RE programs cannot load"
	case !f.RingBuf.Available:
		return "no BPF ring buffer (Linux 5.8+): events cannot reach skbtrail"
	case strings.HasPrefix(f.Lockdown.Value, "confidentiality"):
		return "kernel lockdown=confidentiality forbids reading kernel memory from BPF"
	}
	return ""
}

// Degraded lists, one line each, the capabilities this kernel lacks and
// what that costs the user. Empty: every hook point has its preferred
// backend.
func (f Features) Degraded() []string {
	var out []string
	if why := f.blocker(); why != "" {
		return []string{"skbtrail cannot trace: " + why}
	}
	for _, b := range ChooseBackends(f) {
		if b.Degraded != "" {
			out = append(out, b.Degraded)
		}
	}
	return out
}

// Points returns the hook points served by mechanism m.
func Points(backends []Backend, m Mechanism) []HookPoint {
	var out []HookPoint
	for _, b := range backends {
		if b.Mechanism == m {
			out = append(out, b.Point)
		}
	}
	return out
}
