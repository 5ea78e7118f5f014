package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// Healthy lab: the SYN to the ClusterIP is DNAT'd on node A, encapsulated
// by flannel.1 and delivered in pod B.
func TestTraceHealthyDelivered(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{})
	j, res := probeService(t, l)
	if res.exit != 0 {
		t.Errorf("exit status %d, want 0", res.exit)
	}
	if j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB {
		t.Fatalf("verdict %+v, want delivered in %s", j.Verdict, l.PodB)
	}
	if j.Packet.Src != l.PodAIP || j.Packet.Dst != l.ClusterIP || j.Packet.Dport != 80 || j.Packet.TCPFlags != "SYN" {
		t.Errorf("packet %+v", j.Packet)
	}
	if len(j.Rewrites) != 1 {
		t.Fatalf("rewrites %+v, want one DNAT", j.Rewrites)
	}
	rw := j.Rewrites[0]
	if rw.Kind != "DNAT" || rw.Netns != l.NodeA || rw.Hook != "PREROUTING" ||
		rw.Before.Dst != l.ClusterIP || rw.After.Dst != l.PodBIP || rw.After.Dport != 80 {
		t.Errorf("rewrite %+v, want DNAT %s -> %s:80 in %s PREROUTING", rw, l.ClusterIP, l.PodBIP, l.NodeA)
	}
	if len(j.Encaps) != 1 {
		t.Fatalf("encaps %+v, want one vxlan", j.Encaps)
	}
	e := j.Encaps[0]
	if e.Kind != "vxlan" || e.Netns != l.NodeA || e.Device != "flannel.1" || e.VNI != 1 ||
		e.OuterSrc != l.NodeAIP || e.OuterDst != l.NodeBIP || e.OuterDport != 8472 {
		t.Errorf("encap %+v, want vxlan flannel.1 vni 1 %s -> %s:8472 in %s", e, l.NodeAIP, l.NodeBIP, l.NodeA)
	}
	requireOrderedHops(t, j,
		[2]string{l.PodA, "eth0"}, [2]string{l.NodeA, "cni0"}, [2]string{l.NodeA, "flannel.1"},
		[2]string{l.Router, ""}, [2]string{l.NodeB, "flannel.1"}, [2]string{l.NodeB, "cni0"}, [2]string{l.PodB, "eth0"})
	if errs := errorFindings(j); len(errs) != 0 {
		t.Errorf("healthy journey has error findings %v", errs)
	}
	if j.Reply == nil || j.Reply.Verdict != journey.Delivered || j.Reply.Packet.TCPFlags != "SYN|ACK" {
		t.Errorf("reply %+v, want the SYN|ACK delivered back", j.Reply)
	}
	if j.LostEvents != 0 {
		t.Errorf("lost_events %d", j.LostEvents)
	}
}

// Seed 002: Docker's FORWARD policy DROP on node B eats flannel.1 -> cni0.
func TestTraceForwardPolicyDrop(t *testing.T) {
	for _, ipt := range []string{"iptables-nft", "iptables-legacy"} {
		t.Run(ipt, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Iptables: ipt})
			if err := l.ApplyFault("forward-drop"); err != nil {
				t.Fatal(err)
			}
			j, res := probeService(t, l)
			if res.exit != 1 {
				t.Errorf("exit status %d, want 1", res.exit)
			}
			v := j.Verdict
			if v.Kind != journey.Dropped || v.Netns != l.NodeB || v.Reason != "NETFILTER_DROP" || v.Device != "flannel.1" {
				t.Fatalf("verdict %+v, want dropped in %s at flannel.1 NETFILTER_DROP", v, l.NodeB)
			}
			if v.Hook != "FORWARD" || v.Table != "filter" {
				t.Errorf("verdict hook/table %s/%s, want FORWARD/filter", v.Hook, v.Table)
			}
			requireOrderedHops(t, j,
				[2]string{l.PodA, "eth0"}, [2]string{l.NodeA, ""}, [2]string{l.Router, ""}, [2]string{l.NodeB, "eth0"}, [2]string{l.NodeB, "flannel.1"})
			if hopIndex(j, l.PodB, "", "") >= 0 {
				t.Errorf("dropped journey reaches %s: %+v", l.PodB, j.Hops)
			}
		})
	}
}

// A passive trace (no --probe) attaches netfilter observers in a namespace
// only when a traced packet first reaches it. The first connection's SYN
// crosses node-b before its observers are there: the rule counters still
// name the hook, chain and policy. The next connection's SYN meets them.
func TestTracePassiveObserversJoin(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{})
	if err := l.ApplyFault("forward-drop"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr := startTrace(t, "--no-daemon", "--from-netns", l.PodA, "--to", l.WebService.Addr(), "--syn", "--count", "2", "--timeout", "10s")
	if !strings.Contains(tr.ready, "join each namespace") {
		t.Errorf("ready line does not say where the observers go: %q", tr.ready)
	}
	// two connections (a retransmitted SYN joins its first journey); the
	// first one's wait leaves the observers time to join node-b
	for _, wait := range []time.Duration{time.Second, 500 * time.Millisecond} {
		if err := l.Dial(ctx, l.PodA, l.WebService.Addr(), wait); err == nil {
			t.Fatal("connect through the FORWARD drop succeeded")
		}
	}
	res := tr.wait(t)
	if res.exit != 1 {
		t.Errorf("trace of dropped SYNs: exit %d, want 1", res.exit)
	}
	js := res.journeys
	if len(js) != 2 {
		t.Fatalf("%d journeys, want 2 (one per connection)", len(js))
	}
	nfHopsInNodeB := func(j journey.Journey) int {
		n := 0
		for _, h := range j.Hops {
			if h.Netns == l.NodeB && strings.HasPrefix(h.Event, "nf:") {
				n++
			}
		}
		return n
	}
	for i, j := range js {
		v := j.Verdict
		if v.Kind != journey.Dropped || v.Netns != l.NodeB || v.Hook != "FORWARD" || v.Chain != "FORWARD" || v.Rule != "policy DROP" {
			t.Errorf("journey %d: verdict %+v, want dropped in %s by FORWARD policy DROP", i, v, l.NodeB)
		}
		if !hasFinding(j, "NF_POLICY_DROP") {
			t.Errorf("journey %d: findings %v", i, findingCodes(j))
		}
	}
	if n := nfHopsInNodeB(js[1]); n == 0 {
		t.Errorf("the second SYN met no netfilter observer in %s: %+v", l.NodeB, js[1].Hops)
	}
	if js[1].Verdict.Table != "filter" {
		t.Errorf("second SYN: table %q, want filter", js[1].Verdict.Table)
	}
}
