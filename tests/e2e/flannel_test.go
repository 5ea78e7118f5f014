package e2e

import (
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
	})
}
