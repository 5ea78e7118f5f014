package e2e

import (
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// A packet handed to a device whose far end the node cannot see (here a
// tun device read by the lab process, as a NIC's driver frees what it put
// on the wire) left the node: verdict left at that device, LEFT_NODE
// naming where it went, no NO_REPLY claiming it was delivered, exit 1 as
// no reply came back.
func TestTraceLeftNode(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{})
	if err := l.ApplyFault("nic-exit"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, to, toward string
		encap            bool
	}{
		// the SYN to the ClusterIP, DNAT'd and encapsulated toward node-b
		{"vxlan-to-node-b", l.WebService.Addr(), l.NodeBIP, true},
		// a destination outside the lab, routed out of nic0
		{"plain-destination", lab.ExitProbeIP + ":80", lab.ExitProbeIP, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := runTrace(t, "--from-netns", l.PodA, "--to", c.to, "--probe", "--timeout", "5s")
			if len(res.journeys) != 1 {
				t.Fatalf("want 1 journey, got %d (exit %d)", len(res.journeys), res.exit)
			}
			j := res.journeys[0]
			if res.exit != 1 {
				t.Errorf("exit %d, want 1 (no reply came back)", res.exit)
			}
			if v := j.Verdict; v.Kind != journey.Left || v.Netns != l.NodeA || v.Device != lab.ExitDevice || v.Reason != "" {
				t.Fatalf("verdict %+v, want left in %s at %s", v, l.NodeA, lab.ExitDevice)
			}
			if hasFinding(j, "NO_REPLY") {
				t.Errorf("a packet that left has NO_REPLY: %v", findingCodes(j))
			}
			if errs := errorFindings(j); len(errs) != 0 {
				t.Errorf("error findings %v", errs)
			}
			var left *journey.Finding
			for i := range j.Findings {
				if j.Findings[i].Code == "LEFT_NODE" {
					left = &j.Findings[i]
				}
			}
			if left == nil {
				t.Fatalf("no LEFT_NODE finding: %v", findingCodes(j))
			}
			if left.Severity != journey.SeverityInfo || left.Netns != l.NodeA || left.Advice == "" {
				t.Errorf("LEFT_NODE %+v: want severity info in %s with advice", left, l.NodeA)
			}
			for _, want := range []string{lab.ExitDevice, "toward " + c.toward, l.NodeA, "no reply"} {
				if !strings.Contains(left.Message, want) {
					t.Errorf("LEFT_NODE message %q lacks %q", left.Message, want)
				}
			}
			if c.encap {
				if !strings.Contains(left.Message, "VXLAN outer destination") {
					t.Errorf("LEFT_NODE message %q does not say the address is the outer destination", left.Message)
				}
				if len(j.Encaps) != 1 || j.Encaps[0].OuterDst != l.NodeBIP || j.Encaps[0].Underlay != lab.ExitDevice {
					t.Errorf("encaps %+v, want one to %s via %s", j.Encaps, l.NodeBIP, lab.ExitDevice)
				}
			}
			if hopIndex(j, l.NodeA, lab.ExitDevice, "tx") < 0 {
				t.Errorf("no tx hop at %s in %s: %+v", lab.ExitDevice, l.NodeA, j.Hops)
			}
		})
	}
	if l.ExitFrames() == 0 {
		t.Errorf("the lab read nothing from %s", lab.ExitDevice)
	}
}
