package e2e

import (
	"context"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// probeService6 probes the IPv6 web Service of a dual-stack lab from pod A.
func probeService6(t *testing.T, l *lab.Lab, extra ...string) (journey.Journey, traceResult) {
	t.Helper()
	return probeFromPodA(t, l, append([]string{"--to", l.WebService6.Addr()}, extra...)...)
}

// Issue 16: the healthy dual-stack lab's IPv6 Service: the SYN to the IPv6
// ClusterIP is DNAT'd by ip6tables on node A, carried as inner IPv6 over
// the IPv4 VXLAN device (or over an IPv6 underlay by flannel-v6.1) and
// delivered in pod B, as its IPv4 twin is.
func TestIPv6ServiceDelivered(t *testing.T) {
	for _, c := range []struct {
		ipt       string
		underlay6 bool
	}{{"iptables-nft", false}, {"iptables-legacy", false}, {"iptables-nft", true}} {
		name := c.ipt
		if c.underlay6 {
			name += "/ipv6-underlay"
		}
		t.Run(name, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Iptables: c.ipt, DualStack: true, IPv6Underlay: c.underlay6})
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
			// IPv6 inside IPv4 (flannel.1), or over the IPv6 underlay
			// (flannel-v6.1)
			outerSrc, outerDst := l.NodeAIP, l.NodeBIP
			if c.underlay6 {
				outerSrc, outerDst = lab.NodeAIP6, lab.NodeBIP6
			}
			e := j.Encaps[0]
			if e.Kind != "vxlan" || e.Netns != l.NodeA || e.Device != l.VXLANDevice6 || e.OuterSrc != outerSrc || e.OuterDst != outerDst || e.OuterDport != 8472 {
				t.Errorf("encap %+v, want vxlan on %s %s -> %s:8472 in %s", e, l.VXLANDevice6, outerSrc, outerDst, l.NodeA)
			}
			requireOrderedHops(t, j,
				[2]string{l.PodA, "eth0"}, [2]string{l.NodeA, "cni0"}, [2]string{l.NodeA, l.VXLANDevice6},
				[2]string{l.Router, ""}, [2]string{l.NodeB, l.VXLANDevice6}, [2]string{l.NodeB, "cni0"}, [2]string{l.PodB, "eth0"})
			if errs := errorFindings(j); len(errs) != 0 {
				t.Errorf("healthy journey has error findings %v", errs)
			}
			if j.Reply == nil || j.Reply.Verdict != journey.Delivered || j.Reply.Packet.TCPFlags != "SYN|ACK" {
				t.Errorf("reply %+v, want the SYN|ACK delivered back", j.Reply)
			}
		})
	}
}

// family is one IP version's view of a dual-stack lab: the address of pod
// B, the web Service and the fault names of that version.
type family struct {
	name   string // "ipv4" or "ipv6"
	suffix string // fault name suffix: "" or "-v6"
	podB   string
	svc    lab.Service
	// ruleDst is pod B as a rule's destination prefix (iptables-save form)
	ruleDst, nftDst string
	// svcDst is the web Service's ClusterIP as a rule's destination
	// prefix, portUnreachable the REJECT target's default answer
	// (iptables-save form), nftFamily the family of kube-proxy's nftables
	// table
	svcDst, portUnreachable, nftFamily string
	// dns is the cluster DNS Service, upstream the pod-dns-upstream
	// fault's nameserver
	dns      lab.Service
	upstream string
}

func families(l *lab.Lab) []family {
	return []family{
		{"ipv4", "", l.PodBIP, l.WebService, l.PodBIP + "/32", "ip daddr " + l.PodBIP,
			l.WebService.ClusterIP + "/32", "icmp-port-unreachable", "ip", l.DNSService, lab.UpstreamDNS},
		{"ipv6", "-v6", l.PodBIP6, l.WebService6, l.PodBIP6 + "/128", "ip6 daddr " + l.PodBIP6,
			l.WebService6.ClusterIP + "/128", "icmp6-port-unreachable", "ip6", l.DNSService6, lab.UpstreamDNS6},
	}
}

// Issue 16: every fault scenario in its IPv4 and IPv6 form, on one
// dual-stack lab per case, with the same expectations (verdict kind,
// place, drop reason, netfilter hook/table/chain/rule, first finding and
// where it points), on iptables-legacy and iptables-nft where the fault is
// made with iptables.
func TestFaultsIPv4AndIPv6(t *testing.T) {
	cases := []familyCase{
		{"forward-drop", true, false, nil, func(l *lab.Lab, f family) want {
			return want{journey.Dropped, l.NodeB, "NETFILTER_DROP", "FORWARD", "filter", "FORWARD", "policy DROP", "NF_POLICY_DROP", l.NodeB}
		}},
		{"silent-dns", false, false, dnsQueryArgs, func(l *lab.Lab, f family) want {
			return want{journey.Delivered, l.PodB, "", "", "", "", "", "NO_REPLY", l.PodB}
		}},
		{"udp-rcvbuf-full", false, false, dnsQueryArgs, func(l *lab.Lab, f family) want {
			return want{journey.Dropped, l.PodB, "SOCKET_RCVBUFF", "", "", "", "", "SOCKET_QUEUE_FULL", l.PodB}
		}},
		{"pod-dns-upstream", false, false, func(l *lab.Lab, f family) []string {
			return []string{"--proto", "udp", "--to", net.JoinHostPort(f.upstream, "53")}
		}, func(l *lab.Lab, f family) want {
			return want{journey.Dropped, l.Router, "IP_INNOROUTES", "", "", "", "", "DNS_CONFIG", l.PodA}
		}},
		{"accept-queue-full", false, false, nil, func(l *lab.Lab, f family) want {
			return want{journey.Delivered, l.PodB, "", "", "", "", "", "SOCKET_QUEUE_FULL", l.PodB}
		}},
		// the underlay NIC's full queue drops IPv4 and IPv6 overlay packets
		{"qdisc-full", false, true, nil, func(l *lab.Lab, f family) want {
			return want{journey.Dropped, l.NodeA, "QDISC_DROP", "", "", "", "", "QDISC_DROP", l.NodeA}
		}},
		{"docker-forward-drop", true, false, nil, func(l *lab.Lab, f family) want {
			return want{journey.Dropped, l.NodeB, "NETFILTER_DROP", "FORWARD", "filter", "FORWARD", "policy DROP", "NF_POLICY_DROP", l.NodeB}
		}},
		{"reject-rst", true, false, nil, func(l *lab.Lab, f family) want {
			return want{journey.Rejected, l.NodeB, "NETFILTER_DROP", "FORWARD", "filter", "FORWARD",
				"-A FORWARD -d " + f.ruleDst + " -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset", "NF_REJECT", l.NodeB}
		}},
		{"forward-drop-rule-nft", false, false, nil, func(l *lab.Lab, f family) want {
			return want{journey.Dropped, l.NodeB, "NETFILTER_DROP", "FORWARD", "inet sbt_fault", "fwd", f.nftDst + " tcp dport 80 drop", "NF_RULE_DROP", l.NodeB}
		}},
		{"no-dnat", true, false, nil, func(l *lab.Lab, f family) want {
			return want{journey.Dropped, l.Router, "IP_INNOROUTES", "", "", "", "", "SERVICE_NOT_DNATED", l.NodeA}
		}},
		// kube-proxy's refusal of a Service port without ready endpoints:
		// its iptables mode's REJECT (ip6tables' for the IPv6 ClusterIP,
		// whose default answer is ICMPv6 port unreachable) ...
		{"service-no-endpoints", true, false, nil, func(l *lab.Lab, f family) want {
			return want{journey.Rejected, l.NodeA, "NETFILTER_DROP", "FORWARD", "filter", "KUBE-SERVICES",
				"-A KUBE-SERVICES -d " + f.svcDst + " -p tcp -m comment --comment \"default/web:http has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with " + f.portUnreachable,
				"SERVICE_NO_ENDPOINTS", l.NodeA}
		}},
		// ... and its nftables mode's verdict map, in table ip6 kube-proxy
		// for IPv6 (the nat part is iptables': both back ends)
		{"service-no-endpoints-nft", true, false, nil, func(l *lab.Lab, f family) want {
			return want{journey.Rejected, l.NodeA, "NETFILTER_DROP", "FORWARD", f.nftFamily + " kube-proxy", "reject-chain", "reject",
				"SERVICE_NO_ENDPOINTS", l.NodeA}
		}},
		{"no-route", false, false, nil, func(l *lab.Lab, f family) want {
			return want{journey.Dropped, l.Router, "IP_INNOROUTES", "", "", "", "", "NO_ROUTE", l.NodeA}
		}},
		{"no-listener", false, true, nil, func(l *lab.Lab, f family) want {
			return want{journey.Rejected, l.PodB, "NO_SOCKET", "", "", "", "", "NO_LISTENER", l.PodB}
		}},
		// the server listens on loopback only (127.0.0.1:80, [::1]:80)
		{"listener-loopback", false, false, nil, func(l *lab.Lab, f family) want {
			return want{journey.Rejected, l.PodB, "NO_SOCKET", "", "", "", "", "NO_LISTENER", l.PodB}
		}},
		// IPv6 has no rp_filter sysctl: its reverse-path filter is a
		// netfilter rule (firewalld's), so the kernel's reason is
		// NETFILTER_DROP, the finding the same
		{"rp-filter", false, false, nil, func(l *lab.Lab, f family) want {
			if f.suffix != "" {
				return want{journey.Dropped, l.NodeB, "NETFILTER_DROP", "PREROUTING", "raw", "PREROUTING",
					"-A PREROUTING -m rpfilter --invert -j DROP", "RP_FILTER", l.NodeB}
			}
			return want{journey.Dropped, l.NodeB, "IP_RPFILTER", "", "", "", "", "RP_FILTER", l.NodeB}
		}},
		// IPv6 frees what waited for a failed neighbour without a reason
		// (ndisc_error_report): NOT_SPECIFIED, the finding the same
		{"neigh-missing", false, false, nil, func(l *lab.Lab, f family) want {
			reason := "NEIGH_FAILED"
			if f.suffix != "" {
				reason = "NOT_SPECIFIED"
			}
			return want{journey.Dropped, l.NodeA, reason, "", "", "", "", "NEIGH_FAILED", l.NodeA}
		}},
		// the underlay is IPv4 in both forms: an IPv6 packet too big for
		// the VXLAN path is refused like an IPv4 one
		{"small-mtu", false, true, func(l *lab.Lab, f family) []string {
			return []string{"--proto", "udp", "--to", net.JoinHostPort(f.podB, "53"), "--probe-size", "1400"}
		}, func(l *lab.Lab, f family) want {
			return want{journey.Dropped, l.Router, "PKT_TOO_BIG", "", "", "", "", "MTU_EXCEEDED", l.Router}
		}},
	}
	runFamilyCases(t, cases, false)
}

// dnsQueryArgs: a UDP query to the family's cluster DNS Service.
func dnsQueryArgs(l *lab.Lab, f family) []string {
	return []string{"--proto", "udp", "--to", f.dns.Addr()}
}

// familyCase is a fault scenario run in its IPv4 and IPv6 form.
type familyCase struct {
	fault    string
	iptables bool // made with iptables: run on both back ends
	// shared: one fault breaks both versions (no IPv6 form of its own);
	// each version then gets a lab of its own (the first packet too big
	// teaches node A the path MTU, which changes the next one's fate)
	shared bool
	// args: the trace's target (default: --to the family's web Service)
	args func(l *lab.Lab, f family) []string
	want func(l *lab.Lab, f family) want
}

// runFamilyCases runs each case in both forms on a dual-stack lab
// (underlay6: with an IPv6 underlay, whose faults these cases are), and
// fails for an IPv6 fault of that kind without a case.
func runFamilyCases(t *testing.T, cases []familyCase, underlay6 bool) {
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.fault+"-v6"] = true
	}
	for _, f := range lab.IPv6FaultNames() {
		if !covered[f] && lab.IPv6UnderlayFault(f) == underlay6 {
			t.Errorf("IPv6 fault %s has no case here", f)
		}
	}
	for _, c := range cases {
		backends := []string{"iptables-nft"}
		if c.iptables {
			backends = iptablesVariants
		}
		for _, ipt := range backends {
			t.Run(c.fault+"/"+ipt, func(t *testing.T) {
				var l *lab.Lab
				for i := range 2 {
					if l == nil || c.shared {
						l = lab.NewForTest(t, lab.Config{Iptables: ipt, DualStack: true, IPv6Underlay: underlay6})
						faults := []string{c.fault, c.fault + "-v6"}
						if c.shared {
							faults = faults[:1]
						}
						for _, name := range faults {
							if err := l.ApplyFault(name); err != nil {
								t.Fatalf("%s: %v", name, err)
							}
						}
					}
					f := families(l)[i]
					args := []string{"--to", f.svc.Addr()}
					if c.args != nil {
						args = c.args(l, f)
					}
					j := checkFamily(t, l, f, args, c.want(l, f))
					if underlay6 {
						checkUnderlay(t, l, f, c.fault, j)
					}
				}
			})
		}
	}
}

// checkUnderlay: the journey of version f was encapsulated by that
// version's VXLAN device, with the outer source fault left it.
func checkUnderlay(t *testing.T, l *lab.Lab, f family, fault string, j journey.Journey) {
	t.Helper()
	dev, src := l.VXLANDevice, lab.NodeAIP
	if f.suffix != "" {
		dev, src = l.VXLANDevice6, lab.NodeAIP6
	}
	if fault == "wrong-src" {
		src = lab.WrongSrcIP
		if f.suffix != "" {
			src = lab.WrongSrcIP6
		}
	}
	if len(j.Encaps) == 0 || j.Encaps[0].Device != dev || j.Encaps[0].OuterSrc != src {
		t.Errorf("%s: encaps %+v, want %s with outer source %s", f.name, j.Encaps, dev, src)
	}
}

// Issue 16: the underlay faults in IPv4 and IPv6 form, the IPv6 one over
// an IPv6 underlay (flannel-v6.1, outer IPv6): the same verdict, place and
// finding as over IPv4.
func TestUnderlayFaultsIPv4AndIPv6(t *testing.T) {
	cases := []familyCase{
		{"wrong-vtep", false, false, nil, func(l *lab.Lab, f family) want {
			return want{journey.Dropped, l.Router, "IP_INNOROUTES", "", "", "", "", "VXLAN_DST_UNKNOWN", l.NodeA}
		}},
		{"wrong-src", true, false, nil, func(l *lab.Lab, f family) want {
			src := lab.WrongSrcIP + "/32"
			if f.suffix != "" {
				src = lab.WrongSrcIP6 + "/128"
			}
			return want{journey.Dropped, l.Router, "NETFILTER_DROP", "FORWARD", "filter", "FORWARD",
				"-A FORWARD -s " + src + " -j DROP", "VXLAN_SRC_MISMATCH", l.NodeA}
		}},
		// a router with a small MTU refuses the outer packet: IPv4 with DF
		// set on flannel.1, IPv6 because IPv6 routers never fragment. The
		// pods' MTU is 1430 here: 1350 bytes of UDP payload fit it in both
		// versions (1378 and 1398 bytes), not the router's 1400 with VXLAN
		// (1428 and 1468).
		{"small-mtu", false, true, func(l *lab.Lab, f family) []string {
			return []string{"--proto", "udp", "--to", net.JoinHostPort(f.podB, "53"), "--probe-size", "1350"}
		}, func(l *lab.Lab, f family) want {
			return want{journey.Dropped, l.Router, "PKT_TOO_BIG", "", "", "", "", "MTU_EXCEEDED", l.Router}
		}},
	}
	runFamilyCases(t, cases, true)
}

// want is what a fault scenario's journey must show.
type want struct {
	kind, netns, reason, hook, table, chain, rule, code, findingNetns string
}

// checkFamily probes one IP version's target from pod A, checks the
// journey against w and returns it.
func checkFamily(t *testing.T, l *lab.Lab, f family, args []string, w want) journey.Journey {
	t.Helper()
	j, res := probeFromPodA(t, l, append([]string{"--service-cidr", "10.96.0.0/12," + lab.ServiceCIDR6}, args...)...)
	v := j.Verdict
	if res.exit != 1 {
		t.Errorf("%s: exit %d, want 1", f.name, res.exit)
	}
	if v.Kind != w.kind || v.Netns != w.netns || v.Reason != w.reason {
		t.Errorf("%s: verdict %+v, want %s in %s (%s)", f.name, v, w.kind, w.netns, w.reason)
	}
	if w.hook != "" && (v.Hook != w.hook || v.Table != w.table || v.Chain != w.chain || v.Rule != w.rule) {
		t.Errorf("%s: attribution hook=%q table=%q chain=%q rule=%q, want %q %q %q %q", f.name,
			v.Hook, v.Table, v.Chain, v.Rule, w.hook, w.table, w.chain, w.rule)
	}
	if len(j.Findings) == 0 || j.Findings[0].Code != w.code || j.Findings[0].Netns != w.findingNetns {
		t.Errorf("%s: findings %+v, want first %s in %s", f.name, j.Findings, w.code, w.findingNetns)
	}
	return j
}

// Issue 16 (daemon): an untraced IPv6 drop reaches the event stream with
// its IPv6 addresses and the drop metrics, as an IPv4 drop does.
func TestDaemonIPv6Drop(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{DualStack: true})
	d := startDaemon(t)
	if err := l.ApplyFault("forward-drop-v6"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Dial(ctx, l.PodA, l.WebService6.Addr(), time.Second); err == nil {
		t.Fatal("connect through the IPv6 FORWARD drop succeeded")
	}
	ev := d.waitEvent(t, func(j journey.Journey) bool {
		return j.Verdict.Kind == journey.Dropped && j.Verdict.Netns == l.NodeB && j.Verdict.Reason == "NETFILTER_DROP"
	})
	if ev.Packet.Proto != "tcp" || ev.Packet.Src != l.PodAIP6 || ev.Packet.Dst != lab.PodBIP6 || ev.Packet.Dport != 80 || ev.Packet.TCPFlags != "SYN" {
		t.Errorf("stream event packet %+v, want tcp SYN %s -> [%s]:80 (after the DNAT)", ev.Packet, l.PodAIP6, lab.PodBIP6)
	}
	re := regexp.MustCompile(`^skbtrail_drops_total\{netns="` + regexp.QuoteMeta(l.NodeB) + `",reason="NETFILTER_DROP"\} `)
	if v := d.metric(t, re); v < 1 {
		t.Errorf("skbtrail_drops_total for %s NETFILTER_DROP = %v, want >= 1", l.NodeB, v)
	}
}

// Issue 16: NO_REPLY over IPv6: a UDP datagram to a pod socket that reads
// and never answers is delivered, and the missing answer is the finding,
// as in seed 003's IPv4 form.
func TestIPv6NoReply(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{DualStack: true})
	if err := l.StartSilentUDP6(5353); err != nil {
		t.Fatal(err)
	}
	j, res := probeFromPodA(t, l, "--proto", "udp", "--to", net.JoinHostPort(lab.PodBIP6, "5353"))
	if res.exit != 1 || j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB {
		t.Errorf("exit %d verdict %+v, want delivered in %s", res.exit, j.Verdict, l.PodB)
	}
	if j.Packet.Proto != "udp" || j.Packet.Src != l.PodAIP6 || j.Packet.Dst != lab.PodBIP6 || j.Packet.Dport != 5353 {
		t.Errorf("packet %+v", j.Packet)
	}
	primaryFinding(t, j, "NO_REPLY", l.PodB)
}

// Issue 16: a node that forwards a packet bigger than its next device's
// MTU drops it (PKT_TOO_BIG) and sends the sender an ICMPv6 Packet Too Big
// (IPv6 routers never fragment) or, with DF set, an ICMP fragmentation
// needed: MTU_EXCEEDED names the device, its MTU and the ICMP error's MTU,
// in both forms.
func TestForwardTooBig(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{DualStack: true})
	// node A's overlay device below the pods' MTU (1450)
	if out, err := l.Run(l.NodeA, "ip", "link", "set", l.VXLANDevice, "mtu", "1300"); err != nil {
		t.Fatalf("set %s mtu: %v %s", l.VXLANDevice, err, out)
	}
	for _, c := range []struct {
		name, dst, icmp string
	}{
		{"ipv6", lab.PodBIP6, "ICMPv6 Packet Too Big with MTU 1300"},
		{"ipv4", lab.PodBIP, "ICMP fragmentation needed with MTU 1300"},
	} {
		t.Run(c.name, func(t *testing.T) {
			j, res := probeFromPodA(t, l, "--probe-size", "1350", "--proto", "udp", "--to", net.JoinHostPort(c.dst, "7777"))
			if j.Verdict.Kind != journey.Dropped || j.Verdict.Netns != l.NodeA || j.Verdict.Reason != "PKT_TOO_BIG" {
				t.Errorf("verdict %+v, want dropped in %s (PKT_TOO_BIG)", j.Verdict, l.NodeA)
			}
			f := primaryFinding(t, j, "MTU_EXCEEDED", l.NodeA)
			for _, want := range []string{"MTU 1300 of " + l.VXLANDevice, c.icmp} {
				if !strings.Contains(f.Message, want) {
					t.Errorf("finding %q lacks %q", f.Message, want)
				}
			}
			if !strings.Contains(f.Advice, "at most 1300") {
				t.Errorf("advice %q", f.Advice)
			}
			// the sender learned the path MTU from that ICMP error: its
			// kernel now refuses the same probe (EMSGSIZE) before any
			// packet exists, and the trace says so instead of only
			// "no matching packet"
			res = runTrace(t, "--from-netns", l.PodA, "--probe", "--probe-size", "1350", "--timeout", "3s", "--proto", "udp",
				"--to", net.JoinHostPort(c.dst, "7777"))
			if res.exit != 3 || len(res.journeys) != 0 || !strings.Contains(res.stderr, "the probe was not sent") || !strings.Contains(res.stderr, "path MTU of 1300") {
				t.Errorf("second probe: exit %d, %d journeys, stderr %q; want exit 3 naming the refused probe and the path MTU 1300", res.exit, len(res.journeys), res.stderr)
			}
		})
	}
}

// Issue 16: --probe's three kinds in both IP versions on one healthy
// dual-stack lab: an ICMP / ICMPv6 echo is delivered and answered (the
// reply back in pod A, whose raw socket took it); a UDP datagram to a port
// nobody listens on is answered with ICMP / ICMPv6 port unreachable:
// rejected in pod B (NO_SOCKET), NO_LISTENER.
func TestProbeKindsIPv4AndIPv6(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{DualStack: true})
	for _, f := range families(l) {
		icmp := "icmp"
		if f.suffix != "" {
			icmp = "icmpv6"
		}
		t.Run(f.name+"/echo", func(t *testing.T) {
			j, res := probeFromPodA(t, l, "--proto", "icmp", "--dst", f.podB)
			if res.exit != 0 || j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB || j.Packet.Proto != icmp || j.Packet.Dst != f.podB {
				t.Errorf("exit %d packet %+v verdict %+v, want %s delivered in %s", res.exit, j.Packet, j.Verdict, icmp, l.PodB)
			}
			if j.Reply == nil || j.Reply.Verdict != journey.Delivered || j.Reply.Packet.Proto != icmp || j.Reply.Packet.Src != f.podB {
				t.Errorf("reply %+v, want the echo reply from %s delivered", j.Reply, f.podB)
			}
		})
		t.Run(f.name+"/udp-closed-port", func(t *testing.T) {
			j, res := probeFromPodA(t, l, "--proto", "udp", "--to", net.JoinHostPort(f.podB, "9"))
			if res.exit != 1 || j.Verdict.Kind != journey.Rejected || j.Verdict.Netns != l.PodB || j.Verdict.Reason != "NO_SOCKET" {
				t.Errorf("exit %d verdict %+v, want rejected in %s (NO_SOCKET)", res.exit, j.Verdict, l.PodB)
			}
			if len(j.Findings) == 0 || j.Findings[0].Code != "NO_LISTENER" || j.Findings[0].Netns != l.PodB ||
				!strings.Contains(j.Findings[0].Message, "answered "+strings.ToUpper(icmp[:4])+icmp[4:]+" port unreachable") {
				t.Errorf("findings %+v, want NO_LISTENER in %s first, answered %s port unreachable", j.Findings, l.PodB, icmp)
			}
		})
	}
}
