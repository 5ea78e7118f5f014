package diagnose

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nodestate"
)

const (
	podA, nodeA, router, nodeB, podB = 1, 2, 3, 4, 5
)

var names = map[uint32]string{podA: "pod-a", nodeA: "node-a", router: "router", nodeB: "node-b", podB: "pod-b"}

func tcp(src, dst string, sport, dport uint16) journey.Tuple {
	return journey.Tuple{Proto: journey.ProtoTCP, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Sport: sport, Dport: dport, TCPFlags: 2, IPLen: 60}
}

// build runs recorded events through the builder, as the tracer would.
func build(t *testing.T, evs ...journey.Event) *journey.Journey {
	t.Helper()
	b := journey.NewBuilder(journey.Options{NetnsName: func(i uint32) string { return names[i] },
		ReasonName: func(r uint32) string { return map[uint32]string{1: "IP_INNOROUTES", 2: "NO_SOCKET"}[r] }})
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

// labState is two flannel nodes as nodestate reads them.
func labState(nodeBFDB string) *nodestate.State {
	vx := func(local, mac, peerMAC, peerDst string) nodestate.Link {
		return nodestate.Link{Index: 5, Name: "flannel.1", Type: "vxlan", MTU: 1450, MAC: mac,
			VXLAN: &nodestate.VXLAN{VNI: 1, Port: 8472, Local: netip.MustParseAddr(local),
				FDB: []nodestate.FDBEntry{{MAC: peerMAC, Dst: netip.MustParseAddr(peerDst)}}}}
	}
	return &nodestate.State{Namespaces: map[uint32]*nodestate.Netns{
		nodeA: {Inode: nodeA, Name: "node-a", Links: []nodestate.Link{
			{Index: 2, Name: "eth0", Type: "veth", MTU: 1500, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24")}},
			{Index: 3, Name: "cni0", Type: "bridge", MTU: 1450, Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.0.1/24")}},
			vx("192.0.2.10", "0a:00", "0b:00", nodeBFDB)}},
		nodeB: {Inode: nodeB, Name: "node-b", Links: []nodestate.Link{
			{Index: 2, Name: "eth0", Type: "veth", MTU: 1500, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.20/24")}},
			{Index: 3, Name: "cni0", Type: "bridge", MTU: 1450, Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.1.1/24")}},
			vx("198.51.100.20", "0b:00", "0a:00", "192.0.2.10")}},
	}}
}

func encap(outerDst string) func(*journey.Event) {
	return func(e *journey.Event) {
		e.Encap, e.VNI = true, 1
		e.Outer = journey.Tuple{Proto: journey.ProtoUDP, Src: netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr(outerDst), Dport: 8472}
	}
}

func ev(kind journey.Kind, ns uint32, dev string, t journey.Tuple, mods ...func(*journey.Event)) journey.Event {
	e := journey.Event{Kind: kind, Netns: ns, Ifname: dev, Pkt: t, MTU: 1500}
	for _, m := range mods {
		m(&e)
	}
	return e
}

func TestWrongVTEP(t *testing.T) {
	d := New(Config{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12")})
	d.state = labState("192.0.2.10")
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j := build(t,
		ev(journey.KindTx, podA, "eth0", pkt),
		ev(journey.KindTx, nodeA, "flannel.1", pkt),
		ev(journey.KindTx, nodeA, "eth0", pkt, encap("203.0.113.20")),
		ev(journey.KindRx, router, "ra", pkt, encap("203.0.113.20")),
		ev(journey.KindDrop, router, "ra", pkt, encap("203.0.113.20"), func(e *journey.Event) { e.Reason = 1 }))
	d.Diagnose(j)
	if len(j.Findings) == 0 || j.Findings[0].Code != CodeVXLANDstUnknown || j.Findings[0].Netns != "node-a" {
		t.Fatalf("findings %+v, want VXLAN_DST_UNKNOWN in node-a first", j.Findings)
	}
	if m := j.Findings[0].Message; !strings.Contains(m, "203.0.113.20") || !strings.Contains(m, "198.51.100.20") {
		t.Errorf("message %q must name the bogus and the real VTEP", m)
	}
	var noRoute bool
	for _, f := range j.Findings {
		noRoute = noRoute || (f.Code == CodeNoRoute && strings.Contains(f.Message, "203.0.113.20"))
	}
	if !noRoute {
		t.Errorf("findings %+v: want NO_ROUTE naming the outer destination", j.Findings)
	}
}

func TestSourceMismatch(t *testing.T) {
	d := New(Config{})
	d.state = labState("192.0.2.10")
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	wrongSrc := func(e *journey.Event) { e.Outer.Src = netip.MustParseAddr("192.0.2.11") }
	j := build(t,
		ev(journey.KindTx, podA, "eth0", pkt),
		ev(journey.KindTx, nodeA, "flannel.1", pkt),
		ev(journey.KindTx, nodeA, "eth0", pkt, encap("198.51.100.20"), wrongSrc),
		ev(journey.KindRx, nodeB, "eth0", pkt, encap("198.51.100.20"), wrongSrc),
		ev(journey.KindRx, nodeB, "flannel.1", pkt),
		ev(journey.KindTx, nodeB, "cni0", pkt),
		ev(journey.KindRx, podB, "eth0", pkt),
		ev(journey.KindConsume, podB, "", pkt))
	d.Diagnose(j)
	if len(j.Findings) == 0 || j.Findings[0].Code != CodeVXLANSrcMismatch || !strings.Contains(j.Findings[0].Message, "192.0.2.11") {
		t.Fatalf("findings %+v, want VXLAN_SRC_MISMATCH naming 192.0.2.11", j.Findings)
	}
}

func TestServiceNotDNATedAndNoListener(t *testing.T) {
	d := New(Config{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12")})
	svc := tcp("10.244.0.5", "10.96.0.100", 4000, 80)
	j := build(t,
		ev(journey.KindTx, podA, "eth0", svc),
		ev(journey.KindRx, nodeA, "cni0", svc),
		ev(journey.KindTx, nodeA, "eth0", svc),
		ev(journey.KindDrop, router, "ra", svc, func(e *journey.Event) { e.Reason = 1 }))
	d.Diagnose(j)
	if j.Findings[0].Code != CodeServiceNotDNATed || j.Findings[0].Netns != "node-a" {
		t.Errorf("findings %+v, want SERVICE_NOT_DNATED in node-a first", j.Findings)
	}

	pod := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j = build(t, ev(journey.KindTx, podA, "eth0", pod), ev(journey.KindRx, podB, "eth0", pod),
		ev(journey.KindDrop, podB, "eth0", pod, func(e *journey.Event) { e.Reason = 2 }))
	d.Diagnose(j)
	if len(j.Findings) != 1 || j.Findings[0].Code != CodeNoListener || j.Findings[0].Netns != "pod-b" {
		t.Errorf("findings %+v, want NO_LISTENER in pod-b", j.Findings)
	}
}

func TestNoReplyAndHealthy(t *testing.T) {
	d := New(Config{})
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j := build(t, ev(journey.KindTx, podA, "eth0", pkt), ev(journey.KindRx, podB, "eth0", pkt), ev(journey.KindConsume, podB, "", pkt))
	d.Diagnose(j)
	if len(j.Findings) != 1 || j.Findings[0].Code != CodeNoReply {
		t.Errorf("findings %+v, want NO_REPLY", j.Findings)
	}
	reply := tcp("10.244.1.2", "10.244.0.5", 80, 4000)
	reply.TCPFlags = 0x12
	evs := []journey.Event{ev(journey.KindTx, podA, "eth0", pkt), ev(journey.KindRx, podB, "eth0", pkt), ev(journey.KindConsume, podB, "", pkt)}
	b := journey.NewBuilder(journey.Options{NetnsName: func(i uint32) string { return names[i] }})
	for i, e := range evs {
		e.Journey, e.TimeNs, e.Skb = 2, uint64(i+1), 7
		b.Add(e)
	}
	b.Add(journey.Event{Journey: 3, TimeNs: 9, Skb: 8, Kind: journey.KindTx, Netns: podB, Ifname: "eth0", Pkt: reply})
	j = b.Close()[0]
	d.Diagnose(j)
	if len(j.Findings) != 0 {
		t.Errorf("healthy journey with a reply has findings %+v", j.Findings)
	}
}

func TestEventsLostIsAWarning(t *testing.T) {
	d := New(Config{})
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j := build(t, ev(journey.KindTx, podA, "eth0", pkt), ev(journey.KindDrop, nodeB, "eth0", pkt, func(e *journey.Event) { e.Reason = 9 }))
	j.LostEvents = 3
	d.Diagnose(j)
	last := j.Findings[len(j.Findings)-1]
	if last.Code != CodeEventsLost || last.Severity != journey.SeverityWarning {
		t.Errorf("findings %+v, want EVENTS_LOST (warning) last", j.Findings)
	}
}

// A netfilter drop no observer saw (none was attached there yet): the hooks
// the packet can have been at follow from what the devices saw.
func TestSuspectHooks(t *testing.T) {
	syn := tcp("10.244.0.2", "10.244.1.2", 40000, 80)
	fwd := build(t,
		journey.Event{Kind: journey.KindTx, Netns: podA, Ifname: "eth0", Pkt: syn},
		journey.Event{Kind: journey.KindRx, Netns: nodeB, Ifname: "flannel.1", Pkt: syn},
		journey.Event{Kind: journey.KindDrop, Netns: nodeB, Pkt: syn, Reason: 12},
	)
	ev, hooks, ok := suspectHooks(fwd)
	if !ok || ev.Ifname != "flannel.1" || ev.Stage != journey.StageWholeHook {
		t.Fatalf("received: %v %+v", ok, ev)
	}
	if want := []uint8{journey.HookPreRouting, journey.HookLocalIn, journey.HookForward, journey.HookPostRouting}; string(hooks) != string(want) {
		t.Errorf("received: hooks %v, want %v", hooks, want)
	}

	local := build(t, journey.Event{Kind: journey.KindDrop, Netns: podA, Pkt: syn, Reason: 12})
	if _, hooks, ok := suspectHooks(local); !ok || string(hooks) != string([]uint8{journey.HookLocalOut, journey.HookPostRouting}) {
		t.Errorf("sent: %v %v", ok, hooks)
	}

	seen := build(t,
		journey.Event{Kind: journey.KindRx, Netns: nodeB, Ifname: "flannel.1", Pkt: syn},
		journey.Event{Kind: journey.KindNF, Netns: nodeB, Ifname: "flannel.1", Pkt: syn, Hook: journey.HookForward, Stage: 0},
		journey.Event{Kind: journey.KindDrop, Netns: nodeB, Pkt: syn, Reason: 12},
	)
	if _, _, ok := suspectHooks(seen); ok {
		t.Error("an observed drop is not guessed")
	}
	if lo, hi := journey.StageRange(journey.HookForward, journey.StageWholeHook); lo > -300 || hi < 100 {
		t.Errorf("whole hook range %d..%d", lo, hi)
	}
	if got := journey.TableAfterStage(journey.HookForward, journey.StageWholeHook); got != "mangle/filter/security" {
		t.Errorf("tables of the whole FORWARD hook: %q", got)
	}
}

// A received packet no observer saw went through INPUT or FORWARD, as its
// route says: kube-proxy's nftables table jumps from both filter-input and
// filter-forward to the same reject, so the rules alone cannot tell.
func TestRoutedHooks(t *testing.T) {
	rx := []uint8{journey.HookPreRouting, journey.HookLocalIn, journey.HookForward, journey.HookPostRouting}
	if got, want := routedHooks(rx, false), []uint8{journey.HookPreRouting, journey.HookForward, journey.HookPostRouting}; string(got) != string(want) {
		t.Errorf("forwarded: %v, want %v", got, want)
	}
	if got, want := routedHooks(rx, true), []uint8{journey.HookPreRouting, journey.HookLocalIn}; string(got) != string(want) {
		t.Errorf("local: %v, want %v", got, want)
	}
	tx := []uint8{journey.HookLocalOut, journey.HookPostRouting}
	for _, local := range []bool{false, true} {
		if got := routedHooks(tx, local); string(got) != string(tx) {
			t.Errorf("sent (local %v): %v, want %v", local, got, tx)
		}
	}
	if string(rx) != string([]uint8{journey.HookPreRouting, journey.HookLocalIn, journey.HookForward, journey.HookPostRouting}) {
		t.Errorf("routedHooks changed its argument: %v", rx)
	}
}

// announcedState is the lab with the real flanneld and node-b started with
// --public-ip 203.0.113.21, an address node-b holds on eth0 that the router
// does not route. local is node-b's flannel.1 local address: flanneld
// v0.26 keeps the --iface address there, later ones may use the
// announced one.
func announcedState(local string) *nodestate.State {
	st := labState("192.0.2.10")
	st.Namespaces[nodeA].Links[2].VXLAN.FDB[0].Dst = netip.MustParseAddr("203.0.113.21")
	b := st.Namespaces[nodeB]
	b.Links[0].Addrs = append(b.Links[0].Addrs, netip.MustParsePrefix("203.0.113.21/32"))
	b.Links[2].VXLAN.Local = netip.MustParseAddr(local)
	st.Namespaces[router] = &nodestate.Netns{Inode: router, Name: "router",
		Links: []nodestate.Link{
			{Index: 2, Name: "ra", Type: "veth", MTU: 1500, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}},
			{Index: 3, Name: "rb", Type: "veth", MTU: 1500, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")}}},
		Routes: []nodestate.Route{
			{Dst: netip.MustParsePrefix("192.0.2.0/24"), Dev: "ra"},
			{Dst: netip.MustParsePrefix("198.51.100.0/24"), Dev: "rb"}}}
	return st
}

// Seed 000 with the real flanneld: whichever local address node-b's VXLAN
// device has, the fix named is flannel's public address, with the address
// that works, and the router's missing route is no second error.
func TestAnnouncedUnreachablePublicIP(t *testing.T) {
	for _, local := range []string{"198.51.100.20", "203.0.113.21"} {
		t.Run("local="+local, func(t *testing.T) {
			d := New(Config{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12")})
			d.state = announcedState(local)
			pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
			j := build(t,
				ev(journey.KindTx, podA, "eth0", pkt),
				ev(journey.KindTx, nodeA, "flannel.1", pkt),
				ev(journey.KindTx, nodeA, "eth0", pkt, encap("203.0.113.21")),
				ev(journey.KindRx, router, "ra", pkt, encap("203.0.113.21")),
				ev(journey.KindDrop, router, "ra", pkt, encap("203.0.113.21"), func(e *journey.Event) { e.Reason = 1 }))
			d.Diagnose(j)
			if len(j.Findings) == 0 || j.Findings[0].Code != CodeVXLANDstUnknown || j.Findings[0].Severity != journey.SeverityError {
				t.Fatalf("findings %+v, want VXLAN_DST_UNKNOWN first", j.Findings)
			}
			f := j.Findings[0]
			if !strings.Contains(f.Message, "198.51.100.20") || !strings.Contains(f.Advice, "--public-ip") || !strings.Contains(f.Advice, "public-ip-overwrite") {
				t.Errorf("finding %+v must name 198.51.100.20 and flannel's --public-ip / public-ip-overwrite", f)
			}
			if !strings.Contains(f.Advice, "--public-ip=198.51.100.20") {
				t.Errorf("advice %q must name the address that works", f.Advice)
			}
			for _, g := range j.Findings[1:] {
				if g.Severity == journey.SeverityError || strings.Contains(g.Advice, "add a route") {
					t.Errorf("secondary finding %+v: must not be an error nor send the user to add a route", g)
				}
			}
		})
	}
}
