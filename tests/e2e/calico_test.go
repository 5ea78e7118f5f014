package e2e

import (
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// Issue 14: where the overlay is Calico's (vxlan.calico), the advice for a
// node address the underlay cannot use names Calico's knob
// (IP_AUTODETECTION_METHOD), not flannel's. Hand-built lab, Calico flavour.
func TestCalicoAddressAdvice(t *testing.T) {
	cases := []struct {
		name, fault, code, netns string
	}{
		{"wrong-src", "wrong-src", "VXLAN_SRC_MISMATCH", lab.RoleNodeA},
		{"wrong-vtep", "wrong-vtep", "VXLAN_DST_UNKNOWN", lab.RoleNodeA},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Flavor: lab.FlavorCalico})
			if err := l.ApplyFault(c.fault); err != nil {
				t.Fatal(err)
			}
			j, res := probeService(t, l)
			if res.exit != 1 || j.Verdict.Kind != journey.Dropped || j.Verdict.Netns != l.Router {
				t.Errorf("exit %d verdict %+v, want dropped in %s", res.exit, j.Verdict, l.Router)
			}
			f := primaryFinding(t, j, c.code, l.Netns(c.netns))
			if !strings.Contains(f.Advice, "IP_AUTODETECTION_METHOD") {
				t.Errorf("advice %q must name Calico's IP_AUTODETECTION_METHOD", f.Advice)
			}
			for _, g := range j.Findings {
				if strings.Contains(g.Advice, "flannel") || strings.Contains(g.Advice, "public-ip-overwrite") {
					t.Errorf("finding %s names flannel's knobs on a Calico overlay: %s", g.Code, g.Advice)
				}
			}
		})
	}
}
