// Package devprogs lists the eBPF datapath programs attached to one network
// device: tc programs (tcx links and cls_bpf filters on a clsact qdisc) at
// ingress or egress, and the XDP program. It reads them over netlink and
// the BPF syscalls in the device's network namespace, the way `tc filter
// show` and `bpftool net` do, without running either.
package devprogs

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// Hook is where on a device a program runs.
type Hook string

// Hooks.
const (
	Ingress Hook = "ingress" // tc ingress
	Egress  Hook = "egress"  // tc egress
	XDP     Hook = "xdp"
)

// Attach types (how a program is attached).
const (
	AttachTCX    = "tcx"                   // bpf_link on the device's tcx hook
	AttachClsBPF = "clsact cls_bpf filter" // tc filter on a clsact (or ingress) qdisc
	AttachXDP    = "xdp"
)

// Program is one attached program.
type Program struct {
	ID     uint32
	Name   string // the kernel's program name (at most 15 characters)
	Tag    string // hex, as bpftool prints it
	Type   string // program type (SchedCLS, XDP, ...)
	Hook   Hook
	Attach string // AttachTCX, AttachClsBPF, AttachXDP
	// Order is the program's place among the device's programs at this
	// hook, from 1 (tcx: the order they run in).
	Order int
	// Priority and Handle of a cls_bpf filter (tc's "pref" and "handle");
	// FilterName is the name tc shows for it ("name[tag]" or the object
	// file's section), DirectAction its da flag.
	Priority     uint16
	Handle       uint32
	FilterName   string
	DirectAction bool
	// LinkID is the tcx or XDP bpf_link's id, 0 when attached without one.
	LinkID uint32
	// Mode of an XDP program: "native", "generic" or "offload".
	Mode string
	// RunCount and RunTimeNs are the kernel's statistics; only counted
	// while BPF statistics are enabled (kernel.bpf_stats_enabled=1).
	RunCount  uint64
	RunTimeNs uint64
	// InfoErr says why the program's details could not be read.
	InfoErr string
}

// Where says how and where the program is attached, as one phrase:
// "tcx ingress (1st)", "clsact cls_bpf filter egress pref 49152 handle 0x1",
// "xdp (native)".
func (p Program) Where() string {
	switch p.Attach {
	case AttachTCX:
		s := fmt.Sprintf("tcx %s (#%d in run order)", p.Hook, p.Order)
		if p.LinkID != 0 {
			s += fmt.Sprintf(", link id %d", p.LinkID)
		}
		return s
	case AttachClsBPF:
		s := fmt.Sprintf("clsact cls_bpf filter %s pref %d handle 0x%x", p.Hook, p.Priority, p.Handle)
		if p.DirectAction {
			s += " direct-action"
		}
		return s
	case AttachXDP:
		s := "xdp"
		if p.Mode != "" {
			s += " (" + p.Mode + ")"
		}
		if p.LinkID != 0 {
			s += fmt.Sprintf(", link id %d", p.LinkID)
		}
		return s
	}
	return p.Attach + " " + string(p.Hook)
}

// Ident is "name id N tag T".
func (p Program) Ident() string {
	name := p.Name
	if name == "" {
		name = "(unnamed)"
	}
	s := fmt.Sprintf("%s (id %d", name, p.ID)
	if p.Tag != "" {
		s += ", tag " + p.Tag
	}
	return s + ")"
}

// StatsEnabled reports whether the kernel counts program runs now
// (kernel.bpf_stats_enabled); false when it cannot be read.
func StatsEnabled() bool {
	b, err := os.ReadFile("/proc/sys/kernel/bpf_stats_enabled")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// List returns the programs attached to the device with this ifindex in
// the network namespace at nsPath, at hook: tcx programs in run order,
// then cls_bpf filters in tc's order (tcx runs first); for XDP the one
// program. An empty list and no error: nothing is attached there.
func List(nsPath string, ifindex int, hook Hook) ([]Program, error) {
	if ifindex <= 0 {
		return nil, fmt.Errorf("list programs: bad ifindex %d", ifindex)
	}
	switch hook {
	case Ingress, Egress:
		progs, err := listTCX(nsPath, ifindex, hook)
		cls, cerr := listClsBPF(nsPath, ifindex, hook)
		return append(progs, cls...), errors.Join(err, cerr)
	case XDP:
		return listXDP(nsPath, ifindex)
	}
	return nil, fmt.Errorf("list programs: unknown hook %q (want ingress, egress or xdp)", hook)
}

// listTCX asks BPF_PROG_QUERY for the tcx programs. The ifindex is
// resolved in the calling thread's namespace, so the query runs there.
func listTCX(nsPath string, ifindex int, hook Hook) ([]Program, error) {
	at := ebpf.AttachTCXIngress
	if hook == Egress {
		at = ebpf.AttachTCXEgress
	}
	var res *link.QueryResult
	err := netnsutil.Do(nsPath, func() error {
		var err error
		res, err = link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
		return err
	})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL) {
			return nil, nil // no tcx on this kernel: nothing attached that way
		}
		return nil, fmt.Errorf("query tcx %s programs of ifindex %d in %s: %w", hook, ifindex, nsPath, err)
	}
	out := make([]Program, 0, len(res.Programs))
	for i, ap := range res.Programs {
		p := Program{ID: uint32(ap.ID), Hook: hook, Attach: AttachTCX, Order: i + 1}
		if lid, ok := ap.LinkID(); ok {
			p.LinkID = uint32(lid)
		}
		fillInfo(&p)
		out = append(out, p)
	}
	return out, nil
}

// listClsBPF lists the bpf filters under the clsact qdisc's ingress or
// egress parent through a netlink handle in the namespace.
func listClsBPF(nsPath string, ifindex int, hook Hook) ([]Program, error) {
	h, err := netnsutil.NewHandle(nsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	l, err := h.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("device ifindex %d in %s: %w", ifindex, nsPath, err)
	}
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if hook == Egress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	filters, err := h.FilterList(l, parent)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil, nil // no clsact qdisc
		}
		return nil, fmt.Errorf("list tc %s filters of %s in %s: %w", hook, l.Attrs().Name, nsPath, err)
	}
	var out []Program
	for _, f := range filters {
		bf, ok := f.(*netlink.BpfFilter)
		if !ok || bf.Id == 0 {
			continue
		}
		a := bf.Attrs()
		p := Program{ID: uint32(bf.Id), Tag: bf.Tag, FilterName: bf.Name, Hook: hook, Attach: AttachClsBPF,
			Order: len(out) + 1, Priority: a.Priority, Handle: a.Handle, DirectAction: bf.DirectAction}
		fillInfo(&p)
		out = append(out, p)
	}
	return out, nil
}

// XDP attach modes of IFLA_XDP_ATTACHED.
var xdpModes = map[uint32]string{
	1: "native", // XDP_ATTACHED_DRV
	2: "generic",
	3: "offload",
	4: "multi",
}

func listXDP(nsPath string, ifindex int) ([]Program, error) {
	h, err := netnsutil.NewHandle(nsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	l, err := h.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("device ifindex %d in %s: %w", ifindex, nsPath, err)
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return nil, nil
	}
	p := Program{ID: x.ProgId, Hook: XDP, Attach: AttachXDP, Order: 1, Mode: xdpModes[x.AttachMode]}
	fillInfo(&p)
	return []Program{p}, nil
}

// fillInfo reads name, tag, type and statistics by program id. Program
// ids are global: no namespace is needed.
func fillInfo(p *Program) {
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(p.ID))
	if err != nil {
		p.InfoErr = fmt.Sprintf("open program id %d: %v", p.ID, err)
		return
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		p.InfoErr = fmt.Sprintf("program id %d info: %v", p.ID, err)
		return
	}
	p.Name, p.Tag, p.Type = info.Name, info.Tag, info.Type.String()
	if st, err := prog.Stats(); err == nil {
		p.RunCount, p.RunTimeNs = st.RunCount, uint64(st.Runtime)
	}
}
