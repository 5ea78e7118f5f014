package journey

import (
	"net/netip"
	"reflect"
	"testing"
)

// One TCP SYN from pod A (netns 100) over node A (200), VXLAN, to node B
// (300) where netfilter drops it in FORWARD: the same packet as each
// backend reports it.

const (
	bkPod          = 100
	bkNodeA        = 200
	bkNodeB        = 300
	bkSkb          = 0xffff888012340000
	bkReasonNFDrop = 12
)

var (
	bkSyn = Tuple{Proto: ProtoTCP, Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr("10.244.1.2"),
		Sport: 43122, Dport: 80, TCPFlags: 0x02}
	bkOuter = Tuple{Proto: ProtoUDP, Src: netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr("198.51.100.20"),
		Sport: 51000, Dport: 8472}
)

type bkStep struct {
	kind   Kind
	netns  uint32
	dev    string
	encap  bool
	hook   uint8
	stage  uint8
	reason uint32
}

// bkEvents turns steps into the bkEvents one source reports, 1µs apart.
func bkEvents(src Source, steps []bkStep) []Event {
	out := make([]Event, len(steps))
	for i, s := range steps {
		e := Event{
			TimeNs: 1_000_000 + uint64(i)*1000, Skb: bkSkb, Journey: 2,
			Netns: s.netns, Ifindex: uint32(10 + i), Ifname: s.dev,
			Kind: s.kind, Source: src, Hook: s.hook, Stage: s.stage, Reason: s.reason,
			Len: 60, MTU: 1450, Pkt: bkSyn,
		}
		if s.encap {
			e.Encap, e.Outer, e.VNI = true, bkOuter, 1
		}
		if s.kind == KindNF {
			e.Source = SourceNetfilter
		}
		out[i] = e
	}
	return out
}

// The bkEvents both backends report for the packet: rx, tx and the drop.
var bkCommon = []bkStep{
	{kind: KindTx, netns: bkPod, dev: "eth0"},
	{kind: KindRx, netns: bkNodeA, dev: "veth1"},
	{kind: KindTx, netns: bkNodeA, dev: "flannel.1"},
	{kind: KindTx, netns: bkNodeA, dev: "eth1", encap: true},
	{kind: KindRx, netns: bkNodeB, dev: "eth1", encap: true},
	{kind: KindRx, netns: bkNodeB, dev: "flannel.1"},
	{kind: KindDrop, netns: bkNodeB, dev: "flannel.1", reason: bkReasonNFDrop},
}

func bkBuild(t *testing.T, evs []Event) *Journey {
	t.Helper()
	nsNames := map[uint32]string{bkPod: "pod-a", bkNodeA: "node-a", bkNodeB: "node-b"}
	b := NewBuilder(Options{
		NetnsName: func(ino uint32) string { return nsNames[ino] },
		ReasonName: func(r uint32) string {
			if r == bkReasonNFDrop {
				return "NETFILTER_DROP"
			}
			return "OTHER"
		},
	})
	for _, e := range evs {
		b.Add(e)
	}
	js := b.Close()
	if len(js) != 1 {
		t.Fatalf("got %d journeys, want 1", len(js))
	}
	return js[0]
}

func TestSameJourneyFromBothBackends(t *testing.T) {
	tp := bkBuild(t, bkEvents(SourceTracepoint, bkCommon))
	kp := bkBuild(t, bkEvents(SourceKprobe, bkCommon))

	if tp.Verdict.Kind != Dropped || tp.Verdict.Reason != "NETFILTER_DROP" || tp.Verdict.Netns != "node-b" {
		t.Fatalf("tracepoint journey verdict = %+v, want dropped NETFILTER_DROP in node-b", tp.Verdict)
	}
	for _, c := range []struct {
		what   string
		tp, kp any
	}{
		{"packet", tp.Packet, kp.Packet},
		{"hops", tp.Hops, kp.Hops},
		{"verdict", tp.Verdict, kp.Verdict},
		{"reason", tp.Verdict.Reason, kp.Verdict.Reason},
		{"encaps", tp.Encaps, kp.Encaps},
		{"rewrites", tp.Rewrites, kp.Rewrites},
	} {
		if !reflect.DeepEqual(c.tp, c.kp) {
			t.Errorf("%s differ:\ntracepoint %+v\nkprobe     %+v", c.what, c.tp, c.kp)
		}
	}
	if len(tp.Hops) != len(bkCommon) {
		t.Errorf("got %d hops, want %d", len(tp.Hops), len(bkCommon))
	}
}

// The kprobe backend adds what only it sees: netfilter verdicts per hook and
// the tunnel transmit. The tp_btf backend sees netfilter through observers.
func TestKprobeExtrasKeepTheJourney(t *testing.T) {
	tpSteps := bkInsert(bkCommon, 6, // the netfilter observer of node B's FORWARD
		bkStep{kind: KindNF, netns: bkNodeB, dev: "flannel.1", hook: HookForward, stage: 0},
	)
	kpSteps := bkInsert(bkCommon, 6,
		bkStep{kind: KindNFVerdict, netns: bkNodeB, dev: "flannel.1", hook: HookPreRouting, reason: NFAccept},
		bkStep{kind: KindNFVerdict, netns: bkNodeB, dev: "flannel.1", hook: HookForward, reason: NFDrop},
	)
	kpSteps = bkInsert(kpSteps, 3, bkStep{kind: KindTunnel, netns: bkNodeA, dev: "flannel.1", hook: ProtoUDP})
	tp := bkBuild(t, bkEvents(SourceTracepoint, tpSteps))
	kp := bkBuild(t, bkEvents(SourceKprobe, kpSteps))

	if !reflect.DeepEqual(tp.Encaps, kp.Encaps) {
		t.Errorf("encaps differ:\ntracepoint %+v\nkprobe     %+v", tp.Encaps, kp.Encaps)
	}
	if len(kp.Encaps) != 1 || kp.Encaps[0].Device != "flannel.1" || kp.Encaps[0].OuterSrc != "192.0.2.10" {
		t.Errorf("kprobe encaps = %+v, want one vxlan encap on flannel.1 from 192.0.2.10", kp.Encaps)
	}
	for _, v := range []Verdict{tp.Verdict, kp.Verdict} {
		if v.Kind != Dropped || v.Reason != "NETFILTER_DROP" || v.Netns != "node-b" || v.Device != "flannel.1" {
			t.Errorf("verdict = %+v, want dropped NETFILTER_DROP in node-b on flannel.1", v)
		}
	}
	// the observer pins the hook, and the tables it leaves, in the tracepoint journey
	if tp.Verdict.Hook != "FORWARD" || tp.Verdict.Table != "mangle/filter/security" {
		t.Errorf("tracepoint verdict hook/table = %q/%q, want FORWARD/mangle/filter/security", tp.Verdict.Hook, tp.Verdict.Table)
	}
	// every hop the tracepoints saw is in the kprobe journey, in order
	if !bkSubsequence(bkPlainHops(tp.Hops), kp.Hops) {
		t.Errorf("kprobe hops %+v lack the tracepoint hops %+v", kp.Hops, tp.Hops)
	}

	// what the builder learns from the kprobe verdict (see pinNFVerdict)
	end := &kp.Events[len(kp.Events)-1]
	v := Verdict{}
	if !pinNFVerdict(&v, kp.Events, end) || v.Hook != "FORWARD" || v.Table != "" {
		t.Errorf("pinNFVerdict(kprobe) = %+v, want hook FORWARD, no table", v)
	}
	// with observers as well, the table comes from the last observer stage
	both := bkBuild(t, bkEvents(SourceKprobe, bkInsert(tpSteps, 7,
		bkStep{kind: KindNFVerdict, netns: bkNodeB, dev: "flannel.1", hook: HookForward, reason: NFDrop})))
	v = Verdict{}
	if !pinNFVerdict(&v, both.Events, &both.Events[len(both.Events)-1]) || v.Hook != "FORWARD" || v.Table != "mangle/filter/security" {
		t.Errorf("pinNFVerdict(kprobe+observers) = %+v, want FORWARD/mangle/filter/security", v)
	}
	// no verdict: nothing pinned
	v = Verdict{}
	if pinNFVerdict(&v, tp.Events, &tp.Events[len(tp.Events)-1]) || v != (Verdict{}) {
		t.Errorf("pinNFVerdict(tracepoint) = %+v, want nothing", v)
	}
}

func TestKprobeHopNames(t *testing.T) {
	for _, c := range []struct {
		e    Event
		want string
	}{
		{Event{Kind: KindNFVerdict, Hook: HookForward, Reason: NFDrop}, "nf:FORWARD drop"},
		{Event{Kind: KindNFVerdict, Hook: HookLocalOut, Reason: NFAccept}, "nf:OUTPUT accept"},
		{Event{Kind: KindTunnel, Hook: ProtoUDP}, "tunnel:vxlan"},
		{Event{Kind: KindTunnel, Hook: 4}, "tunnel:ipip"},
		{Event{Kind: KindTunnel, Hook: 47}, "tunnel:gre"},
		{Event{Kind: KindTx}, ""},
	} {
		if got := HopName(c.e); got != c.want {
			t.Errorf("HopName(%v hook %d reason %d) = %q, want %q", c.e.Kind, c.e.Hook, c.e.Reason, got, c.want)
		}
	}
}

func bkInsert(steps []bkStep, i int, extra ...bkStep) []bkStep {
	out := append([]bkStep{}, steps[:i]...)
	out = append(out, extra...)
	return append(out, steps[i:]...)
}

// bkPlainHops drops the netfilter observer hops, which only one backend has.
func bkPlainHops(hops []Hop) []Hop {
	var out []Hop
	for _, h := range hops {
		if len(h.Event) < 3 || h.Event[:3] != "nf:" {
			out = append(out, h)
		}
	}
	return out
}

// bkSubsequence reports whether want appears in got in order (time aside:
// extra bkEvents shift the offsets).
func bkSubsequence(want, got []Hop) bool {
	i := 0
	for _, h := range got {
		if i < len(want) && h.Netns == want[i].Netns && h.Device == want[i].Device && h.Event == want[i].Event {
			i++
		}
	}
	return i == len(want)
}
