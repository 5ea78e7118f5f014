package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

func findingOf(j journey.Journey, code string) *journey.Finding {
	for i := range j.Findings {
		if j.Findings[i].Code == code {
			return &j.Findings[i]
		}
	}
	return nil
}

func requireMentions(t *testing.T, what, text string, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not mention %q: %s", what, w, text)
		}
	}
}

// Issue 18: a tc program of an eBPF datapath drops the SYN on node-b, at
// tcx ingress of the VXLAN device and at a clsact cls_bpf egress filter of
// the pod's veth: dropped there, hook INGRESS/EGRESS, and BPF_PROG_DROP
// naming the program, its id and tag, how it is attached, and what to do.
func TestTCProgramDrops(t *testing.T) {
	cases := []struct {
		fault, device, hook, attach string
		words                       []string
	}{
		{"tc-drop-tcx", "", journey.HookTCIngress, "tcx ingress", []string{"tc filter show dev flannel.1 ingress"}},
		{"tc-drop-clsact", "vethpodb", journey.HookTCEgress, "clsact cls_bpf filter egress pref 1 handle 0x1 direct-action",
			[]string{"tc filter show dev vethpodb egress"}},
	}
	for _, c := range cases {
		t.Run(c.fault, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{})
			if err := l.ApplyFault(c.fault); err != nil {
				t.Fatal(err)
			}
			dev := c.device
			if dev == "" {
				dev = l.VXLANDevice
			}
			j, res := probeService(t, l)
			if res.exit != 1 {
				t.Errorf("exit %d, want 1", res.exit)
			}
			v := j.Verdict
			if v.Kind != journey.Dropped || v.Netns != l.NodeB || v.Device != dev || v.Hook != c.hook || !strings.HasPrefix(v.Reason, "TC_") {
				t.Fatalf("verdict %+v, want dropped in %s at %s, hook %s, reason TC_*", v, l.NodeB, dev, c.hook)
			}
			if v.Table != "" || v.Chain != "" || v.Rule != "" {
				t.Errorf("verdict %+v names netfilter for a tc drop", v)
			}
			f := findingOf(j, "BPF_PROG_DROP")
			if f == nil {
				t.Fatalf("findings %v, want BPF_PROG_DROP", findingCodes(j))
			}
			if j.Findings[0].Code != "BPF_PROG_DROP" || f.Severity != journey.SeverityError || f.Netns != l.NodeB {
				t.Errorf("findings %+v: want BPF_PROG_DROP first, error, in %s", j.Findings, l.NodeB)
			}
			requireMentions(t, "message", f.Message, lab.TCDropProgName, "(id ", ", tag ", c.attach, dev, "10.244.1.2:80")
			requireMentions(t, "advice", f.Advice, append([]string{"bpftool prog show id ", "netfilter", "not involved",
				"cilium-dbg monitor --type drop", "calico-node -bpf", "ip netns exec " + l.NodeB}, c.words...)...)
			for _, code := range []string{"NF_POLICY_DROP", "NF_RULE_DROP", "NO_REPLY"} {
				if hasFinding(j, code) {
					t.Errorf("findings %v: %s does not belong to a tc drop", findingCodes(j), code)
				}
			}
		})
	}
}

// Issue 18: an XDP program on node-b's underlay device drops the VXLAN
// packets. XDP runs before any skb is seen there, so the journey ends
// with the router's transmission toward node-b: lost, and XDP_PROG_DROP
// names the XDP program on the receiving end and says it is an inference.
func TestXDPProgramDrop(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{})
	if err := l.ApplyFault("xdp-drop-underlay"); err != nil {
		t.Fatal(err)
	}
	j, res := probeService(t, l)
	if res.exit != 1 {
		t.Errorf("exit %d, want 1", res.exit)
	}
	if v := j.Verdict; v.Kind != journey.Lost || v.Netns != l.Router || v.Device != "rb" {
		t.Fatalf("verdict %+v, want lost in %s at rb (sent toward node-b's eth0)", v, l.Router)
	}
	// the skb the router sent is freed at node-b's eth0 (the veth hands the
	// packet to XDP as a buffer of its own); it is never received there
	for _, h := range j.Hops {
		if h.Netns == l.NodeB && h.Event != "consume" {
			t.Errorf("hops %+v: the packet was received in %s", j.Hops, l.NodeB)
		}
	}
	f := findingOf(j, "XDP_PROG_DROP")
	if f == nil {
		t.Fatalf("findings %v, want XDP_PROG_DROP", findingCodes(j))
	}
	if j.Findings[0].Code != "XDP_PROG_DROP" || f.Severity != journey.SeverityError || f.Netns != l.NodeB {
		t.Errorf("findings %+v: want XDP_PROG_DROP first, error, in %s", j.Findings, l.NodeB)
	}
	requireMentions(t, "message", f.Message, lab.XDPDropProgName, "(id ", ", tag ", "xdp (native)", "eth0", "rb", "Inferred, not observed")
	requireMentions(t, "advice", f.Advice, "bpftool prog show id ", "ip netns exec "+l.NodeB+" ip link show dev eth0", "netfilter")
}

// An XDP program that passes the packet must not be blamed, and the
// journey must go on to pod-b.
func TestXDPProgramPass(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{})
	if err := l.ApplyFault("xdp-pass-underlay"); err != nil {
		t.Fatal(err)
	}
	j, res := probeService(t, l)
	if res.exit != 0 || j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB {
		t.Errorf("exit %d verdict %+v, want delivered in %s", res.exit, j.Verdict, l.PodB)
	}
	// the veth puts the packet into a new skb for XDP: the journey follows it
	requireOrderedHops(t, j, [2]string{l.Router, "rb"}, [2]string{l.NodeB, "eth0"}, [2]string{l.NodeB, l.VXLANDevice},
		[2]string{l.NodeB, "vethpodb"}, [2]string{l.PodB, "eth0"})
	if hasFinding(j, "XDP_PROG_DROP") {
		t.Errorf("findings %v: an XDP program that passed the packet is blamed", findingCodes(j))
	}
}

// Issue 18: a tc program on node-b's VXLAN device hands packets for pod-b
// straight to the pod's eth0 with bpf_redirect_peer (Cilium's fast path:
// no cni0, no vethpodb). The journey follows the skb into pod-b and shows
// the redirect where the namespace changed without a transmission: with
// observers everywhere (a probe) and in a passive trace, where none are in
// pod-b yet when the first packet gets there.
func TestRedirectPeer(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{})
	if err := l.ApplyFault("redirect-peer"); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, j journey.Journey) {
		t.Helper()
		if j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB {
			t.Fatalf("verdict %+v, want delivered in %s", j.Verdict, l.PodB)
		}
		requireOrderedHops(t, j, [2]string{l.NodeB, l.VXLANDevice}, [2]string{l.PodB, ""})
		for _, dev := range []string{lab.BridgeDevice, "vethpodb"} {
			if i := hopIndex(j, l.NodeB, dev, ""); i >= 0 {
				t.Errorf("hop %+v: the fast path skips %s", j.Hops[i], dev)
			}
		}
		i := hopIndex(j, l.PodB, "", "redirect")
		if i < 0 {
			t.Fatalf("hops %+v: want a redirect hop into %s", j.Hops, l.PodB)
		}
		if prev := j.Hops[i-1]; prev.Netns != l.NodeB || prev.Device != l.VXLANDevice {
			t.Errorf("hop before the redirect %+v, want %s on %s", prev, l.VXLANDevice, l.NodeB)
		}
		if !j.ReplyCameBack() {
			t.Errorf("reply %+v, want the SYN|ACK back", j.Reply)
		}
	}
	t.Run("probe", func(t *testing.T) {
		j, res := probeService(t, l)
		if res.exit != 0 {
			t.Errorf("exit %d, want 0", res.exit)
		}
		check(t, j)
		if i := hopIndex(j, l.PodB, "eth0", "redirect"); i < 0 {
			t.Errorf("hops %+v: the redirect hop must name pod-b's eth0", j.Hops)
		}
	})
	t.Run("passive", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tr := startTrace(t, "--no-daemon", "--from-netns", l.PodA, "--to", l.WebService.Addr(), "--syn", "--count", "1", "--timeout", "10s")
		if err := l.Dial(ctx, l.PodA, l.WebService.Addr(), 2*time.Second); err != nil {
			t.Fatalf("connect through the fast path: %v", err)
		}
		res := tr.wait(t)
		if res.exit != 0 || len(res.journeys) != 1 {
			t.Fatalf("exit %d, %d journeys; want 0 and 1", res.exit, len(res.journeys))
		}
		check(t, res.journeys[0])
	})
}

// An XDP program in generic mode runs on the skb, right after the receive
// tracepoint: the skb is freed there (reason NOT_SPECIFIED on 6.18, XDP
// where the kernel says so) and BPF_PROG_DROP names the program.
func TestXDPGenericDrop(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{})
	if err := l.ApplyFault("xdp-drop-generic"); err != nil {
		t.Fatal(err)
	}
	j, res := probeService(t, l)
	if res.exit != 1 {
		t.Errorf("exit %d, want 1", res.exit)
	}
	if v := j.Verdict; v.Kind != journey.Dropped || v.Netns != l.PodB || v.Device != "eth0" || (v.Reason != "XDP" && v.Reason != "NOT_SPECIFIED") || v.Hook != "" {
		t.Fatalf("verdict %+v, want dropped in %s at eth0 (XDP or NOT_SPECIFIED), no tc hook", v, l.PodB)
	}
	f := findingOf(j, "BPF_PROG_DROP")
	if f == nil || f.Netns != l.PodB {
		t.Fatalf("findings %+v, want BPF_PROG_DROP in %s", j.Findings, l.PodB)
	}
	requireMentions(t, "message", f.Message, lab.XDPDropProgName, "(id ", "xdp (generic)", "XDP hook (generic mode) of eth0")
	requireMentions(t, "advice", f.Advice, "not involved", "ip netns exec "+l.PodB+" ip link show dev eth0")
}
