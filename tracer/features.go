package tracer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// Feature is what one probe of the running kernel found.
type Feature struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	// Value is a setting rather than a yes/no (lockdown mode, bpf_stats).
	Value  string `json:"value,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Features are the kernel facilities skbtrail can use, each found by trying
// it (loading and attaching a tiny program), never by kernel version.
type Features struct {
	BTF           Feature `json:"btf"`
	TpBTF         Feature `json:"tp_btf"`
	Kprobe        Feature `json:"kprobe"`
	KprobeMulti   Feature `json:"kprobe_multi"`
	Fentry        Feature `json:"fentry"`
	NetfilterLink Feature `json:"netfilter_link"`
	TCX           Feature `json:"tcx"`
	RingBuf       Feature `json:"ringbuf"`
	Lockdown      Feature `json:"lockdown"`
	BPFStats      Feature `json:"bpf_stats"`
	// Symbols says which of KprobeSymbols this kernel has (/proc/kallsyms):
	// modules not loaded and inlined functions are missing.
	Symbols map[string]bool `json:"symbols"`
}

// List returns the features in report order.
func (f Features) List() []Feature {
	return []Feature{f.BTF, f.TpBTF, f.Kprobe, f.KprobeMulti, f.Fentry, f.NetfilterLink, f.TCX, f.RingBuf, f.Lockdown, f.BPFStats}
}

// The kernel function the probes attach their no-op programs to: always
// built in, called for every delivered packet.
const probeSymbol = "consume_skb"

// ProbeFeatures tries every facility on the running kernel. Probes that
// attach do so briefly, with programs that do nothing; the netfilter link
// and tcx probes run in a network namespace created for them and gone
// afterwards. It needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN,
// CAP_SYS_ADMIN); without it every probe reports the permission error.
func ProbeFeatures(ctx context.Context) Features {
	_ = rlimit.RemoveMemlock()
	var f Features
	probes := []struct {
		dst   *Feature
		name  string
		probe func() Feature
	}{
		{&f.BTF, "btf", probeBTF},
		{&f.TpBTF, "tp_btf", probeTpBTF},
		{&f.Kprobe, "kprobe", probeKprobe},
		{&f.KprobeMulti, "kprobe.multi", probeKprobeMulti},
		{&f.Fentry, "fentry", probeFentry},
		{&f.NetfilterLink, "netfilter_link", nil},
		{&f.TCX, "tcx", nil},
		{&f.RingBuf, "ringbuf", probeRingBuf},
		{&f.Lockdown, "lockdown", probeLockdown},
		{&f.BPFStats, "bpf_stats", probeBPFStats},
	}
	for _, p := range probes {
		if err := ctx.Err(); err != nil {
			*p.dst = Feature{Detail: "not probed: " + err.Error()}
		} else if p.probe != nil {
			*p.dst = p.probe()
		}
		p.dst.Name = p.name
	}
	if ctx.Err() == nil {
		f.NetfilterLink, f.TCX = probeInThrowawayNetns()
	}
	f.NetfilterLink.Name, f.TCX.Name = "netfilter_link", "tcx"
	f.Symbols = KernelSymbols(KprobeSymbols()...)
	return f
}

func yes(detail string) Feature { return Feature{Available: true, Detail: detail} }
func no(detail string) Feature  { return Feature{Detail: detail} }

// noop is a program body that returns r0 = ret.
func noop(ret int32) asm.Instructions {
	return asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()}
}

// loadErrText words a program load failure.
func loadErrText(err error) string {
	switch {
	case errors.Is(err, unix.EPERM):
		// cilium/ebpf suggests MEMLOCK for any EPERM; the limit is lifted
		// already, so it is the kernel saying no
		return "load refused: operation not permitted (EPERM)"
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
		return "load failed: " + err.Error() + " (not supported by this kernel)"
	}
	return "load failed: " + err.Error()
}

func probeBTF() Feature {
	const path = "/sys/kernel/btf/vmlinux"
	if _, err := os.Stat(path); err != nil {
		return no(fmt.Sprintf("%s: %v (kernel built without CONFIG_DEBUG_INFO_BTF?)", path, errors.Unwrap(err)))
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return no("load " + path + ": " + err.Error())
	}
	reasons, err := dropReasonsFrom(spec)
	if err != nil {
		return yes(path + " loaded; " + err.Error())
	}
	return yes(fmt.Sprintf("%s loaded, enum skb_drop_reason has %d values", path, len(reasons)))
}

func probeTpBTF() Feature {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "probe_tp_btf", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp,
		AttachTo: "kfree_skb", Instructions: noop(0), License: "GPL",
	})
	if err != nil {
		return no(loadErrText(err))
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		return no("program loads; attach to tp_btf/kfree_skb failed: " + err.Error())
	}
	l.Close()
	return yes("tp_btf/kfree_skb loaded and attached")
}

// kprobeSupportHint explains an attach failure when the kernel has neither
// way of creating kprobes.
func kprobeSupportHint() string {
	if _, err := os.Stat("/sys/bus/event_source/devices/kprobe"); err == nil {
		return ""
	}
	for _, p := range []string{"/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events"} {
		if _, err := os.Stat(p); err == nil {
			return ""
		}
	}
	return " (no kprobe PMU in /sys/bus/event_source/devices and no kprobe_events: kernel built without CONFIG_KPROBES?)"
}

func probeKprobe() Feature {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "probe_kprobe", Type: ebpf.Kprobe, Instructions: noop(0), License: "GPL",
	})
	if err != nil {
		return no(loadErrText(err))
	}
	defer prog.Close()
	kp, err := link.Kprobe(probeSymbol, prog, nil)
	if err != nil {
		return no("program loads; attach failed: " + rootCause(err) + kprobeSupportHint())
	}
	defer kp.Close()
	krp, err := link.Kretprobe(probeSymbol, prog, nil)
	if err != nil {
		return no("kprobe attaches; kretprobe attach failed: " + err.Error())
	}
	krp.Close()
	return yes("kprobe and kretprobe on " + probeSymbol + " loaded and attached")
}

func probeKprobeMulti() Feature {
	err := features.HaveBPFLinkKprobeMulti()
	switch {
	case err == nil:
		return yes("kprobe_multi link created")
	case errors.Is(err, ebpf.ErrNotSupported):
		return no("not supported by this kernel (needs Linux 5.18+ with CONFIG_FPROBE)")
	}
	return no(err.Error())
}

// tryFentry loads a no-op fentry program and attaches it: the errors of
// both steps (attachErr is nil when the load failed).
func tryFentry() (loadErr, attachErr error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "probe_fentry", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry,
		AttachTo: probeSymbol, Instructions: noop(0), License: "GPL",
	})
	if err != nil {
		return err, nil
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceFEntry})
	if err != nil {
		return nil, err
	}
	l.Close()
	return nil, nil
}

func probeFentry() Feature {
	loadErr, attachErr := tryFentry()
	switch {
	case loadErr != nil:
		return no(loadErrText(loadErr))
	case attachErr != nil:
		return no("program loads; attach to fentry/" + probeSymbol + " failed: " + attachErr.Error())
	}
	return yes("fentry/" + probeSymbol + " loaded and attached")
}

func probeRingBuf() Feature {
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return no("not supported by this kernel (needs Linux 5.8+)")
		}
		return no(err.Error())
	}
	return yes("ring buffer map created")
}

// probeLockdown reads the lockdown mode; where securityfs is not readable it
// says whether BPF may read kernel memory, which is what skbtrail needs.
func probeLockdown() Feature {
	const path = "/sys/kernel/security/lockdown"
	if b, err := os.ReadFile(path); err == nil {
		mode := "unknown"
		for _, w := range strings.Fields(string(b)) {
			if strings.HasPrefix(w, "[") && strings.HasSuffix(w, "]") {
				mode = strings.Trim(w, "[]")
			}
		}
		f := Feature{Available: mode != "confidentiality", Value: mode, Detail: path + ": " + strings.TrimSpace(string(b))}
		if mode == "confidentiality" {
			f.Detail += ": BPF may not read kernel memory"
		}
		return f
	}
	f := Feature{Value: "unknown", Detail: path + " not readable (securityfs not mounted?)"}
	switch err := features.HaveProgramHelper(ebpf.Kprobe, asm.FnProbeReadKernel); {
	case err == nil:
		f.Available = true
		f.Detail += "; not confidentiality: bpf_probe_read_kernel is allowed"
	case errors.Is(err, ebpf.ErrNotSupported):
		f.Value = "confidentiality?"
		f.Detail += "; bpf_probe_read_kernel is refused (lockdown=confidentiality?)"
	default:
		f.Detail += "; probing bpf_probe_read_kernel: " + err.Error()
	}
	return f
}

func probeBPFStats() Feature {
	const path = "/proc/sys/kernel/bpf_stats_enabled"
	b, err := os.ReadFile(path)
	if err != nil {
		return no(path + ": " + err.Error())
	}
	if strings.TrimSpace(string(b)) == "0" {
		return Feature{Available: true, Value: "disabled",
			Detail: "kernel.bpf_stats_enabled=0: per-program run counts and time not collected (sysctl -w kernel.bpf_stats_enabled=1 to enable)"}
	}
	return Feature{Available: true, Value: "enabled", Detail: "kernel.bpf_stats_enabled=1: per-program run counts and time collected"}
}

// probeInThrowawayNetns tries a BPF netfilter link and a tcx link in a
// network namespace of their own, so nothing touches the host's hooks.
func probeInThrowawayNetns() (nf, tcx Feature) {
	err := inThrowawayNetns(func() error {
		nf = probeNetfilterLink()
		tcx = probeTCX()
		return nil
	})
	if err != nil {
		nf = no("not probed: " + err.Error())
		tcx = nf
	}
	return nf, tcx
}

func probeNetfilterLink() Feature {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "probe_nf", Type: ebpf.Netfilter, AttachType: ebpf.AttachNetfilter,
		Instructions: noop(1 /* NF_ACCEPT */), License: "GPL",
	})
	if err != nil {
		return no(loadErrText(err))
	}
	defer prog.Close()
	l, err := link.AttachNetfilter(link.NetfilterOptions{
		Program: prog, ProtocolFamily: link.NetfilterProtoIPv4,
		Hook: link.NetfilterInetLocalOut, Priority: journey.NFStages[0],
	})
	if err != nil {
		return no("program loads; link failed: " + err.Error())
	}
	l.Close()
	return yes("netfilter link created on ipv4 OUTPUT in a throwaway netns")
}

func probeTCX() Feature {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "probe_tcx", Type: ebpf.SchedCLS, AttachType: ebpf.AttachTCXIngress,
		Instructions: noop(-1 /* TCX_NEXT */), License: "GPL",
	})
	if err != nil {
		return no(loadErrText(err))
	}
	defer prog.Close()
	lo := 1 // the loopback device of a new netns
	l, err := link.AttachTCX(link.TCXOptions{Interface: lo, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return no("program loads; attach to lo failed: " + err.Error())
	}
	l.Close()
	return yes("tcx ingress attached to lo in a throwaway netns")
}

// inThrowawayNetns runs fn on a thread moved into a new, empty network
// namespace, which disappears when fn returns. The thread goes back to its
// namespace and is unlocked only if that succeeded; otherwise it ends with
// the goroutine.
func inThrowawayNetns(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("create a netns: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("return to own netns: %w", err))
			return // the thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// rootCause shortens a chain of wrapped errors to the file operation that
// failed, when there is one: the part a user can check.
func rootCause(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Error()
	}
	return err.Error()
}

// KernelSymbols reports which of names /proc/kallsyms lists (functions of
// the kernel and its loaded modules).
func KernelSymbols(names ...string) map[string]bool {
	have := make(map[string]bool, len(names))
	want := make(map[string]bool, len(names))
	for _, n := range names {
		have[n] = false
		want[n] = true
	}
	fh, err := os.Open("/proc/kallsyms")
	if err != nil {
		return have
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		// address type name [module]
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && want[fields[2]] {
			have[fields[2]] = true
		}
	}
	return have
}
