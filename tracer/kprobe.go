package tracer

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// kprobeSetPrograms are the programs of ../bpf/kprobe.c.
type kprobeSetPrograms struct {
	SkSkbReasonDrop *ebpf.Program `ebpf:"kprobe_sk_skb_reason_drop"`
	KfreeSkbReason  *ebpf.Program `ebpf:"kprobe_kfree_skb_reason"`
	ConsumeSkb      *ebpf.Program `ebpf:"kprobe_consume_skb"`
	DevXmit         *ebpf.Program `ebpf:"kprobe_dev_hard_start_xmit"`
	RxOne           *ebpf.Program `ebpf:"kprobe_netif_receive_skb_one"`
	RxList          *ebpf.Program `ebpf:"kprobe_netif_receive_skb_list"`
	NFHookSlow      *ebpf.Program `ebpf:"kprobe_nf_hook_slow"`
	NFHookSlowRet   *ebpf.Program `ebpf:"kretprobe_nf_hook_slow"`
	VxlanXmit       *ebpf.Program `ebpf:"kprobe_vxlan_xmit"`
	IPTunnelXmit    *ebpf.Program `ebpf:"kprobe_ip_tunnel_xmit"`
}

func (p *kprobeSetPrograms) byName() map[string]*ebpf.Program {
	return map[string]*ebpf.Program{
		"kprobe_sk_skb_reason_drop":     p.SkSkbReasonDrop,
		"kprobe_kfree_skb_reason":       p.KfreeSkbReason,
		"kprobe_consume_skb":            p.ConsumeSkb,
		"kprobe_dev_hard_start_xmit":    p.DevXmit,
		"kprobe_netif_receive_skb_one":  p.RxOne,
		"kprobe_netif_receive_skb_list": p.RxList,
		"kprobe_nf_hook_slow":           p.NFHookSlow,
		"kretprobe_nf_hook_slow":        p.NFHookSlowRet,
		"kprobe_vxlan_xmit":             p.VxlanXmit,
		"kprobe_ip_tunnel_xmit":         p.IPTunnelXmit,
	}
}

func (p *kprobeSetPrograms) close() error {
	var errs []error
	for _, prog := range p.byName() {
		if prog != nil {
			errs = append(errs, prog.Close())
		}
	}
	return errors.Join(errs...)
}

// kprobeSite is one program and the kernel function it attaches to.
type kprobeSite struct {
	prog   string
	symbol string
	ret    bool // kretprobe
}

func (s kprobeSite) String() string {
	if s.ret {
		return "kretprobe/" + s.symbol
	}
	return "kprobe/" + s.symbol
}

// kprobeGroup is a set of sites attached together for some hook points.
type kprobeGroup struct {
	points []HookPoint // attached when any of these is wanted
	sites  []kprobeSite
	// first: only the first site whose function exists (alternatives);
	// otherwise every site whose function exists.
	first bool
	// optional: none of the functions existing is no error (modules).
	optional bool
}

var kprobeGroups = []kprobeGroup{
	// the free with a reason: drops, frees with SKB_CONSUMED, and the
	// NF_DROP of nf_hook_slow reported while the skb is still alive
	{points: []HookPoint{HookDrop, HookConsume, HookNFVerdict}, first: true, sites: []kprobeSite{
		{prog: "kprobe_sk_skb_reason_drop", symbol: "sk_skb_reason_drop"},
		{prog: "kprobe_kfree_skb_reason", symbol: "kfree_skb_reason"},
	}},
	{points: []HookPoint{HookConsume}, sites: []kprobeSite{{prog: "kprobe_consume_skb", symbol: symConsumeSkb}}},
	{points: []HookPoint{HookTx}, sites: []kprobeSite{{prog: "kprobe_dev_hard_start_xmit", symbol: symDevXmit}}},
	{points: []HookPoint{HookRx}, sites: []kprobeSite{
		{prog: "kprobe_netif_receive_skb_one", symbol: rxSymbols[0]},
		{prog: "kprobe_netif_receive_skb_list", symbol: rxSymbols[1]},
	}},
	{points: []HookPoint{HookNFVerdict}, sites: []kprobeSite{
		{prog: "kprobe_nf_hook_slow", symbol: symNFHookSlow},
		{prog: "kretprobe_nf_hook_slow", symbol: symNFHookSlow, ret: true},
	}},
	{points: []HookPoint{HookTunnel}, optional: true, sites: []kprobeSite{
		{prog: "kprobe_vxlan_xmit", symbol: symVxlanXmit},
		{prog: "kprobe_ip_tunnel_xmit", symbol: symIPTunnelXmit},
	}},
}

// kprobePlan lists the sites to attach for points, given the functions the
// kernel has.
func kprobePlan(points []HookPoint, have map[string]bool) ([]kprobeSite, error) {
	var plan []kprobeSite
	for _, g := range kprobeGroups {
		if !slices.ContainsFunc(g.points, func(p HookPoint) bool { return slices.Contains(points, p) }) {
			continue
		}
		n := len(plan)
		for _, s := range g.sites {
			if have[s.symbol] {
				plan = append(plan, s)
				if g.first {
					break
				}
			}
		}
		if len(plan) == n && !g.optional {
			names := make([]string, len(g.sites))
			for i, s := range g.sites {
				names[i] = s.symbol
			}
			return nil, fmt.Errorf("kprobes for %v: none of %v is in /proc/kallsyms", g.points, names)
		}
	}
	return plan, nil
}

// kprobeSet is the loaded kprobe backend of a tracer.
type kprobeSet struct {
	progs  kprobeSetPrograms
	links  []link.Link
	points []HookPoint
}

func (k *kprobeSet) close() error {
	var errs []error
	for _, l := range k.links {
		errs = append(errs, l.Close())
	}
	k.links = nil
	errs = append(errs, k.progs.close())
	return errors.Join(errs...)
}

// DefaultKprobePoints are the hook points only kprobes see precisely: the
// tracepoints serve the others.
var DefaultKprobePoints = []HookPoint{HookNFVerdict, HookTunnel}

// kprobeSpec returns the kprobe object with its load-time switches set:
// whether it reports drops and consumes (the tracepoints do otherwise).
func kprobeSpec(points []HookPoint) (*ebpf.CollectionSpec, error) {
	spec, err := loadKprobe()
	if err != nil {
		return nil, fmt.Errorf("load embedded kprobe object: %w", err)
	}
	for name, point := range map[string]HookPoint{"report_drop": HookDrop, "report_consume": HookConsume} {
		v := spec.Variables[name]
		if v == nil {
			return nil, fmt.Errorf("kprobe object has no variable %s", name)
		}
		var on uint8
		if slices.Contains(points, point) {
			on = 1
		}
		if err := v.Set(on); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	return spec, nil
}

// LoadKprobes loads the kprobe programs into the tracer, sharing its maps,
// without attaching them. points are the hook points the kprobes will serve
// (nil: DefaultKprobePoints); they decide whether the free kprobes report
// drops and consumes.
func (t *Tracer) LoadKprobes(points ...HookPoint) error {
	if t.kp != nil {
		return errors.New("kprobes are already loaded")
	}
	if len(points) == 0 {
		points = DefaultKprobePoints
	}
	spec, err := kprobeSpec(points)
	if err != nil {
		return err
	}
	k := &kprobeSet{points: slices.Clone(points)}
	if err := spec.LoadAndAssign(&k.progs, &ebpf.CollectionOptions{MapReplacements: t.sharedMaps()}); err != nil {
		return fmt.Errorf("load kprobe programs: %w", verifierDetail(err))
	}
	t.kp = k
	return nil
}

// AttachKprobes loads the kprobe programs (see LoadKprobes) and attaches
// those serving points (nil: DefaultKprobePoints). Pass only points no other
// attached backend serves (Points(ChooseBackends(f), MechKprobe)): a point
// attached twice is reported twice. Tunnel functions of modules not loaded
// are skipped. On a kernel without kprobes it fails with the reason and
// leaves the tracer as it was.
func (t *Tracer) AttachKprobes(points ...HookPoint) error {
	if len(points) == 0 {
		points = DefaultKprobePoints
	}
	plan, err := kprobePlan(points, KernelSymbols(KprobeSymbols()...))
	if err != nil {
		return err
	}
	if err := t.LoadKprobes(points...); err != nil {
		return err
	}
	progs := t.kp.progs.byName()
	for _, s := range plan {
		attach := link.Kprobe
		if s.ret {
			attach = link.Kretprobe
		}
		l, err := attach(s.symbol, progs[s.prog], nil)
		if err != nil {
			_ = t.kp.close()
			t.kp = nil
			return fmt.Errorf("attach %s: %w%s (see skbtrail doctor)", s, err, kprobeSupportHint())
		}
		t.kp.links = append(t.kp.links, l)
	}
	return nil
}

// KprobePoints are the hook points the attached kprobes serve (none when
// AttachKprobes was not called or failed).
func (t *Tracer) KprobePoints() []HookPoint {
	if t.kp == nil || len(t.kp.links) == 0 {
		return nil
	}
	return slices.Clone(t.kp.points)
}

// ProgramCheck is the verifier's answer for one program.
type ProgramCheck struct {
	Program string
	Section string
	// Err is nil when the program loaded; a verifier rejection wraps an
	// *ebpf.VerifierError (print it with %+v for the whole log).
	Err error
	// VerifiedInsns is the number of instructions the verifier processed
	// (0 when the kernel does not say).
	VerifiedInsns uint32
}

// VerifyKprobes loads every program of the kprobe backend, one at a time,
// with maps of its own and nothing attached: the verifier's answer per
// program, on any kernel that loads kprobe programs, attachable or not.
func VerifyKprobes() ([]ProgramCheck, error) {
	spec, err := kprobeSpec([]HookPoint{HookDrop, HookConsume}) // every code path
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(spec.Programs))
	for name := range spec.Programs {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []ProgramCheck
	for _, name := range names {
		one := spec.Copy()
		for other := range one.Programs {
			if other != name {
				delete(one.Programs, other)
			}
		}
		c := ProgramCheck{Program: name, Section: spec.Programs[name].SectionName}
		coll, err := ebpf.NewCollection(one)
		if err != nil {
			c.Err = err
		} else {
			if info, err := coll.Programs[name].Info(); err == nil {
				c.VerifiedInsns, _ = info.VerifiedInstructions()
			}
			coll.Close()
		}
		out = append(out, c)
	}
	return out, nil
}
