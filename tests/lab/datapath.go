package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// The eBPF datapath faults: small tc and XDP programs of the lab's own,
// assembled here with cilium/ebpf's asm package (no C build step), standing
// in for what Cilium or Calico's eBPF dataplane attach to a node's devices.
// tcx and XDP links live as long as the lab (Down closes them); cls_bpf
// filters and their clsact qdisc go with the namespace.

// Program names the datapath faults give their programs (what skbtrail
// must name when one of them drops a packet).
const (
	TCDropProgName      = "sbt_tc_drop80"
	XDPDropProgName     = "sbt_xdp_drop"
	XDPPassProgName     = "sbt_xdp_discard"
	RedirectPeerProg    = "sbt_redir_peer"
	PodBEth0MAC         = "0a:58:0a:f4:01:02"
	tcActUnspec         = -1 // TC_ACT_UNSPEC / TCX_NEXT: let the next program or the stack decide
	tcActShot           = 2
	xdpDrop             = 1
	xdpPass             = 2
	ethPIPv4            = 0x0800
	skbDataOff          = 76 // offsetof(struct __sk_buff, data)
	skbDataEndOff       = 80 // offsetof(struct __sk_buff, data_end)
	ethHdrLen           = 14
	ipv4MinHdrLen       = 20
	ipProtoOff          = ethHdrLen + 9
	ipDstOff            = ethHdrLen + 16
	l4DportOff          = ethHdrLen + ipv4MinHdrLen + 2
	verifierLogSizeHint = 1 << 16
)

func init() {
	for name, f := range datapathFaults {
		faults[name] = f
	}
}

var datapathFaults = map[string]fault{
	"tc-drop-tcx": {
		desc: "node-b: tcx ingress program " + TCDropProgName + " on the VXLAN device drops tcp to port 80 (an eBPF policy program, attached like Cilium 1.15+; the tcx link lasts as long as the lab process)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.attachTCX(l.NodeB, l.VXLANDevice, ebpf.AttachTCXIngress, tcDropPort(ProtoTCP, 80))
		},
	},
	"tc-drop-clsact": {
		desc: "node-b: clsact cls_bpf egress filter " + TCDropProgName + " (da, pref 1) on vethpodb drops tcp to port 80 before it reaches pod-b (attached like Calico's eBPF dataplane)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.attachClsBPF(l.NodeB, "vethpodb", netlink.HANDLE_MIN_EGRESS, tcDropPort(ProtoTCP, 80))
		},
	},
	"xdp-drop-underlay": {
		desc: "node-b: XDP program " + XDPDropProgName + " on the underlay eth0 drops the VXLAN packets (udp to the VXLAN port): they vanish without an skb (the XDP link lasts as long as the lab process)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.attachXDP(l.NodeB, "eth0", xdpDropPort(XDPDropProgName, ProtoUDP, uint16(l.VXLANPort)), 0)
		},
	},
	"xdp-drop-generic": {
		desc: "pod-b: XDP program " + XDPDropProgName + " in generic (skb) mode on eth0 drops tcp to port 80: the kernel frees the skb right after receiving it (the XDP link lasts as long as the lab process)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.attachXDP(l.PodB, "eth0", xdpDropPort(XDPDropProgName, ProtoTCP, 80), link.XDPGenericMode)
		},
	},
	"xdp-pass-underlay": {
		desc: "node-b: XDP program " + XDPPassProgName + " on the underlay eth0 that drops only udp to port 9 (discard) and passes everything else: the lab works, through an XDP program (the link lasts as long as the lab process)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.attachXDP(l.NodeB, "eth0", xdpDropPort(XDPPassProgName, ProtoUDP, 9), 0)
		},
	},
	"redirect-peer": {
		desc: "node-b: tcx ingress program " + RedirectPeerProg + " on the VXLAN device sends packets for 10.244.1.2 straight into pod-b with bpf_redirect_peer, skipping cni0 and vethpodb (Cilium's fast path; the tcx link lasts as long as the lab process)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.attachRedirectPeer(ctx)
		},
	},
}

// IP protocol numbers for the lab's programs.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// tcDropPort returns a sched_cls program that drops IPv4 packets of proto
// to dport (TC_ACT_SHOT) and leaves the rest to whatever comes next. It
// reads the packet with LD_ABS/LD_IND, which take the IP header length into
// account.
func tcDropPort(proto uint8, dport uint16) *ebpf.ProgramSpec {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // LD_ABS wants the context in R6
		asm.LoadAbs(12, asm.Half),   // ethertype, host order
		asm.JNE.Imm(asm.R0, ethPIPv4, "pass"),
		asm.LoadAbs(ipProtoOff, asm.Byte),
		asm.JNE.Imm(asm.R0, int32(proto), "pass"),
		asm.LoadAbs(ethHdrLen, asm.Byte), // version and IHL
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.And.Imm(asm.R7, 0x0f),
		asm.LSh.Imm(asm.R7, 2),
		asm.LoadInd(asm.R0, asm.R7, ethHdrLen+2, asm.Half), // destination port
		asm.JNE.Imm(asm.R0, int32(dport), "pass"),
		asm.Mov.Imm(asm.R0, tcActShot),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActUnspec).WithSymbol("pass"),
		asm.Return(),
	}
	return &ebpf.ProgramSpec{Name: TCDropProgName, Type: ebpf.SchedCLS, License: "GPL", Instructions: insns}
}

// xdpDropPort returns an XDP program that drops IPv4 packets (without IP
// options) of proto to dport and passes the rest.
func xdpDropPort(name string, proto uint8, dport uint16) *ebpf.ProgramSpec {
	be := func(v uint16) int32 { return int32(binary.LittleEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))) }
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // xdp_md.data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // xdp_md.data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, l4DportOff+2),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R5, be(ethPIPv4), "pass"),
		asm.LoadMem(asm.R5, asm.R2, ethHdrLen, asm.Byte),
		asm.JNE.Imm(asm.R5, 0x45, "pass"), // IPv4, no options
		asm.LoadMem(asm.R5, asm.R2, ipProtoOff, asm.Byte),
		asm.JNE.Imm(asm.R5, int32(proto), "pass"),
		asm.LoadMem(asm.R5, asm.R2, l4DportOff, asm.Half),
		asm.JNE.Imm(asm.R5, be(dport), "pass"),
		asm.Mov.Imm(asm.R0, xdpDrop),
		asm.Return(),
		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
		asm.Return(),
	}
	return &ebpf.ProgramSpec{Name: name, Type: ebpf.XDP, License: "GPL", Instructions: insns}
}

// redirectPeer returns a sched_cls program for a tc ingress hook: IPv4
// packets to dst get the destination MAC mac and are handed to the peer of
// the veth ifindex (bpf_redirect_peer), in the peer's namespace.
func redirectPeer(dst netip.Addr, mac net.HardwareAddr, ifindex int) *ebpf.ProgramSpec {
	le32 := func(b []byte) int64 { return int64(binary.LittleEndian.Uint32(b)) }
	le16 := func(b []byte) int64 { return int64(binary.LittleEndian.Uint16(b)) }
	d := dst.As4()
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, skbDataOff, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, skbDataEndOff, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, ipDstOff+4),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R5, int32(le16([]byte{0x08, 0x00})), "pass"),
		asm.LoadMem(asm.R5, asm.R2, ipDstOff, asm.Word),
		asm.LoadImm(asm.R4, le32(d[:]), asm.DWord),
		asm.JNE.Reg(asm.R5, asm.R4, "pass"),
		asm.StoreImm(asm.R2, 0, le32(mac[0:4]), asm.Word),
		asm.StoreImm(asm.R2, 4, le16(mac[4:6]), asm.Half),
		asm.Mov.Imm(asm.R1, int32(ifindex)),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirectPeer.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActUnspec).WithSymbol("pass"),
		asm.Return(),
	}
	return &ebpf.ProgramSpec{Name: RedirectPeerProg, Type: ebpf.SchedCLS, License: "GPL", Instructions: insns}
}

func loadProgram(spec *ebpf.ProgramSpec) (*ebpf.Program, error) {
	p, err := ebpf.NewProgramWithOptions(spec, ebpf.ProgramOptions{LogSizeStart: verifierLogSizeHint})
	if err != nil {
		return nil, fmt.Errorf("load %s program %s: %w", spec.Type, spec.Name, err)
	}
	return p, nil
}

// ifindexIn returns the index of device dev in namespace ns of the lab.
func (l *Lab) ifindexIn(ns, dev string) (int, error) {
	h, err := netnsutil.NewHandle(NetnsPath(ns))
	if err != nil {
		return 0, err
	}
	defer h.Close()
	lk, err := h.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("device %s in %s: %w", dev, ns, err)
	}
	return lk.Attrs().Index, nil
}

// keepLink keeps a bpf_link until Down.
func (l *Lab) keepLink(c io.Closer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bpfLinks = append(l.bpfLinks, c)
}

// closeLinks detaches every program the lab attached through a bpf_link.
func (l *Lab) closeLinks() error {
	l.mu.Lock()
	links := l.bpfLinks
	l.bpfLinks = nil
	l.mu.Unlock()
	var errs []error
	for _, c := range links {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("lab: detach program: %w", err))
		}
	}
	return errors.Join(errs...)
}

// attachInNetns runs attach (which resolves ifindexes in the calling
// thread's namespace) inside ns and keeps the link until Down.
func (l *Lab) attachInNetns(ns string, attach func() (link.Link, error)) error {
	var lk link.Link
	err := netnsutil.Do(NetnsPath(ns), func() error {
		var err error
		lk, err = attach()
		return err
	})
	if err != nil {
		return err
	}
	l.keepLink(lk)
	return nil
}

func (l *Lab) attachTCX(ns, dev string, at ebpf.AttachType, spec *ebpf.ProgramSpec) error {
	idx, err := l.ifindexIn(ns, dev)
	if err != nil {
		return err
	}
	prog, err := loadProgram(spec)
	if err != nil {
		return err
	}
	defer prog.Close() // the link holds its own reference
	return l.attachInNetns(ns, func() (link.Link, error) {
		lk, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: prog, Attach: at})
		if err != nil {
			return nil, fmt.Errorf("attach tcx %s to %s in %s: %w", spec.Name, dev, ns, err)
		}
		return lk, nil
	})
}

// attachXDP attaches an XDP program in the mode flags asks for (0: the
// driver's native mode where it has one).
func (l *Lab) attachXDP(ns, dev string, spec *ebpf.ProgramSpec, flags link.XDPAttachFlags) error {
	idx, err := l.ifindexIn(ns, dev)
	if err != nil {
		return err
	}
	prog, err := loadProgram(spec)
	if err != nil {
		return err
	}
	defer prog.Close()
	return l.attachInNetns(ns, func() (link.Link, error) {
		lk, err := link.AttachXDP(link.XDPOptions{Interface: idx, Program: prog, Flags: flags})
		if err != nil {
			return nil, fmt.Errorf("attach xdp %s to %s in %s: %w", spec.Name, dev, ns, err)
		}
		return lk, nil
	})
}

// attachClsBPF adds a clsact qdisc to dev (if it has none) and a
// direct-action bpf filter under parent (HANDLE_MIN_INGRESS or _EGRESS).
func (l *Lab) attachClsBPF(ns, dev string, parent uint32, spec *ebpf.ProgramSpec) error {
	h, err := netnsutil.NewHandle(NetnsPath(ns))
	if err != nil {
		return err
	}
	defer h.Close()
	lk, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("device %s in %s: %w", dev, ns, err)
	}
	q := &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: lk.Attrs().Index, Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(0xffff, 0)}}
	if err := h.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc to %s in %s: %w", dev, ns, err)
	}
	prog, err := loadProgram(spec)
	if err != nil {
		return err
	}
	defer prog.Close() // the filter holds its own reference
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: lk.Attrs().Index, Parent: parent, Handle: 1,
			Priority: 1, Protocol: unix.ETH_P_ALL},
		Fd: prog.FD(), Name: spec.Name, DirectAction: true,
	}
	if err := h.FilterAdd(f); err != nil {
		return fmt.Errorf("add cls_bpf filter %s to %s in %s: %w", spec.Name, dev, ns, err)
	}
	return nil
}

func (l *Lab) attachRedirectPeer(_ context.Context) error {
	idx, err := l.ifindexIn(l.NodeB, "vethpodb")
	if err != nil {
		return err
	}
	mac, err := net.ParseMAC(PodBEth0MAC)
	if err != nil {
		return err
	}
	spec := redirectPeer(netip.MustParseAddr(l.PodBIP), mac, idx)
	return l.attachTCX(l.NodeB, l.VXLANDevice, ebpf.AttachTCXIngress, spec)
}
