package diagnose

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/devprogs"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nodestate"
)

// Drop reasons of the recorded events below.
const (
	reasonTCIngress = 10 + iota
	reasonTCEgress
	reasonTCChainNotFound
	reasonXDP
)

var tcReasons = map[uint32]string{reasonTCIngress: "TC_INGRESS", reasonTCEgress: "TC_EGRESS",
	reasonTCChainNotFound: "TC_CHAIN_NOTFOUND", reasonXDP: "XDP"}

// buildTC is build with the tc and XDP drop reasons.
func buildTC(t *testing.T, evs ...journey.Event) *journey.Journey {
	t.Helper()
	b := journey.NewBuilder(journey.Options{NetnsName: func(i uint32) string { return names[i] },
		ReasonName: func(r uint32) string { return tcReasons[r] }})
	for i := range evs {
		evs[i].Journey, evs[i].TimeNs = 2, uint64(1000*(i+1))
		if evs[i].Skb == 0 {
			evs[i].Skb = 7
		}
	}
	for _, e := range evs {
		b.Add(e)
	}
	js := b.Close()
	if len(js) != 1 {
		t.Fatalf("%d journeys", len(js))
	}
	return js[0]
}

// fakePrograms is a ProgramLister with fixed answers per (netns, ifindex, hook).
type fakePrograms struct {
	progs map[progKey][]devprogs.Program
	err   error
	stats bool
	asked []progKey
}

type progKey struct {
	ino     uint32
	ifindex int
	hook    devprogs.Hook
}

func (f *fakePrograms) Programs(ino uint32, ifindex int, hook devprogs.Hook) ([]devprogs.Program, error) {
	k := progKey{ino, ifindex, hook}
	f.asked = append(f.asked, k)
	return f.progs[k], f.err
}

func (f *fakePrograms) StatsEnabled() bool { return f.stats }

func reason(r uint32) func(*journey.Event) { return func(e *journey.Event) { e.Reason = r } }

func requireWords(t *testing.T, what, text string, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not mention %q: %s", what, w, text)
		}
	}
}

// A tcx ingress program on node-b's flannel.1 dropped the SYN: hook
// INGRESS, and BPF_PROG_DROP names the program, where it is attached, that
// netfilter is not involved, and how to see its counters and inspect it.
// Only that device and hook are asked about.
func TestBPFProgDropTCX(t *testing.T) {
	cil := devprogs.Program{ID: 42, Name: "cil_from_overlay", Tag: "0123456789abcdef", Type: "SchedCLS",
		Hook: devprogs.Ingress, Attach: devprogs.AttachTCX, Order: 1, LinkID: 7, RunCount: 1234}
	fp := &fakePrograms{progs: map[progKey][]devprogs.Program{{nodeB, 5, devprogs.Ingress}: {cil}}, stats: true}
	d := New(Config{Programs: fp})
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j := buildTC(t,
		ev(journey.KindTx, podA, "eth0", pkt),
		ev(journey.KindTx, nodeA, "eth0", pkt, encap("198.51.100.20")),
		ev(journey.KindRx, nodeB, "eth0", pkt, encap("198.51.100.20"), at(2)),
		ev(journey.KindRx, nodeB, "flannel.1", pkt, at(5)),
		ev(journey.KindDrop, nodeB, "flannel.1", pkt, at(5), reason(reasonTCIngress)))
	d.Diagnose(j)
	v := j.Verdict
	if v.Kind != journey.Dropped || v.Netns != "node-b" || v.Device != "flannel.1" || v.Reason != "TC_INGRESS" || v.Hook != "INGRESS" {
		t.Fatalf("verdict %+v, want dropped in node-b at flannel.1, TC_INGRESS, hook INGRESS", v)
	}
	if len(fp.asked) != 1 || fp.asked[0] != (progKey{nodeB, 5, devprogs.Ingress}) {
		t.Errorf("asked for %+v, want only node-b ifindex 5 ingress", fp.asked)
	}
	f := finding(j, CodeBPFProgDrop)
	if f == nil || f.Severity != journey.SeverityError || f.Netns != "node-b" || j.Findings[0].Code != CodeBPFProgDrop {
		t.Fatalf("findings %+v, want BPF_PROG_DROP first (error, node-b)", j.Findings)
	}
	requireWords(t, "message", f.Message, "tc ingress of flannel.1 in node-b", "10.244.0.5:4000 -> 10.244.1.2:80", "TC_INGRESS",
		"cil_from_overlay (id 42, tag 0123456789abcdef)", "tcx ingress (#1 in run order), link id 7", "ran 1234 times")
	requireWords(t, "advice", f.Advice, "not involved", "Cilium", "cilium-dbg monitor --type drop", "bpftool prog show id 42",
		"ip netns exec node-b tc filter show dev flannel.1 ingress")
	if strings.Contains(f.Advice, "bpf_stats_enabled") {
		t.Errorf("advice %q says stats are off while they are on", f.Advice)
	}
	if !j.Failed() {
		t.Error("a tc drop must fail the trace")
	}
}

// Several programs at a clsact egress hook (a tcx one and a cls_bpf
// filter): all are named, in run order, with pref and handle; the advice
// says where their owners count drops; stats off is said.
func TestBPFProgDropClsactEgress(t *testing.T) {
	progs := []devprogs.Program{
		{ID: 3, Name: "agent_tcx", Hook: devprogs.Egress, Attach: devprogs.AttachTCX, Order: 1},
		{ID: 9, Name: "calico_tc_main", Tag: "aa", Hook: devprogs.Egress, Attach: devprogs.AttachClsBPF, Order: 1,
			Priority: 49152, Handle: 1, FilterName: "calico_tc_main[aa]", DirectAction: true},
	}
	fp := &fakePrograms{progs: map[progKey][]devprogs.Program{{nodeB, 4, devprogs.Egress}: progs}}
	d := New(Config{Programs: fp})
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j := buildTC(t,
		ev(journey.KindRx, nodeB, "flannel.1", pkt, at(5)),
		ev(journey.KindTx, nodeB, "cni0", pkt, at(3)),
		ev(journey.KindDrop, nodeB, "vethpodb", pkt, at(4), reason(reasonTCEgress)))
	d.Diagnose(j)
	if v := j.Verdict; v.Hook != "EGRESS" || v.Device != "vethpodb" {
		t.Fatalf("verdict %+v, want hook EGRESS at vethpodb", v)
	}
	f := finding(j, CodeBPFProgDrop)
	if f == nil {
		t.Fatalf("findings %+v, want BPF_PROG_DROP", j.Findings)
	}
	requireWords(t, "message", f.Message, "agent_tcx (id 3) attached as tcx egress (#1 in run order)",
		"calico_tc_main (id 9, tag aa) attached as clsact cls_bpf filter egress pref 49152 handle 0x1 direct-action (tc name calico_tc_main[aa])",
		"one of these returned the drop")
	requireWords(t, "advice", f.Advice, "Calico", "calico-node -bpf", "bpftool prog show id 3", "bpftool prog show id 9",
		"tc filter show dev vethpodb egress", "bpf_stats_enabled=1")
}

// TC_* reasons other than TC_INGRESS/TC_EGRESS get their hook from where
// the skb was last seen: received on the device it was freed at: ingress.
// When the programs cannot be read, the finding still says what happened.
func TestBPFProgDropOtherReasonAndListError(t *testing.T) {
	fp := &fakePrograms{err: errors.New("netns inode 4 is gone")}
	d := New(Config{Programs: fp})
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j := buildTC(t,
		ev(journey.KindRx, nodeB, "flannel.1", pkt, at(5)),
		ev(journey.KindDrop, nodeB, "flannel.1", pkt, at(5), reason(reasonTCChainNotFound)))
	d.Diagnose(j)
	if v := j.Verdict; v.Hook != "INGRESS" {
		t.Fatalf("verdict %+v, want hook INGRESS", v)
	}
	f := finding(j, CodeBPFProgDrop)
	if f == nil {
		t.Fatalf("findings %+v, want BPF_PROG_DROP", j.Findings)
	}
	requireWords(t, "message", f.Message, "TC_CHAIN_NOTFOUND", "could not be read", "netns inode 4 is gone")
	requireWords(t, "advice", f.Advice, "not involved", "tc filter show dev flannel.1 ingress")
}

// Without node access (no lister) the hook and a finding are still given.
func TestBPFProgDropWithoutNodeState(t *testing.T) {
	d := New(Config{})
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j := buildTC(t,
		ev(journey.KindTx, nodeB, "cni0", pkt, at(3)),
		ev(journey.KindDrop, nodeB, "vethpodb", pkt, at(4), reason(reasonTCEgress)))
	d.Diagnose(j)
	if j.Verdict.Hook != "EGRESS" || finding(j, CodeBPFProgDrop) == nil {
		t.Fatalf("verdict %+v findings %+v, want EGRESS and BPF_PROG_DROP", j.Verdict, j.Findings)
	}
}

// A generic-mode XDP program's drop is seen (reason XDP): BPF_PROG_DROP
// names the XDP program, no tc hook is claimed.
func TestBPFProgDropGenericXDP(t *testing.T) {
	x := devprogs.Program{ID: 5, Name: "xdp_fw", Hook: devprogs.XDP, Attach: devprogs.AttachXDP, Mode: "generic"}
	fp := &fakePrograms{progs: map[progKey][]devprogs.Program{{nodeB, 2, devprogs.XDP}: {x}}}
	d := New(Config{Programs: fp})
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j := buildTC(t,
		ev(journey.KindRx, nodeB, "eth0", pkt, at(2)),
		ev(journey.KindDrop, nodeB, "eth0", pkt, at(2), reason(reasonXDP)))
	d.Diagnose(j)
	f := finding(j, CodeBPFProgDrop)
	if f == nil || j.Verdict.Hook != "" {
		t.Fatalf("verdict %+v findings %+v, want no tc hook and BPF_PROG_DROP", j.Verdict, j.Findings)
	}
	requireWords(t, "message", f.Message, "XDP hook (generic mode) of eth0", "xdp_fw (id 5) attached as xdp (generic)")
	requireWords(t, "advice", f.Advice, "ip netns exec node-b ip link show dev eth0")
}

// xdpState: the router's rb (ifindex 3) is the veth peer of node-b's eth0
// (ifindex 2).
func xdpState() *nodestate.State {
	st := labState("198.51.100.20")
	st.Namespaces[nodeB].Links[0].ParentIndex = 3
	st.Namespaces[router] = &nodestate.Netns{Inode: router, Name: "router", Links: []nodestate.Link{
		{Index: 3, Name: "rb", Type: "veth", ParentIndex: 2}}}
	return st
}

// The router sent the VXLAN packet to node-b's eth0, where the skb was
// freed on arrival and nothing carried it on; node-b's eth0 runs an XDP
// program: verdict lost at rb, XDP_PROG_DROP names the program, says it is
// an inference, and VXLAN_DST_UNKNOWN does not claim the VTEP unreachable.
func TestXDPProgDropInferred(t *testing.T) {
	x := devprogs.Program{ID: 77, Name: "xdp_lb", Tag: "ff", Hook: devprogs.XDP, Attach: devprogs.AttachXDP, Mode: "native", RunCount: 99}
	for _, stats := range []bool{true, false} {
		fp := &fakePrograms{progs: map[progKey][]devprogs.Program{{nodeB, 2, devprogs.XDP}: {x}}, stats: stats}
		d := New(Config{Programs: fp})
		d.state = xdpState()
		pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
		j := buildTC(t,
			ev(journey.KindTx, nodeA, "flannel.1", pkt, at(5)),
			ev(journey.KindTx, nodeA, "eth0", pkt, encap("198.51.100.20"), at(2)),
			ev(journey.KindRx, router, "ra", pkt, encap("198.51.100.20"), at(2)),
			ev(journey.KindTx, router, "rb", pkt, encap("198.51.100.20"), at(3)),
			ev(journey.KindConsume, nodeB, "eth0", pkt, encap("198.51.100.20"), at(2)))
		d.Diagnose(j)
		if v := j.Verdict; v.Kind != journey.Lost || v.Netns != "router" || v.Device != "rb" {
			t.Fatalf("verdict %+v, want lost in router at rb", v)
		}
		f := finding(j, CodeXDPProgDrop)
		if f == nil || f.Severity != journey.SeverityError || f.Netns != "node-b" || j.Findings[0].Code != CodeXDPProgDrop {
			t.Fatalf("findings %+v, want XDP_PROG_DROP first (error, node-b)", j.Findings)
		}
		requireWords(t, "message", f.Message, "router sent the VXLAN packet", "through rb", "eth0 in node-b",
			"xdp_lb (id 77, tag ff) attached as xdp (native)", "freed there on arrival", "Inferred, not observed")
		if stats {
			requireWords(t, "message", f.Message, "run 99 times")
		} else {
			requireWords(t, "message", f.Message, "BPF statistics are off")
			requireWords(t, "advice", f.Advice, "bpf_stats_enabled=1")
		}
		if g := finding(j, CodeVXLANDstUnknown); g != nil {
			t.Errorf("the packet reached node-b, yet %+v", g)
		}
		if finding(j, CodeNoReply) != nil {
			t.Errorf("lost, yet NO_REPLY: %+v", j.Findings)
		}
	}
}

// Lost after the same transmission but no XDP program on the receiving
// end: no XDP finding, and nothing is blamed on a program.
func TestXDPProgDropNeedsAProgram(t *testing.T) {
	fp := &fakePrograms{}
	d := New(Config{Programs: fp})
	d.state = xdpState()
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j := buildTC(t,
		ev(journey.KindTx, router, "rb", pkt, encap("198.51.100.20"), at(3)),
		ev(journey.KindConsume, nodeB, "eth0", pkt, encap("198.51.100.20"), at(2)))
	d.Diagnose(j)
	if j.Verdict.Kind != journey.Lost {
		t.Fatalf("verdict %+v, want lost", j.Verdict)
	}
	if finding(j, CodeXDPProgDrop) != nil || finding(j, CodeBPFProgDrop) != nil {
		t.Errorf("findings %+v blame a program that is not there", j.Findings)
	}
	if len(fp.asked) != 1 || fp.asked[0] != (progKey{nodeB, 2, devprogs.XDP}) {
		t.Errorf("asked %+v, want node-b eth0's XDP only", fp.asked)
	}
}

// Generic XDP frees what it drops with NOT_SPECIFIED on 6.18: right after
// the receive on a device with a generic-mode XDP program, that program is
// named; without one (or with a native one, which never sees an skb)
// nothing is claimed.
func TestBPFProgDropGenericXDPNotSpecified(t *testing.T) {
	const notSpecified = 20
	tcReasons[notSpecified] = "NOT_SPECIFIED"
	defer delete(tcReasons, notSpecified)
	for _, c := range []struct {
		mode string
		want bool
	}{{"generic", true}, {"native", false}, {"", false}} {
		fp := &fakePrograms{progs: map[progKey][]devprogs.Program{}}
		if c.mode != "" {
			fp.progs[progKey{podB, 2, devprogs.XDP}] = []devprogs.Program{{ID: 5, Name: "xdp_fw", Hook: devprogs.XDP, Attach: devprogs.AttachXDP, Mode: c.mode}}
		}
		d := New(Config{Programs: fp})
		pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
		j := buildTC(t,
			ev(journey.KindTx, nodeB, "vethpodb", pkt, at(4)),
			ev(journey.KindRx, podB, "eth0", pkt, at(2)),
			ev(journey.KindDrop, podB, "eth0", pkt, at(2), reason(notSpecified)))
		d.Diagnose(j)
		f := finding(j, CodeBPFProgDrop)
		if (f != nil) != c.want {
			t.Fatalf("mode %q: findings %+v, want BPF_PROG_DROP: %v", c.mode, j.Findings, c.want)
		}
		if f != nil {
			requireWords(t, "message", f.Message, "right after eth0 received it", "xdp_fw (id 5) attached as xdp (generic)")
		}
	}
}

// fakePeers confirms veth peers from a fixed list.
type fakePeers map[[3]uint32]bool

func (f fakePeers) PeerIn(ino uint32, ifindex int, peer uint32) (bool, error) {
	return f[[3]uint32{ino, uint32(ifindex), peer}], nil
}

// redirectState: node-b's vethpodb (ifindex 4) <-> pod-b's eth0 (ifindex
// 2, 10.244.1.2), and another namespace "other-pod" with the same
// ifindexes and address (another lab "node" on the same kernel).
func redirectState() *nodestate.State {
	st := labState("198.51.100.20")
	b := st.Namespaces[nodeB]
	b.Links = append(b.Links, nodestate.Link{Index: 4, Name: "vethpodb", Type: "veth", ParentIndex: 2, Master: 3})
	pod := func(ino uint32, name string) *nodestate.Netns {
		return &nodestate.Netns{Inode: ino, Name: name, Links: []nodestate.Link{
			{Index: 2, Name: "eth0", Type: "veth", ParentIndex: 4, Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.1.2/24")}}}}
	}
	st.Namespaces[podB] = pod(podB, "pod-b")
	st.Namespaces[99] = pod(99, "other-pod")
	return st
}

// A passive trace of bpf_redirect_peer: received on node-b's flannel.1,
// then freed by pod-b's socket with no place given. The delivery is put
// in pod-b (whose eth0 holds the destination and is confirmed as the peer
// of node-b's vethpodb), after a redirect hop; without the kernel's
// confirmation two namespaces qualify and nothing is moved.
func TestRedirectedDeliveryPlaced(t *testing.T) {
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	journeyOf := func() *journey.Journey {
		return buildTC(t,
			ev(journey.KindRx, nodeB, "eth0", pkt, encap("198.51.100.20"), at(2)),
			ev(journey.KindRx, nodeB, "flannel.1", pkt, at(5)),
			ev(journey.KindConsume, 0, "", pkt))
	}
	d := New(Config{VethPeers: fakePeers{{nodeB, 4, podB}: true}})
	d.state = redirectState()
	j := journeyOf()
	d.Diagnose(j)
	if v := j.Verdict; v.Kind != journey.Delivered || v.Netns != "pod-b" || v.Device != "eth0" {
		t.Fatalf("verdict %+v, want delivered in pod-b at eth0", v)
	}
	n := len(j.Hops)
	if got := fmt.Sprint(j.Hops[n-3].Device, " ", j.Hops[n-2], " ", j.Hops[n-1]); !strings.HasPrefix(got, "flannel.1 {") ||
		j.Hops[n-2].Event != journey.HopRedirect || j.Hops[n-2].Netns != "pod-b" || j.Hops[n-1].Netns != "pod-b" || j.Hops[n-1].Event != "consume" {
		t.Errorf("hops end %s, want flannel.1, redirect in pod-b, consume in pod-b", got)
	}

	d = New(Config{})
	d.state = redirectState()
	j = journeyOf()
	d.Diagnose(j)
	if v := j.Verdict; v.Netns != "node-b" {
		t.Errorf("verdict %+v: two namespaces qualify, the delivery must not be moved", v)
	}

	// received in pod-b itself: already in place
	d = New(Config{VethPeers: fakePeers{{nodeB, 4, podB}: true}})
	d.state = redirectState()
	j = buildTC(t,
		ev(journey.KindTx, nodeB, "vethpodb", pkt, at(4)),
		ev(journey.KindRx, podB, "eth0", pkt, at(2)),
		ev(journey.KindConsume, 0, "", pkt))
	d.Diagnose(j)
	if v := j.Verdict; v.Netns != "pod-b" || hopsHave(j, journey.HopRedirect) {
		t.Errorf("verdict %+v hops %+v: an ordinary delivery was changed", v, j.Hops)
	}
}

func hopsHave(j *journey.Journey, event string) bool {
	for _, h := range j.Hops {
		if h.Event == event {
			return true
		}
	}
	return false
}
