package diagnose

import (
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/devprogs"
	"github.com/skbtrail/skbtrail/pkg/journey"
)

// ProgramLister lists the eBPF programs attached to a device at a hook
// (devprogs.List in the namespace with this inode), and says whether the
// kernel counts program runs.
type ProgramLister interface {
	Programs(netnsInode uint32, ifindex int, hook devprogs.Hook) ([]devprogs.Program, error)
	StatsEnabled() bool
}

// kernelPrograms reads the programs from the kernel, in the namespaces of
// the registry.
type kernelPrograms struct{ reg *netnsutil.Registry }

func (k kernelPrograms) Programs(ino uint32, ifindex int, hook devprogs.Hook) ([]devprogs.Program, error) {
	path, ok := k.reg.Path(netnsutil.Inode(ino))
	if !ok {
		return nil, fmt.Errorf("netns inode %d is gone", ino)
	}
	return devprogs.List(path, ifindex, hook)
}

func (kernelPrograms) StatsEnabled() bool { return devprogs.StatsEnabled() }

// nsExec is the prefix that runs a command in the named namespace.
func nsExec(netns string) string {
	switch {
	case netns == "" || netns == "host":
		return ""
	case strings.HasPrefix(netns, "pid:"):
		return "nsenter -t " + strings.TrimPrefix(netns, "pid:") + " -n "
	case strings.HasPrefix(netns, "ino:"):
		return "(in netns " + netns + ") "
	}
	return "ip netns exec " + netns + " "
}

// progList describes programs as "NAME (id N, tag T) at WHERE[, ran N times]".
func progList(progs []devprogs.Program, stats bool) string {
	var parts []string
	for _, p := range progs {
		s := p.Ident() + " attached as " + p.Where()
		if p.FilterName != "" && p.FilterName != p.Name {
			s += " (tc name " + p.FilterName + ")"
		}
		if stats {
			s += fmt.Sprintf(", ran %d times so far", p.RunCount)
		}
		if p.InfoErr != "" {
			s += " (" + p.InfoErr + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// countersAdvice says where the program's owner keeps its own drop counters.
func countersAdvice(progs []devprogs.Program, dev string) string {
	cilium := "Cilium: `cilium-dbg monitor --type drop` in the cilium agent pod, or `hubble observe --verdict DROPPED`"
	calico := "Calico eBPF: `calico-node -bpf counters dump --iface=" + dev + "` and `calico-node -bpf policy dump " + dev + " all` in the calico-node pod"
	for _, p := range progs {
		switch n := p.Name; {
		case strings.HasPrefix(n, "cil_"):
			return "it looks like Cilium's: see its drops and their reason with " + cilium
		case strings.HasPrefix(n, "cali"):
			return "it looks like Calico's eBPF dataplane: see its drops with " + calico
		}
	}
	return "see the drop counters and logs of whoever attached it (" + cilium + "; " + calico + "; a policy agent: its own metrics)"
}

// inspectAdvice gives the commands that show the programs and their place.
func inspectAdvice(progs []devprogs.Program, netns, dev string, hook devprogs.Hook) string {
	ex := nsExec(netns)
	var cmds []string
	for _, p := range progs {
		cmds = append(cmds, fmt.Sprintf("`bpftool prog show id %d`", p.ID))
	}
	switch hook {
	case devprogs.XDP:
		cmds = append(cmds, fmt.Sprintf("`%sip link show dev %s`", ex, dev))
	default:
		cmds = append(cmds, fmt.Sprintf("`%stc filter show dev %s %s`", ex, dev, hook), fmt.Sprintf("`%sbpftool net show dev %s`", ex, dev))
	}
	return "inspect with " + strings.Join(cmds, ", ")
}

func statsNote(stats bool) string {
	if stats {
		return ""
	}
	return " (run counts are off: `sysctl -w kernel.bpf_stats_enabled=1` makes the kernel count each program's runs)"
}

// bpfProgDrop names the tc (or generic XDP) program that dropped the
// packet: the verdict's reason is TC_* (hook INGRESS/EGRESS) or XDP. The
// programs are read now, after the drop, for that one device and hook.
func (d *Diagnoser) bpfProgDrop(j *journey.Journey) {
	v := &j.Verdict
	if v.Kind != journey.Dropped {
		return
	}
	var hook devprogs.Hook
	guessXDP := false
	switch {
	case v.Reason == "XDP":
		hook = devprogs.XDP
	case v.Reason == "NOT_SPECIFIED" && freedOnReceipt(j):
		// generic XDP frees what it drops without a reason on this kernel:
		// say so only when a generic-mode XDP program is there
		hook, guessXDP = devprogs.XDP, true
	case strings.HasPrefix(v.Reason, "TC_"):
		if v.Hook == "" {
			v.Hook = journey.TCHook(v.Reason, j.Events)
		}
		hook = devprogs.Ingress
		if v.Hook == journey.HookTCEgress {
			hook = devprogs.Egress
		}
	default:
		return
	}
	where := fmt.Sprintf("tc %s of %s in %s", hook, v.Device, v.Netns)
	if hook == devprogs.XDP {
		where = fmt.Sprintf("the XDP hook (generic mode) of %s in %s", v.Device, v.Netns)
	}
	f := journey.Finding{Code: CodeBPFProgDrop, Severity: journey.SeverityError, Netns: v.Netns}
	f.Message = fmt.Sprintf("an eBPF program at %s dropped %s (%s)", where, atDrop(j), v.Reason)
	netfilterNote := "; netfilter (iptables/nftables) rules are not involved: changing them will not help"
	var progs []devprogs.Program
	var err error
	stats := false
	if d.progs != nil && v.Ifindex != 0 {
		progs, err = d.progs.Programs(v.NetnsInode, int(v.Ifindex), hook)
		stats = d.progs.StatsEnabled()
	}
	if guessXDP {
		if len(progs) == 0 || progs[0].Mode != "generic" {
			return
		}
		f.Message = fmt.Sprintf("an eBPF program at %s dropped %s: it was freed (%s) right after %s received it, before anything else saw it, and that is where generic XDP runs", where, atDrop(j), v.Reason, v.Device)
	}
	switch {
	case len(progs) > 0:
		f.Message += ": " + progList(progs, stats)
		if len(progs) > 1 {
			f.Message += " (one of these returned the drop; tcx programs run in the order shown, before cls_bpf filters)"
		}
		f.Advice = fmt.Sprintf("the program decides, not the kernel's stack: fix the policy or configuration of whoever loaded %s%s; %s; %s%s",
			progs[0].Name, netfilterNote, countersAdvice(progs, v.Device), inspectAdvice(progs, v.Netns, v.Device, hook), statsNote(stats))
	default:
		if err != nil {
			d.cfg.Logger.Warn("listing datapath programs", zap.String("netns", v.Netns), zap.String("device", v.Device), zap.Error(err))
			f.Message += fmt.Sprintf("; its programs could not be read: %v", err)
		} else if d.progs != nil {
			f.Message += "; no program is attached there any more (detached or replaced since)"
		}
		f.Advice = "find the eBPF datapath (Cilium, Calico eBPF, a policy agent) that attaches programs to " + v.Device + netfilterNote + "; " +
			countersAdvice(nil, v.Device) + "; " + inspectAdvice(nil, v.Netns, v.Device, hook)
	}
	j.AddFinding(f)
}

// freedOnReceipt: the packet was dropped on the device it had just been
// received on, with nothing seen in between.
func freedOnReceipt(j *journey.Journey) bool {
	n := len(j.Events)
	if n < 2 {
		return false
	}
	rx, drop := j.Events[n-2], j.Events[n-1]
	return rx.Kind == journey.KindRx && drop.Kind == journey.KindDrop && rx.Netns == drop.Netns && rx.Ifindex == drop.Ifindex && rx.Skb == drop.Skb
}
