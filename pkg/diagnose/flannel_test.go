package diagnose

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/flannelstate"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nfrules"
)

func TestRuleMatchesSource(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.11")
	for rule, want := range map[string]bool{
		"-A FORWARD -s 192.0.2.11/32 -j DROP":   true,
		"-A FORWARD -s 192.0.2.11 -j DROP":      true,
		"ip saddr 192.0.2.11 drop":              true,
		"-A FORWARD -s 192.0.2.110/32 -j DROP":  false,
		"-A FORWARD -d 192.0.2.11/32 -j DROP":   false,
		"-A FORWARD -s 192.0.2.0/24 -j DROP":    false,
		"ip daddr 192.0.2.11 drop":              false,
		"-A FORWARD ! -s 192.0.2.11/32 -j DROP": false,
		"ip saddr != 192.0.2.11 drop":           false,
	} {
		if got := ruleMatchesSource(rule, src); got != want {
			t.Errorf("ruleMatchesSource(%q) = %v, want %v", rule, got, want)
		}
	}
}

// flannelState is what readFlannel finds on the two lab nodes: node A's
// flanneld is stopped (running says which nodes have one).
func flannelState(running ...uint32) *flannelView {
	v := &flannelView{
		subnets: map[uint32]*flannelstate.SubnetFile{
			nodeA: {Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.0.1/24")},
			nodeB: {Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.1/24")},
		},
		leases: []flannelstate.Lease{
			{Key: "/coreos.com/network/subnets/10.244.0.0-24", Subnet: netip.MustParsePrefix("10.244.0.0/24"), PublicIP: netip.MustParseAddr("192.0.2.10"), VtepMAC: "0a:00"},
			{Key: "/coreos.com/network/subnets/10.244.1.0-24", Subnet: netip.MustParsePrefix("10.244.1.0/24"), PublicIP: netip.MustParseAddr("198.51.100.20"), VtepMAC: "0b:00"},
		},
		flanneld: map[uint64]bool{},
	}
	for _, r := range running {
		v.flanneld[uint64(r)] = true
	}
	return v
}

// missingRoute: node A sends pod B's packet out of eth0 unencapsulated and
// the router drops it.
func missingRoute(t *testing.T) *journey.Journey {
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	return build(t,
		ev(journey.KindTx, podA, "eth0", pkt),
		ev(journey.KindRx, nodeA, "vethpoda", pkt),
		ev(journey.KindTx, nodeA, "eth0", pkt),
		ev(journey.KindRx, router, "ra", pkt),
		ev(journey.KindDrop, router, "ra", pkt, func(e *journey.Event) { e.Reason = 1 }))
}

func TestNoRouteNamesStoppedFlanneld(t *testing.T) {
	for _, c := range []struct {
		name    string
		view    *flannelView
		msg     []string
		advice  string
		without string
	}{
		{"stopped", flannelState(nodeB), []string{"no flanneld runs in node-a", "announces PublicIP 198.51.100.20"}, "restart) flanneld on node-a", ""},
		{"running", flannelState(nodeA, nodeB), []string{"announces PublicIP 198.51.100.20"}, "flanneld runs in node-a but has not written", "no flanneld runs"},
		{"no state", nil, nil, "restore the pod-CIDR route", "flanneld runs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := New(Config{})
			d.state, d.flannel = labState("198.51.100.20"), c.view
			j := missingRoute(t)
			d.Diagnose(j)
			f := j.Findings[0]
			if f.Code != CodeNoRoute || f.Netns != "node-a" || f.Severity != journey.SeverityError {
				t.Fatalf("findings %+v, want NO_ROUTE in node-a first", j.Findings)
			}
			for _, m := range c.msg {
				if !strings.Contains(f.Message, m) {
					t.Errorf("message %q lacks %q", f.Message, m)
				}
			}
			if !strings.Contains(f.Advice, c.advice) {
				t.Errorf("advice %q lacks %q", f.Advice, c.advice)
			}
			if c.without != "" && (strings.Contains(f.Message, c.without) || strings.Contains(f.Advice, c.without)) {
				t.Errorf("finding %+v must not say %q", f, c.without)
			}
		})
	}
}

func TestSourceMismatchNamesIface(t *testing.T) {
	d := New(Config{})
	d.state, d.flannel = labState("192.0.2.10"), flannelState(nodeA, nodeB)
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
	f := j.Findings[0]
	if f.Code != CodeVXLANSrcMismatch || !strings.Contains(f.Advice, "--iface=192.0.2.10") || !strings.Contains(f.Message, "announces PublicIP 192.0.2.10") {
		t.Fatalf("findings %+v, want VXLAN_SRC_MISMATCH quoting the lease and advising --iface=192.0.2.10", j.Findings)
	}
	if !strings.Contains(f.Advice, "change only what its lease announces") {
		t.Errorf("advice %q must say --public-ip does not change the source", f.Advice)
	}
}

func TestFlannelForwardAdvice(t *testing.T) {
	d := New(Config{})
	d.state = labState("198.51.100.20")
	v := &journey.Verdict{Netns: "node-b", NetnsInode: nodeB}
	dec := nfrules.Decision{Source: "iptables-nft", Table: "filter", Chain: "FORWARD", Verdict: "policy DROP"}
	pkt := nfrules.Packet{Tuple: tcp("10.244.0.5", "10.244.1.2", 4000, 80), Iif: "flannel.1", Oif: "cni0"}
	without := &nfrules.Snapshot{NFT: &nfrules.IptRuleset{Tables: map[string]*nfrules.IptTable{"filter": {Chains: map[string]*nfrules.IptChain{"FORWARD": {}}}}}}
	with := &nfrules.Snapshot{NFT: &nfrules.IptRuleset{Tables: map[string]*nfrules.IptTable{"filter": {Chains: map[string]*nfrules.IptChain{"FORWARD": {}, "FLANNEL-FWD": {}}}}}}

	if a := d.flannelForwardAdvice(v, dec, pkt, without); a != "" {
		t.Errorf("no flannel state: advice %q, want none (the interface rule stays)", a)
	}
	d.flannel = flannelState(nodeA, nodeB)
	a := d.flannelForwardAdvice(v, dec, pkt, without)
	if !strings.Contains(a, "--iptables-forward-rules") || !strings.Contains(a, "iptables -I FORWARD -d 10.244.0.0/16 -j ACCEPT") {
		t.Errorf("advice %q must name --iptables-forward-rules and the pod network", a)
	}
	if a := d.flannelForwardAdvice(v, dec, pkt, with); a != "" {
		t.Errorf("FLANNEL-FWD present: advice %q, want none", a)
	}
	other := pkt
	other.Tuple = tcp("192.0.2.10", "198.51.100.99", 4000, 80)
	if a := d.flannelForwardAdvice(v, dec, other, without); a != "" {
		t.Errorf("not pod traffic: advice %q, want none", a)
	}
}

func TestStaleVTEPMAC(t *testing.T) {
	d := New(Config{})
	d.state, d.flannel = labState("198.51.100.20"), flannelState(nodeB)
	nb := d.state.Namespaces[nodeB]
	vx, _ := nb.Link("flannel.1")
	vx.MAC = "0b:01" // re-created: node A's FDB still says 0b:00
	d.flannel.leases[1].VtepMAC = "0b:01"
	pkt := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	j := build(t,
		ev(journey.KindTx, podA, "eth0", pkt),
		ev(journey.KindTx, nodeA, "flannel.1", pkt),
		ev(journey.KindTx, nodeA, "eth0", pkt, encap("198.51.100.20")),
		ev(journey.KindRx, nodeB, "eth0", pkt, encap("198.51.100.20")),
		ev(journey.KindRx, nodeB, "flannel.1", pkt),
		ev(journey.KindDrop, nodeB, "flannel.1", pkt))
	j.Verdict.Kind, j.Verdict.Reason = journey.Dropped, "OTHERHOST"
	d.Diagnose(j)
	if len(j.Findings) == 0 {
		t.Fatal("no findings")
	}
	f := j.Findings[0]
	if f.Code != CodeNoRoute || f.Netns != "node-a" || !strings.Contains(f.Message, "0b:00") || !strings.Contains(f.Message, "0b:01") ||
		!strings.Contains(f.Message, "no flanneld runs in node-a") || !strings.Contains(f.Advice, "bridge fdb replace 0b:01 dev flannel.1 dst 198.51.100.20") {
		t.Fatalf("findings %+v, want NO_ROUTE in node-a naming the stale and the new MAC, the stopped flanneld and the FDB fix", j.Findings)
	}

	// the FDB knows the device's MAC: not this case
	vx.MAC = "0b:00"
	j.Findings = nil
	d.staleVTEPMAC(j)
	if len(j.Findings) != 0 {
		t.Errorf("findings %+v with a current FDB", j.Findings)
	}
}
