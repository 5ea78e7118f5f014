package e2e

import (
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// Issue 14: where the overlay is Calico's (vxlan.calico), the advice for a
// node address the underlay cannot use names Calico's knob
// (IP_AUTODETECTION_METHOD; for its IPv6 address over an IPv6 underlay
// IP6_AUTODETECTION_METHOD), not flannel's. Hand-built lab, Calico flavour.
func TestCalicoAddressAdvice(t *testing.T) {
	cases := []struct {
		name, fault, code, netns string
		ipv6                     bool // the IPv6 form, over vxlan-v6.calico and an IPv6 underlay
	}{
		{"wrong-src", "wrong-src", "VXLAN_SRC_MISMATCH", lab.RoleNodeA, false},
		{"wrong-vtep", "wrong-vtep", "VXLAN_DST_UNKNOWN", lab.RoleNodeA, false},
		{"wrong-src-v6", "wrong-src-v6", "VXLAN_SRC_MISMATCH", lab.RoleNodeA, true},
		{"wrong-vtep-v6", "wrong-vtep-v6", "VXLAN_DST_UNKNOWN", lab.RoleNodeA, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Flavor: lab.FlavorCalico, IPv6Underlay: c.ipv6})
			if err := l.ApplyFault(c.fault); err != nil {
				t.Fatal(err)
			}
			probe, knob := probeService, "IP_AUTODETECTION_METHOD"
			if c.ipv6 {
				probe, knob = probeService6, "IP6_AUTODETECTION_METHOD"
			}
			j, res := probe(t, l)
			if res.exit != 1 || j.Verdict.Kind != journey.Dropped || j.Verdict.Netns != l.Router {
				t.Errorf("exit %d verdict %+v, want dropped in %s", res.exit, j.Verdict, l.Router)
			}
			if c.ipv6 && (len(j.Encaps) == 0 || j.Encaps[0].Device != lab.CalicoVXLANDevice6) {
				t.Errorf("encaps %+v, want %s", j.Encaps, lab.CalicoVXLANDevice6)
			}
			f := primaryFinding(t, j, c.code, l.Netns(c.netns))
			if !strings.Contains(f.Advice, knob) {
				t.Errorf("advice %q must name Calico's %s", f.Advice, knob)
			}
			for _, g := range j.Findings {
				if strings.Contains(g.Advice, "flannel") || strings.Contains(g.Advice, "public-ip-overwrite") {
					t.Errorf("finding %s names flannel's knobs on a Calico overlay: %s", g.Code, g.Advice)
				}
			}
		})
	}
}
