package e2e

import (
	"net"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// Issue 14: the seeds against the real flanneld (one per node namespace,
// leases in an etcd of the lab), not the lab's imitation of it. The
// binaries come from tests/cluster/build-components.sh.
func TestRealFlannel(t *testing.T) {
	if _, _, err := lab.FlannelBinaries(); err != nil {
		t.Fatal(err)
	}

	t.Run("healthy", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flannel: lab.FlannelReal})
		j, res := probeService(t, l)
		if res.exit != 0 || j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB {
			t.Fatalf("exit %d verdict %+v, want delivered in %s", res.exit, j.Verdict, l.PodB)
		}
		if len(j.Encaps) != 1 || j.Encaps[0].Device != lab.VXLANDevice || j.Encaps[0].VNI != lab.VXLANID ||
			j.Encaps[0].OuterDport != lab.VXLANPort || j.Encaps[0].OuterDst != l.NodeBIP {
			t.Errorf("encaps %+v, want %s vni %d port %d to %s", j.Encaps, lab.VXLANDevice, lab.VXLANID, lab.VXLANPort, l.NodeBIP)
		}
		if errs := errorFindings(j); len(errs) != 0 {
			t.Errorf("error findings %v", errs)
		}
	})

	// Seed 000: node B's flanneld announces a --public-ip (an address node B
	// holds) that the underlay does not route. The fix is flannel's public
	// address setting, not a route in the underlay router.
	t.Run("seed000-unreachable-public-ip", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flannel: lab.FlannelReal, NodeBPublicIP: lab.UnroutedPublicIP})
		j, res := probeService(t, l)
		if res.exit != 1 {
			t.Errorf("exit %d, want 1", res.exit)
		}
		if j.Verdict.Kind != journey.Dropped || j.Verdict.Netns != l.Router || j.Verdict.Reason != "IP_INNOROUTES" {
			t.Errorf("verdict %+v, want dropped in %s (IP_INNOROUTES)", j.Verdict, l.Router)
		}
		if len(j.Encaps) != 1 || j.Encaps[0].OuterDst != lab.UnroutedPublicIP {
			t.Errorf("encaps %+v, want outer dst %s (node B's announced public IP)", j.Encaps, lab.UnroutedPublicIP)
		}
		if len(j.Findings) == 0 {
			t.Fatal("no findings")
		}
		f := j.Findings[0]
		if f.Code != "VXLAN_DST_UNKNOWN" || f.Netns != l.NodeA || f.Severity != journey.SeverityError {
			t.Fatalf("findings %+v, want an error VXLAN_DST_UNKNOWN in %s first", j.Findings, l.NodeA)
		}
		if !strings.Contains(f.Message, lab.UnroutedPublicIP) || !strings.Contains(f.Message, l.NodeBIP) {
			t.Errorf("message %q must name the announced %s and node B's reachable %s", f.Message, lab.UnroutedPublicIP, l.NodeBIP)
		}
		if !strings.Contains(f.Advice, "--public-ip="+l.NodeBIP) || !strings.Contains(f.Advice, "public-ip-overwrite="+l.NodeBIP) {
			t.Errorf("advice %q must name flannel's --public-ip and the public-ip-overwrite annotation with node B's reachable %s", f.Advice, l.NodeBIP)
		}
		for _, g := range j.Findings[1:] {
			if g.Severity == journey.SeverityError {
				t.Errorf("second error finding %+v: one incident, one primary error finding", g)
			}
			if strings.Contains(g.Advice, "add a route") || strings.Contains(g.Advice, "fix the underlay route") {
				t.Errorf("finding %+v sends the user to the underlay route, not to flannel's announcement", g)
			}
		}
		// with flannel's state the same finding also quotes node B's lease
		j, _ = probeService(t, l, l.FlannelStateArgs()...)
		f = primaryFinding(t, j, "VXLAN_DST_UNKNOWN", l.NodeA)
		if !strings.Contains(f.Message, "lease 10.244.1.0/24") || !strings.Contains(f.Message, "announces PublicIP "+lab.UnroutedPublicIP) ||
			!strings.Contains(f.Advice, "--public-ip="+l.NodeBIP) {
			t.Errorf("finding %+v must quote node B's lease (PublicIP %s) and advise --public-ip=%s", f, lab.UnroutedPublicIP, l.NodeBIP)
		}
		noWrongFix(t, j, "add a route", "fix the underlay route")
	})

	// Issue 16: the real flanneld dual-stack (EnableIPv6, --public-ipv6):
	// its flannel-v6.1 carries the pods' IPv6 over the IPv6 underlay, with
	// the lease's IPv6 half in etcd (key "10.244.1.0-24&fd00:10:244:1::-64").
	t.Run("ipv6-underlay", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flannel: lab.FlannelReal, IPv6Underlay: true})
		j, res := probeService6(t, l, l.FlannelStateArgs()...)
		if res.exit != 0 || j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB {
			t.Fatalf("exit %d verdict %+v, want delivered in %s", res.exit, j.Verdict, l.PodB)
		}
		if len(j.Encaps) != 1 || j.Encaps[0].Device != lab.VXLANDevice6 || j.Encaps[0].OuterSrc != lab.NodeAIP6 || j.Encaps[0].OuterDst != lab.NodeBIP6 {
			t.Errorf("encaps %+v, want %s %s -> %s", j.Encaps, lab.VXLANDevice6, lab.NodeAIP6, lab.NodeBIP6)
		}
		if errs := errorFindings(j); len(errs) != 0 {
			t.Errorf("error findings %v", errs)
		}

		// flanneld gives the pods FLANNEL_MTU=1450 (the underlay minus
		// IPv4's 50 bytes) while its flannel-v6.1 carries 1430: a
		// full-sized IPv6 packet from a pod is refused by node A itself
		j, _ = probeFromPodA(t, l, append([]string{"--proto", "udp", "--to", net.JoinHostPort(l.PodBIP6, "53"), "--probe-size", "1400"},
			l.FlannelStateArgs()...)...)
		if j.Verdict.Kind != journey.Dropped || j.Verdict.Netns != l.NodeA || j.Verdict.Reason != "PKT_TOO_BIG" {
			t.Errorf("verdict %+v, want dropped in %s (PKT_TOO_BIG)", j.Verdict, l.NodeA)
		}
		f := primaryFinding(t, j, "MTU_EXCEEDED", l.NodeA)
		for _, w := range []string{"1448-byte", "MTU 1430 of " + lab.VXLANDevice6, "FLANNEL_MTU=1450", "ICMPv6 Packet Too Big with MTU 1430"} {
			if !strings.Contains(f.Message, w) {
				t.Errorf("message %q must say %q", f.Message, w)
			}
		}
		if !strings.Contains(f.Advice, `"mtu": 1430`) {
			t.Errorf("advice %q must give the pods flannel-v6.1's MTU through the CNI config", f.Advice)
		}
	})

	// Seed 000 over the IPv6 underlay: node B's flanneld announces a
	// --public-ipv6 the underlay does not route; the fix names flannel's
	// IPv6 knobs (--public-ipv6, public-ipv6-overwrite) and node B's
	// reachable IPv6 address.
	t.Run("seed000-unreachable-public-ipv6", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flannel: lab.FlannelReal, IPv6Underlay: true, NodeBPublicIPv6: lab.UnroutedPublicIPv6})
		j, res := probeService6(t, l, l.FlannelStateArgs()...)
		if res.exit != 1 || j.Verdict.Kind != journey.Dropped || j.Verdict.Netns != l.Router || j.Verdict.Reason != "IP_INNOROUTES" {
			t.Errorf("exit %d verdict %+v, want dropped in %s (IP_INNOROUTES)", res.exit, j.Verdict, l.Router)
		}
		if len(j.Encaps) != 1 || j.Encaps[0].OuterDst != lab.UnroutedPublicIPv6 {
			t.Errorf("encaps %+v, want outer dst %s (node B's announced public IPv6)", j.Encaps, lab.UnroutedPublicIPv6)
		}
		f := primaryFinding(t, j, "VXLAN_DST_UNKNOWN", l.NodeA)
		for _, w := range []string{lab.UnroutedPublicIPv6, lab.NodeBIP6, "lease fd00:10:244:1::/64", "announces PublicIPv6 " + lab.UnroutedPublicIPv6} {
			if !strings.Contains(f.Message, w) {
				t.Errorf("message %q must say %q", f.Message, w)
			}
		}
		if !strings.Contains(f.Advice, "--public-ipv6="+lab.NodeBIP6) || !strings.Contains(f.Advice, "public-ipv6-overwrite="+lab.NodeBIP6) {
			t.Errorf("advice %q must name --public-ipv6 and public-ipv6-overwrite with node B's reachable %s", f.Advice, lab.NodeBIP6)
		}
		noWrongFix(t, j, "add a route", "fix the underlay route")
	})

	// Seed 001: node A holds a second address (DHCP next to the static
	// one) that the underlay refuses (anti-spoofing: the VPC knows only
	// 192.0.2.10), and its flanneld picks it: --iface=192.0.2.11. The
	// lease still announces 192.0.2.10 (--public-ip), so node B's FDB knows
	// node A as 192.0.2.10 while flannel.1 sends from 192.0.2.11 — v0.26.7
	// takes the VXLAN local address from the --iface address. The fix is
	// flannel's interface choice, not the underlay's rule.
	t.Run("seed001-second-address", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flannel: lab.FlannelReal, NodeASecondIP: lab.WrongSrcIP,
			NodeAFlannelArgs: []string{"--iface=" + lab.WrongSrcIP, "--public-ip=" + lab.NodeAIP}})
		j, res := probeService(t, l, l.FlannelStateArgs()...)
		if res.exit != 1 {
			t.Errorf("exit %d, want 1", res.exit)
		}
		if j.Verdict.Kind != journey.Dropped || j.Verdict.Netns != l.Router || j.Verdict.Reason != "NETFILTER_DROP" {
			t.Errorf("verdict %+v, want dropped in %s (NETFILTER_DROP, the anti-spoofing rule)", j.Verdict, l.Router)
		}
		if len(j.Encaps) != 1 || j.Encaps[0].OuterSrc != lab.WrongSrcIP {
			t.Errorf("encaps %+v, want outer src %s", j.Encaps, lab.WrongSrcIP)
		}
		f := primaryFinding(t, j, "VXLAN_SRC_MISMATCH", l.NodeA)
		for _, w := range []string{lab.WrongSrcIP, l.NodeAIP, "announces PublicIP " + l.NodeAIP} {
			if !strings.Contains(f.Message, w) {
				t.Errorf("message %q must name %q", f.Message, w)
			}
		}
		if !strings.Contains(f.Advice, "--iface="+l.NodeAIP) || !strings.Contains(f.Advice, "remove the extra address "+lab.WrongSrcIP) {
			t.Errorf("advice %q must name flannel's --iface=%s and the extra address %s", f.Advice, l.NodeAIP, lab.WrongSrcIP)
		}
		noWrongFix(t, j, "iptables -D", "add a route")
	})

	// Seed 001, the other way round: flanneld announces and sends from the
	// address the underlay refuses (--iface=192.0.2.11 alone). Peers agree
	// with it, so there is no mismatch: the underlay's rule dropped it, and
	// the advice says which address of node A works and flannel's knob.
	t.Run("seed001-second-address-announced", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flannel: lab.FlannelReal, NodeASecondIP: lab.WrongSrcIP,
			NodeAFlannelArgs: []string{"--iface=" + lab.WrongSrcIP}})
		j, res := probeService(t, l, l.FlannelStateArgs()...)
		if res.exit != 1 || j.Verdict.Kind != journey.Dropped || j.Verdict.Netns != l.Router || j.Verdict.Reason != "NETFILTER_DROP" {
			t.Errorf("exit %d verdict %+v, want dropped in %s (NETFILTER_DROP)", res.exit, j.Verdict, l.Router)
		}
		f := primaryFinding(t, j, "NF_RULE_DROP", l.Router)
		if !strings.Contains(f.Message, lab.WrongSrcIP) || !strings.Contains(f.Advice, "--iface="+l.NodeAIP) || !strings.Contains(f.Advice, l.NodeA) {
			t.Errorf("finding %+v must name %s, node A (%s) and flannel's --iface=%s", f, lab.WrongSrcIP, l.NodeA, l.NodeAIP)
		}
		noWrongFix(t, j, "add a route")
	})

	// Seed 002 as it is with the real flanneld: its FLANNEL-FWD chain
	// accepts the pod network in FORWARD, so Docker's policy DROP alone does
	// not drop pod traffic.
	t.Run("seed002-forward-policy-drop-flannel-rules", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flannel: lab.FlannelReal})
		if err := l.ApplyFault("forward-drop"); err != nil {
			t.Fatal(err)
		}
		out, err := l.Run(l.NodeB, l.Iptables, "-w", "10", "-S", "FORWARD")
		if err != nil || !strings.Contains(out, "-P FORWARD DROP") || !strings.Contains(out, "FLANNEL-FWD") {
			t.Fatalf("node B FORWARD (%v): %s; want policy DROP and flanneld's FLANNEL-FWD jump", err, out)
		}
		j, res := probeService(t, l, l.FlannelStateArgs()...)
		if res.exit != 0 || j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB {
			t.Fatalf("exit %d verdict %+v, want delivered in %s", res.exit, j.Verdict, l.PodB)
		}
		if errs := errorFindings(j); len(errs) != 0 {
			t.Errorf("error findings %v", errs)
		}
	})

	// Seed 002 where it does happen: flanneld without its FORWARD rules
	// (--iptables-forward-rules=false, as some distributions run it) and
	// FORWARD policy DROP. With and without flannel's state the advice names
	// flannel's flag; with the subnet file it names the pod network.
	t.Run("seed002-forward-policy-drop-no-flannel-rules", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flannel: lab.FlannelReal, NoFlannelForwardRules: true})
		if err := l.ApplyFault("forward-drop"); err != nil {
			t.Fatal(err)
		}
		for _, withState := range []bool{true, false} {
			var args []string
			if withState {
				args = l.FlannelStateArgs()
			}
			j, res := probeService(t, l, args...)
			v := j.Verdict
			if res.exit != 1 || v.Kind != journey.Dropped || v.Netns != l.NodeB || v.Reason != "NETFILTER_DROP" ||
				v.Hook != "FORWARD" || v.Chain != "FORWARD" || v.Rule != "policy DROP" {
				t.Errorf("exit %d verdict %+v, want dropped in %s at FORWARD by policy DROP", res.exit, v, l.NodeB)
			}
			f := primaryFinding(t, j, "NF_POLICY_DROP", l.NodeB)
			if !strings.Contains(f.Advice, "--iptables-forward-rules") {
				t.Errorf("advice %q must name flannel's --iptables-forward-rules", f.Advice)
			}
			if withState && !strings.Contains(f.Advice, "iptables -I FORWARD -d 10.244.0.0/16 -j ACCEPT") {
				t.Errorf("advice %q must accept the pod network 10.244.0.0/16 (FLANNEL_NETWORK of the subnet file)", f.Advice)
			}
		}
	})

	// Seed 003: node A's flanneld is stopped and its route to node B's pod
	// CIDR is gone; nothing restores it.
	t.Run("seed003-flanneld-stopped", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flannel: lab.FlannelReal})
		if err := l.ApplyFault("flanneld-stopped"); err != nil {
			t.Fatal(err)
		}
		j, res := probeService(t, l, l.FlannelStateArgs()...)
		if res.exit != 1 || j.Verdict.Kind != journey.Dropped || j.Verdict.Netns != l.Router || j.Verdict.Reason != "IP_INNOROUTES" {
			t.Errorf("exit %d verdict %+v, want dropped in %s (IP_INNOROUTES)", res.exit, j.Verdict, l.Router)
		}
		f := primaryFinding(t, j, "NO_ROUTE", l.NodeA)
		if !strings.Contains(f.Message, "no flanneld runs in "+l.NodeA) || !strings.Contains(f.Message, "announces PublicIP "+l.NodeBIP) {
			t.Errorf("message %q must say no flanneld runs in %s and name node B's lease (%s)", f.Message, l.NodeA, l.NodeBIP)
		}
		if !strings.Contains(f.Advice, "restart) flanneld on "+l.NodeA) || !strings.Contains(f.Advice, "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink") {
			t.Errorf("advice %q must say to restart flanneld on %s and the route it writes", f.Advice, l.NodeA)
		}
		noWrongFix(t, j, "add a route")
	})

	// Seed 003, the peers' state going stale: node A's flanneld is
	// stopped, then node B restarts (new flannel.1, new random MAC,
	// flanneld renews its lease with it). Node A keeps sending to the old
	// MAC and node B's flannel.1 drops the frames (OTHERHOST).
	t.Run("seed003-flanneld-stale-peer", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flannel: lab.FlannelReal})
		if err := l.ApplyFault("flanneld-stale-peer"); err != nil {
			t.Fatal(err)
		}
		j, res := probeService(t, l, l.FlannelStateArgs()...)
		if res.exit != 1 || j.Verdict.Kind != journey.Dropped || j.Verdict.Netns != l.NodeB || j.Verdict.Reason != "OTHERHOST" {
			t.Errorf("exit %d verdict %+v, want dropped in %s (OTHERHOST)", res.exit, j.Verdict, l.NodeB)
		}
		f := primaryFinding(t, j, "NO_ROUTE", l.NodeA)
		for _, w := range []string{"stale", "no flanneld runs in " + l.NodeA, "VtepMAC"} {
			if !strings.Contains(f.Message, w) {
				t.Errorf("message %q lacks %q", f.Message, w)
			}
		}
		if !strings.Contains(f.Advice, "restart) flanneld on "+l.NodeA) || !strings.Contains(f.Advice, "ip neigh replace 10.244.1.0 lladdr") {
			t.Errorf("advice %q must say to restart flanneld on %s and how to fix the entries by hand", f.Advice, l.NodeA)
		}
	})

	// Seed 003: DNS through the CoreDNS ClusterIP to a pod that never
	// answers, on the real flanneld.
	t.Run("seed003-silent-dns", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flannel: lab.FlannelReal})
		if err := l.ApplyFault("silent-dns"); err != nil {
			t.Fatal(err)
		}
		res := runTrace(t, append([]string{"--from-netns", l.PodA, "--probe", "--timeout", "5s", "--proto", "udp",
			"--to", l.DNSService.Addr()}, l.FlannelStateArgs()...)...)
		if len(res.journeys) != 1 {
			t.Fatalf("want 1 journey, got %d", len(res.journeys))
		}
		j := res.journeys[0]
		if res.exit != 1 || j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB {
			t.Errorf("exit %d verdict %+v, want delivered in %s", res.exit, j.Verdict, l.PodB)
		}
		primaryFinding(t, j, "NO_REPLY", l.PodB)
	})
}

// primaryFinding asserts that the first finding is an error with this code in
// this namespace, with a message and advice, and that it is the only error.
func primaryFinding(t *testing.T, j journey.Journey, code, netns string) journey.Finding {
	t.Helper()
	if len(j.Findings) == 0 {
		t.Fatalf("no findings, want %s in %s", code, netns)
	}
	f := j.Findings[0]
	if f.Code != code || f.Netns != netns || f.Severity != journey.SeverityError || f.Message == "" || f.Advice == "" {
		t.Fatalf("findings %+v, want an error %s in %s first, with message and advice", j.Findings, code, netns)
	}
	for _, g := range j.Findings[1:] {
		if g.Severity == journey.SeverityError {
			t.Errorf("second error finding %+v: one incident, one primary error finding", g)
		}
	}
	return f
}

// noWrongFix: no finding's advice sends the user to these fixes.
func noWrongFix(t *testing.T, j journey.Journey, wrong ...string) {
	t.Helper()
	for _, f := range j.Findings {
		for _, w := range wrong {
			if strings.Contains(f.Advice, w) {
				t.Errorf("finding %s advises %q: %s", f.Code, w, f.Advice)
			}
		}
	}
}
