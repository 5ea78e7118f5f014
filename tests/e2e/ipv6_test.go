package e2e

import (
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// probeService6 probes the IPv6 web Service of a dual-stack lab from pod A.
func probeService6(t *testing.T, l *lab.Lab, extra ...string) (journey.Journey, traceResult) {
	t.Helper()
	args := append([]string{"--from-netns", l.PodA, "--to", l.WebService6.Addr(), "--probe", "--timeout", "5s"}, extra...)
	res := runTrace(t, args...)
	if len(res.journeys) != 1 {
		t.Fatalf("want 1 journey, got %d (exit %d)\nstderr: %s", len(res.journeys), res.exit, res.stderr)
	}
	return res.journeys[0], res
}

// Issue 16: the healthy dual-stack lab's IPv6 Service: the SYN to the IPv6
// ClusterIP is DNAT'd by ip6tables on node A, carried as inner IPv6 over
// the IPv4 VXLAN device and delivered in pod B, as its IPv4 twin is.
func TestIPv6ServiceDelivered(t *testing.T) {
	for _, ipt := range iptablesVariants {
		t.Run(ipt, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Iptables: ipt, DualStack: true})
			j, res := probeService6(t, l)
			if res.exit != 0 {
				t.Errorf("exit status %d, want 0\nstderr: %s", res.exit, res.stderr)
			}
			if j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB {
				t.Fatalf("verdict %+v, want delivered in %s", j.Verdict, l.PodB)
			}
			if j.Packet.Proto != "tcp" || j.Packet.Src != l.PodAIP6 || j.Packet.Dst != l.ClusterIP6 || j.Packet.Dport != 80 || j.Packet.TCPFlags != "SYN" {
				t.Errorf("packet %+v", j.Packet)
			}
			if len(j.Rewrites) != 1 {
				t.Fatalf("rewrites %+v, want one DNAT", j.Rewrites)
			}
			rw := j.Rewrites[0]
			if rw.Kind != "DNAT" || rw.Netns != l.NodeA || rw.Hook != "PREROUTING" ||
				rw.Before.Dst != l.ClusterIP6 || rw.After.Dst != l.PodBIP6 || rw.After.Dport != 80 {
				t.Errorf("rewrite %+v, want DNAT %s -> [%s]:80 in %s PREROUTING", rw, l.ClusterIP6, l.PodBIP6, l.NodeA)
			}
			if len(j.Encaps) != 1 {
				t.Fatalf("encaps %+v, want one vxlan", j.Encaps)
			}
			e := j.Encaps[0]
			if e.Kind != "vxlan" || e.Netns != l.NodeA || e.Device != l.VXLANDevice || e.OuterSrc != l.NodeAIP || e.OuterDst != l.NodeBIP || e.OuterDport != 8472 {
				t.Errorf("encap %+v, want vxlan %s -> %s:8472 (IPv6 inside IPv4) in %s", e, l.NodeAIP, l.NodeBIP, l.NodeA)
			}
			requireOrderedHops(t, j,
				[2]string{l.PodA, "eth0"}, [2]string{l.NodeA, "cni0"}, [2]string{l.NodeA, l.VXLANDevice},
				[2]string{l.Router, ""}, [2]string{l.NodeB, l.VXLANDevice}, [2]string{l.NodeB, "cni0"}, [2]string{l.PodB, "eth0"})
			if errs := errorFindings(j); len(errs) != 0 {
				t.Errorf("healthy journey has error findings %v", errs)
			}
			if j.Reply == nil || j.Reply.Verdict != journey.Delivered || j.Reply.Packet.TCPFlags != "SYN|ACK" {
				t.Errorf("reply %+v, want the SYN|ACK delivered back", j.Reply)
			}
		})
	}
}
