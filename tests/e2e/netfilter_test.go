package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

var iptablesVariants = []string{"iptables-legacy", "iptables-nft"}

// Issue 4: which hook, table, chain and rule decided, for both iptables
// back ends and for a native nftables table.
func TestNetfilterVerdicts(t *testing.T) {
	type want struct {
		kind, netns, hook, table, chain, rule, code string
	}
	cases := []struct {
		name, fault string
		want        func(l *lab.Lab) want
	}{
		{"policy-drop", "forward-drop", func(l *lab.Lab) want {
			return want{journey.Dropped, l.NodeB, "FORWARD", "filter", "FORWARD", "policy DROP", "NF_POLICY_DROP"}
		}},
		{"reject", "reject-rst", func(l *lab.Lab) want {
			return want{journey.Rejected, l.NodeB, "FORWARD", "filter", "FORWARD",
				"-A FORWARD -d 10.244.1.2/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset", "NF_REJECT"}
		}},
		{"nft-rule-drop", "forward-drop-rule-nft", func(l *lab.Lab) want {
			return want{journey.Dropped, l.NodeB, "FORWARD", "inet sbt_fault", "fwd", "ip daddr 10.244.1.2 tcp dport 80 drop", "NF_RULE_DROP"}
		}},
	}
	for _, ipt := range iptablesVariants {
		for _, c := range cases {
			t.Run(ipt+"/"+c.name, func(t *testing.T) {
				l := lab.NewForTest(t, lab.Config{Iptables: ipt})
				if err := l.ApplyFault(c.fault); err != nil {
					t.Fatal(err)
				}
				w := c.want(l)
				j, res := probeService(t, l)
				if res.exit != 1 {
					t.Errorf("exit %d, want 1", res.exit)
				}
				v := j.Verdict
				if v.Kind != w.kind || v.Netns != w.netns || v.Reason != "NETFILTER_DROP" {
					t.Fatalf("verdict %+v, want %s in %s (NETFILTER_DROP)", v, w.kind, w.netns)
				}
				if v.Hook != w.hook || v.Table != w.table || v.Chain != w.chain || v.Rule != w.rule {
					t.Errorf("attribution hook=%q table=%q chain=%q rule=%q, want %q %q %q %q", v.Hook, v.Table, v.Chain, v.Rule, w.hook, w.table, w.chain, w.rule)
				}
				if !hasFinding(j, w.code) {
					t.Errorf("findings %v, want %s", findingCodes(j), w.code)
				}
				for _, f := range j.Findings {
					if f.Code == w.code && (f.Advice == "" || f.Netns != w.netns) {
						t.Errorf("finding %+v lacks advice or netns", f)
					}
				}
				if c.fault == "forward-drop" {
					f := j.Findings[0]
					if !strings.Contains(f.Message, "from flannel.1 to cni0") || !strings.Contains(f.Advice, "-i flannel.1 -o cni0 -j ACCEPT") {
						t.Errorf("seed 002 finding %+v must name flannel.1 -> cni0 and the ACCEPT rule", f)
					}
				}
			})
		}
		t.Run(ipt+"/no-dnat", func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Iptables: ipt})
			if err := l.ApplyFault("no-dnat"); err != nil {
				t.Fatal(err)
			}
			j, res := probeService(t, l)
			if res.exit != 1 || j.Verdict.Kind == journey.Delivered {
				t.Errorf("exit %d verdict %+v, want a failed journey", res.exit, j.Verdict)
			}
			if !hasFinding(j, "SERVICE_NOT_DNATED") {
				t.Fatalf("findings %v, want SERVICE_NOT_DNATED", findingCodes(j))
			}
			if j.Findings[0].Code != "SERVICE_NOT_DNATED" || j.Findings[0].Netns != l.NodeA {
				t.Errorf("first finding %+v, want SERVICE_NOT_DNATED in %s", j.Findings[0], l.NodeA)
			}
			if len(j.Rewrites) != 0 {
				t.Errorf("rewrites %+v, want none", j.Rewrites)
			}
		})
		t.Run(ipt+"/healthy", func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Iptables: ipt})
			j, res := probeService(t, l)
			if res.exit != 0 || j.Verdict.Kind != journey.Delivered {
				t.Fatalf("exit %d verdict %+v", res.exit, j.Verdict)
			}
			if len(j.Rewrites) != 1 || j.Rewrites[0].Netns != l.NodeA || j.Rewrites[0].Hook != "PREROUTING" {
				t.Errorf("rewrites %+v, want the DNAT in %s PREROUTING", j.Rewrites, l.NodeA)
			}
			if errs := errorFindings(j); len(errs) != 0 {
				t.Errorf("error findings %v", errs)
			}
		})
	}
}

// CT_INVALID: a packet of an established connection reaches a node whose
// conntrack lost the connection (flushed) and does not pick up connections
// mid-stream (nf_conntrack_tcp_loose=0): conntrack marks it INVALID and the
// kube-proxy-style "--ctstate INVALID -j DROP" rule drops it.
func TestConntrackInvalidDrop(t *testing.T) {
	for _, ipt := range iptablesVariants {
		t.Run(ipt, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Iptables: ipt})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := l.DialConn(ctx, l.PodA, l.WebService.Addr(), 2*time.Second)
			if err != nil {
				t.Fatalf("connect on the healthy lab: %v", err)
			}
			defer conn.Close()
			rule := []string{"FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"}
			for _, cmd := range [][]string{
				{"sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"},
				append([]string{ipt, "-w", "10", "-I"}, rule...),
			} {
				if out, err := l.Run(l.NodeB, cmd...); err != nil {
					t.Fatalf("%v in %s: %v %s", cmd, l.NodeB, err, out)
				}
			}
			h, err := netnsutil.NewHandle("/run/netns/" + l.NodeB)
			if err != nil {
				t.Fatal(err)
			}
			err = h.ConntrackTableFlush(netlink.ConntrackTable)
			h.Close()
			if err != nil {
				t.Fatalf("flush conntrack in %s: %v", l.NodeB, err)
			}

			tr := startTrace(t, "--no-daemon", "--netfilter", "all", "--from-netns", l.PodA, "--to", l.WebService.Addr(),
				"--proto", "tcp", "--count", "1", "--timeout", "8s")
			if _, err := conn.Write([]byte("mid-stream\n")); err != nil {
				t.Fatalf("write: %v", err)
			}
			res := tr.wait(t)
			if res.exit != 1 || len(res.journeys) != 1 {
				t.Fatalf("exit %d, %d journeys; want exit 1 and one journey", res.exit, len(res.journeys))
			}
			j := res.journeys[0]
			v := j.Verdict
			if v.Kind != journey.Dropped || v.Netns != l.NodeB || v.Reason != "NETFILTER_DROP" || v.Hook != "FORWARD" || v.Chain != "FORWARD" {
				t.Fatalf("verdict %+v, want dropped in %s FORWARD (NETFILTER_DROP)", v, l.NodeB)
			}
			if !strings.Contains(v.Rule, "INVALID") {
				t.Errorf("rule %q, want the INVALID rule", v.Rule)
			}
			if !hasFinding(j, "CT_INVALID") || hasFinding(j, "NF_RULE_DROP") {
				t.Errorf("findings %v, want CT_INVALID (not NF_RULE_DROP)", findingCodes(j))
			}
			if j.Packet.TCPFlags == "SYN" {
				t.Errorf("traced packet %+v: want the mid-stream data segment", j.Packet)
			}
		})
	}
}
