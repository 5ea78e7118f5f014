package e2e

import (
	"strings"
	"testing"

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
