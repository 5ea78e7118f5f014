package e2e

import (
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// Issue 5: underlay and encapsulation faults (seeds 000, 001, 003 and the
// usual suspects), each asserted from the JSON journey: verdict, where it
// went wrong, and the finding code.
func TestUnderlayDiagnosis(t *testing.T) {
	type want struct {
		kind, verdictNetns, reason, code, findingNetns string
		exit                                           int
	}
	cases := []struct {
		name, fault string
		args        func(l *lab.Lab) []string
		want        func(l *lab.Lab) want
	}{
		{"seed000-wrong-vtep", "wrong-vtep", nil, func(l *lab.Lab) want {
			return want{journey.Dropped, l.Router, "IP_INNOROUTES", "VXLAN_DST_UNKNOWN", l.NodeA, 1}
		}},
		{"seed001-wrong-src", "wrong-src", nil, func(l *lab.Lab) want {
			return want{journey.Dropped, l.Router, "NETFILTER_DROP", "VXLAN_SRC_MISMATCH", l.NodeA, 1}
		}},
		{"seed003-missing-pod-route", "no-route", nil, func(l *lab.Lab) want {
			return want{journey.Dropped, l.Router, "IP_INNOROUTES", "NO_ROUTE", l.NodeA, 1}
		}},
		{"seed003-silent-dns", "silent-dns", func(l *lab.Lab) []string {
			return []string{"--proto", "udp", "--to", l.DNSService.Addr()}
		}, func(l *lab.Lab) want {
			return want{journey.Delivered, l.PodB, "", "NO_REPLY", l.PodB, 1}
		}},
		{"mtu", "small-mtu", func(l *lab.Lab) []string {
			return []string{"--proto", "udp", "--to", l.PodBIP + ":53", "--probe-size", "1400"}
		}, func(l *lab.Lab) want {
			return want{journey.Dropped, l.Router, "PKT_TOO_BIG", "MTU_EXCEEDED", l.Router, 1}
		}},
		{"no-listener", "no-listener", nil, func(l *lab.Lab) want {
			return want{journey.Rejected, l.PodB, "NO_SOCKET", "NO_LISTENER", l.PodB, 1}
		}},
		{"rp-filter", "rp-filter", nil, func(l *lab.Lab) want {
			return want{journey.Dropped, l.NodeB, "IP_RPFILTER", "RP_FILTER", l.NodeB, 1}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{})
			if err := l.ApplyFault(c.fault); err != nil {
				t.Fatal(err)
			}
			w := c.want(l)
			args := []string{"--from-netns", l.PodA, "--probe", "--timeout", "5s"}
			if c.args != nil {
				args = append(args, c.args(l)...)
			} else {
				args = append(args, "--to", l.WebService.Addr())
			}
			res := runTrace(t, args...)
			if len(res.journeys) != 1 {
				t.Fatalf("want 1 journey, got %d", len(res.journeys))
			}
			j := res.journeys[0]
			if res.exit != w.exit {
				t.Errorf("exit %d, want %d", res.exit, w.exit)
			}
			if j.Verdict.Kind != w.kind || j.Verdict.Netns != w.verdictNetns || j.Verdict.Reason != w.reason {
				t.Errorf("verdict %+v, want %s in %s (%s)", j.Verdict, w.kind, w.verdictNetns, w.reason)
			}
			if len(j.Findings) == 0 || j.Findings[0].Code != w.code || j.Findings[0].Netns != w.findingNetns {
				t.Fatalf("findings %+v, want %s in %s first", j.Findings, w.code, w.findingNetns)
			}
			if f := j.Findings[0]; f.Severity != journey.SeverityError || f.Advice == "" || f.Message == "" {
				t.Errorf("finding %+v needs severity error, a message and advice", f)
			}
		})
	}

	t.Run("seed000-message-names-the-real-vtep", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{})
		if err := l.ApplyFault("wrong-vtep"); err != nil {
			t.Fatal(err)
		}
		j, _ := probeService(t, l)
		if len(j.Encaps) != 1 || j.Encaps[0].OuterDst != lab.BogusVTEP {
			t.Fatalf("encaps %+v, want outer dst %s", j.Encaps, lab.BogusVTEP)
		}
		m := j.Findings[0].Message
		if !strings.Contains(m, lab.BogusVTEP) || !strings.Contains(m, l.NodeBIP) || !strings.Contains(j.Findings[0].Advice, "public-ip") {
			t.Errorf("VXLAN_DST_UNKNOWN %+v must name %s, the real VTEP %s and the public-ip fix", j.Findings[0], lab.BogusVTEP, l.NodeBIP)
		}
	})

	t.Run("calico-healthy", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{Flavor: lab.FlavorCalico})
		j, res := probeService(t, l)
		if res.exit != 0 || j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB {
			t.Fatalf("exit %d verdict %+v", res.exit, j.Verdict)
		}
		if len(j.Encaps) != 1 || j.Encaps[0].Device != "vxlan.calico" || j.Encaps[0].VNI != 4096 || j.Encaps[0].OuterDport != 4789 {
			t.Errorf("encaps %+v, want vxlan.calico vni 4096 port 4789", j.Encaps)
		}
		if errs := errorFindings(j); len(errs) != 0 {
			t.Errorf("error findings %v", errs)
		}
	})
}
