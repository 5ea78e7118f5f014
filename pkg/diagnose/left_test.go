package diagnose

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nodestate"
)

// exitState is node A with a tun device nic0 (ifindex 9) and an eth0 veth
// whose peer, ra (ifindex 7), is in the router namespace: read when
// withRouter, else out of sight. Node B is read as well.
func exitState(withRouter bool) *nodestate.State {
	st := labState("198.51.100.20")
	a := st.Namespaces[nodeA]
	a.Links[0].ParentIndex = 7 // eth0 <-> ra
	a.Links = append(a.Links,
		nodestate.Link{Index: 1, Name: "lo", Type: "device", Loopback: true},
		nodestate.Link{Index: 9, Name: "nic0", Type: "tuntap", MTU: 1500})
	a.Routes = []nodestate.Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("192.0.2.1"), Dev: "eth0"},
		{Dst: netip.MustParsePrefix("198.51.100.20/32"), Dev: "nic0"},
	}
	if withRouter {
		st.Namespaces[router] = &nodestate.Netns{Inode: router, Name: "router", Links: []nodestate.Link{
			{Index: 7, Name: "ra", Type: "veth", ParentIndex: 2}}}
	}
	return st
}

func at(ifindex uint32) func(*journey.Event) { return func(e *journey.Event) { e.Ifindex = ifindex } }

func finding(j *journey.Journey, code string) *journey.Finding {
	for i := range j.Findings {
		if j.Findings[i].Code == code {
			return &j.Findings[i]
		}
	}
	return nil
}

// requireLeft checks the verdict and the LEFT_NODE finding, and that the
// message names each of words.
func requireLeft(t *testing.T, j *journey.Journey, dev string, words ...string) {
	t.Helper()
	if v := j.Verdict; v.Kind != journey.Left || v.Netns != "node-a" || v.Device != dev || v.Reason != "" {
		t.Fatalf("verdict %+v, want left in node-a at %s", v, dev)
	}
	f := finding(j, CodeLeftNode)
	if f == nil || f.Severity != journey.SeverityInfo || f.Netns != "node-a" || f.Advice == "" {
		t.Fatalf("findings %+v, want LEFT_NODE (info, node-a, with advice)", j.Findings)
	}
	for _, w := range words {
		if !strings.Contains(f.Message, w) && !strings.Contains(f.Advice, w) {
			t.Errorf("LEFT_NODE %+v does not name %q", f, w)
		}
	}
	if finding(j, CodeNoReply) != nil {
		t.Errorf("a packet that left got NO_REPLY: %+v", j.Findings)
	}
	if !j.Failed() {
		t.Error("left without a reply must fail the trace")
	}
}

// The encapsulated packet went out of a tun device and its reader freed it
// (a consume right after the tx): left toward the outer destination, not
// delivered, and the node that owns that address is named.
func TestLeftThroughTun(t *testing.T) {
	d := New(Config{NodeAddrs: map[netip.Addr]string{netip.MustParseAddr("198.51.100.20"): "worker-2"}})
	d.state = exitState(true)
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j := build(t,
		ev(journey.KindTx, podA, "eth0", pkt),
		ev(journey.KindRx, nodeA, "vethpoda", pkt),
		ev(journey.KindTx, nodeA, "flannel.1", pkt, at(5)),
		ev(journey.KindTx, nodeA, "nic0", pkt, encap("198.51.100.20"), at(9)),
		ev(journey.KindConsume, 0, "", pkt, encap("198.51.100.20")))
	if j.Verdict.Kind != journey.Delivered {
		t.Fatalf("builder verdict %+v: the case is a consume after the tx", j.Verdict)
	}
	d.Diagnose(j)
	requireLeft(t, j, "nic0", "198.51.100.20", "outer destination", "tun/tap", "worker-2", "route 198.51.100.20/32 dev nic0", "no reply", "kubectl skbtrail trace")
	if f := finding(j, CodeVXLANDstUnknown); f != nil {
		t.Errorf("the outer destination is a known node's: %+v", f)
	}
}

// Transmitted on a veth whose peer is in no namespace that was read (the
// router belongs to another node), never seen again: left; once the peer's
// namespace is read, the same journey stays lost.
func TestLeftThroughVeth(t *testing.T) {
	pkt := tcp("10.244.0.5", "203.0.113.80", 4000, 80)
	evs := func() []journey.Event {
		return []journey.Event{ev(journey.KindTx, podA, "eth0", pkt), ev(journey.KindRx, nodeA, "vethpoda", pkt),
			ev(journey.KindTx, nodeA, "eth0", pkt, at(2))}
	}
	d := New(Config{})
	d.state = exitState(false)
	j := build(t, evs()...)
	d.Diagnose(j)
	requireLeft(t, j, "eth0", "203.0.113.80", "next hop 192.0.2.1", "peer (ifindex 7)")

	d.state = exitState(true)
	j = build(t, evs()...)
	d.Diagnose(j)
	if j.Verdict.Kind != journey.Lost || finding(j, CodeLeftNode) != nil {
		t.Errorf("veth into a read namespace: verdict %+v findings %+v, want lost and no LEFT_NODE", j.Verdict, j.Findings)
	}
}

// Only a packet that is not seen again in an observed namespace left.
func TestNotLeft(t *testing.T) {
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	cases := map[string][]journey.Event{
		"received after the tx": {ev(journey.KindTx, nodeA, "nic0", pkt, at(9)), ev(journey.KindRx, nodeB, "eth0", pkt),
			ev(journey.KindConsume, nodeB, "", pkt)},
		"dropped after the tx": {ev(journey.KindTx, nodeA, "nic0", pkt, at(9)),
			ev(journey.KindDrop, nodeA, "nic0", pkt, func(e *journey.Event) { e.Reason = 1 })},
		"loopback": {ev(journey.KindTx, nodeA, "lo", pkt, at(1))},
		"bridge":   {ev(journey.KindTx, nodeA, "cni0", pkt, at(3))},
	}
	for name, evs := range cases {
		d := New(Config{})
		d.state = exitState(false)
		j := build(t, evs...)
		kind := j.Verdict.Kind
		d.Diagnose(j)
		if j.Verdict.Kind != kind || finding(j, CodeLeftNode) != nil {
			t.Errorf("%s: verdict %s -> %+v, findings %+v: want unchanged, no LEFT_NODE", name, kind, j.Verdict, j.Findings)
		}
	}
	// without node state nothing can be told about the device
	j := build(t, ev(journey.KindTx, nodeA, "nic0", pkt, at(9)), ev(journey.KindConsume, nodeA, "nic0", pkt))
	New(Config{}).Diagnose(j)
	if j.Verdict.Kind != journey.Delivered {
		t.Errorf("no node state: verdict %+v", j.Verdict)
	}
}

// A packet that left and whose reply came back is a success.
func TestLeftWithReply(t *testing.T) {
	d := New(Config{})
	d.state = exitState(false)
	pkt := tcp("10.244.0.5", "203.0.113.80", 4000, 80)
	reply := tcp("203.0.113.80", "10.244.0.5", 80, 4000)
	reply.TCPFlags = 0x12
	b := journey.NewBuilder(journey.Options{NetnsName: func(i uint32) string { return names[i] }})
	for i, e := range []journey.Event{ev(journey.KindTx, podA, "eth0", pkt), ev(journey.KindTx, nodeA, "eth0", pkt, at(2))} {
		e.Journey, e.TimeNs, e.Skb = 2, uint64(i+1), 7
		b.Add(e)
	}
	for i, e := range []journey.Event{ev(journey.KindRx, nodeA, "eth0", reply, at(2)), ev(journey.KindRx, podA, "eth0", reply),
		ev(journey.KindConsume, podA, "", reply)} {
		e.Journey, e.TimeNs, e.Skb = 3, uint64(10+i), 8
		b.Add(e)
	}
	j := b.Close()[0]
	d.Diagnose(j)
	if j.Verdict.Kind != journey.Left || !j.ReplyCameBack() || j.Failed() {
		t.Fatalf("verdict %+v reply %+v failed %v: want left, the reply back, success", j.Verdict, j.Reply, j.Failed())
	}
	if f := finding(j, CodeLeftNode); f == nil || !strings.Contains(f.Message, "the reply came back") {
		t.Errorf("findings %+v", j.Findings)
	}
}

// A single node sees no peer VTEP: an encapsulated packet that left cannot
// be judged to go to an unknown VTEP, unless the cluster's node addresses
// say which addresses are nodes'.
func TestLeftEncapsulatedVTEPCheck(t *testing.T) {
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	run := func(cfg Config, outer string) *journey.Journey {
		d := New(cfg)
		st := exitState(false)
		delete(st.Namespaces, nodeB) // a real node: only its own namespaces
		d.state = st
		j := build(t, ev(journey.KindTx, podA, "eth0", pkt), ev(journey.KindTx, nodeA, "flannel.1", pkt, at(5)),
			ev(journey.KindTx, nodeA, "eth0", pkt, encap(outer), at(2)), ev(journey.KindConsume, nodeA, "eth0", pkt, encap(outer)))
		d.Diagnose(j)
		return j
	}
	j := run(Config{}, "198.51.100.20")
	requireLeft(t, j, "eth0", "198.51.100.20", "next hop 192.0.2.1")
	if f := finding(j, CodeVXLANDstUnknown); f != nil {
		t.Errorf("single node, no peers known: %+v", f)
	}
	nodes := map[netip.Addr]string{netip.MustParseAddr("198.51.100.20"): "worker-2"}
	if j := run(Config{NodeAddrs: nodes}, "198.51.100.20"); finding(j, CodeVXLANDstUnknown) != nil || !strings.Contains(finding(j, CodeLeftNode).Message, "worker-2") {
		t.Errorf("toward a known node: %+v", j.Findings)
	}
	j = run(Config{NodeAddrs: nodes}, "203.0.113.20")
	if f := finding(j, CodeVXLANDstUnknown); f == nil || j.Findings[0].Code != CodeVXLANDstUnknown || !j.Failed() {
		t.Errorf("toward an address of no node: %+v", j.Findings)
	}
}
