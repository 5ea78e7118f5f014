package tracer

import (
	"slices"
	"strings"
)

// Execution is a backend choice grouped by what the tracer attaches: the
// engine hands each group to one all-or-nothing attach call.
type Execution struct {
	// Tracepoints are the tp_btf programs to attach (TPRx, TPTx, TPDrop,
	// TPConsume), in AllTracepoints order.
	Tracepoints []string
	// Kprobes are the hook points the kprobe backend serves.
	Kprobes []HookPoint
	// Netfilter: load the BPF netfilter observers (attached per trace).
	Netfilter bool
}

// pointTracepoint is the tp_btf program that serves a hook point. The
// tunnel point is served by the transmit tracepoint on the tunnel and the
// underlay devices.
var pointTracepoint = map[HookPoint]string{
	HookDrop: TPDrop, HookTx: TPTx, HookRx: TPRx, HookConsume: TPConsume, HookTunnel: TPTx,
}

// netfilterAttach prefixes the Attach entry of the netfilter observers.
const netfilterAttach = "netfilter/"

// Execute groups backends (ChooseBackends' answer) by mechanism.
func Execute(backends []Backend) Execution {
	var x Execution
	tps := map[string]bool{}
	for _, b := range backends {
		switch b.Mechanism {
		case MechTpBTF:
			if tp := pointTracepoint[b.Point]; tp != "" {
				tps[tp] = true
			}
		case MechKprobe:
			x.Kprobes = append(x.Kprobes, b.Point)
		}
		if slices.ContainsFunc(b.Attach, func(a string) bool { return strings.HasPrefix(a, netfilterAttach) }) {
			x.Netfilter = true
		}
	}
	for _, tp := range AllTracepoints {
		if tps[tp] {
			x.Tracepoints = append(x.Tracepoints, tp)
		}
	}
	return x
}

// EngineFeatures is what an engine assumes before attaching: BTF, ring
// buffers and tp_btf are taken as present and learned by attaching (a
// failed attach turns the feature off and the plan is chosen again);
// kprobes are probed (a no-op program attached briefly, cheap) and
// /proc/kallsyms read only where they work; the netfilter observers are
// assumed when wanted, learned by loading them.
func EngineFeatures(netfilter bool) Features {
	f := Features{
		BTF:     Feature{Name: "btf", Available: true},
		RingBuf: Feature{Name: "ringbuf", Available: true},
		TpBTF:   Feature{Name: "tp_btf", Available: true},
		Kprobe:  probeKprobe(),
	}
	f.Kprobe.Name = "kprobe"
	f.NetfilterLink = Feature{Name: "netfilter_link", Available: netfilter}
	if !netfilter {
		f.NetfilterLink.Detail = "not requested"
	}
	if f.Kprobe.Available {
		f.Symbols = KernelSymbols(KprobeSymbols()...)
	}
	return f
}
