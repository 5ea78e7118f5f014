package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// mustFinding returns the journey's finding with code, failing the test when
// there is none.
func mustFinding(t *testing.T, j journey.Journey, code string) journey.Finding {
	t.Helper()
	for _, f := range j.Findings {
		if f.Code == code {
			return f
		}
	}
	t.Fatalf("findings %v, want %s", findingCodes(j), code)
	return journey.Finding{}
}

// Issue 19 (seed 001, "the Service's pods are gone"): kube-proxy refuses a
// ClusterIP port without ready endpoints. skbtrail names the Service and
// the endpoints to fix, and never advises deleting kube-proxy's rule.
// Issue 16: the same for the IPv6 ClusterIP of a dual-stack lab
// (ip6tables, table ip6 kube-proxy).
func TestServiceNoEndpoints(t *testing.T) {
	cases := []struct {
		mode, fault, table, chain, rule string
		ipv6                            bool
	}{
		{"iptables", "service-no-endpoints", "filter", "KUBE-SERVICES", "default/web:http has no endpoints", false},
		{"nftables", "service-no-endpoints-nft", "ip kube-proxy", "reject-chain", "reject", false},
		{"iptables-v6", "service-no-endpoints-v6", "filter", "KUBE-SERVICES", "default/web:http has no endpoints", true},
		{"nftables-v6", "service-no-endpoints-nft-v6", "ip6 kube-proxy", "reject-chain", "reject", true},
	}
	for _, c := range cases {
		for _, ipt := range iptablesVariants {
			t.Run(c.mode+"/"+ipt, func(t *testing.T) {
				l := lab.NewForTest(t, lab.Config{Iptables: ipt, DualStack: c.ipv6})
				if err := l.ApplyFault(c.fault); err != nil {
					t.Fatal(err)
				}
				probe, svcAddr := probeService, "10.96.0.100:80"
				if c.ipv6 {
					probe, svcAddr = probeService6, "["+lab.ClusterIP6+"]:80"
				}
				j, res := probe(t, l)
				if res.exit != 1 {
					t.Errorf("exit %d, want 1", res.exit)
				}
				v := j.Verdict
				if v.Kind != journey.Rejected || v.Netns != l.NodeA || v.Reason != "NETFILTER_DROP" || v.Hook != "FORWARD" ||
					v.Table != c.table || v.Chain != c.chain || !strings.Contains(v.Rule, c.rule) {
					t.Fatalf("verdict %+v, want rejected in %s %s/%s by %q", v, l.NodeA, c.table, c.chain, c.rule)
				}
				f := mustFinding(t, j, "SERVICE_NO_ENDPOINTS")
				if j.Findings[0].Code != "SERVICE_NO_ENDPOINTS" || f.Severity != journey.SeverityError || f.Netns != l.NodeA {
					t.Errorf("findings %+v, want SERVICE_NO_ENDPOINTS first, an error in %s", j.Findings, l.NodeA)
				}
				requireMentions(t, "message", f.Message, "default/web:http", svcAddr, "no ready endpoints")
				requireMentions(t, "advice", f.Advice, "kubectl get endpointslices -n default -l kubernetes.io/service-name=web",
					"selector", "Ready", "Do not delete")
				for _, g := range j.Findings {
					if strings.Contains(g.Advice, " -D ") || strings.Contains(g.Advice, "nft delete") {
						t.Errorf("finding %s advises deleting kube-proxy's rule: %q", g.Code, g.Advice)
					}
				}
				if hasFinding(j, "NF_REJECT") || hasFinding(j, "NO_LISTENER") {
					t.Errorf("findings %v: the refusal is explained by SERVICE_NO_ENDPOINTS alone", findingCodes(j))
				}
			})
		}
	}
}

// Issue 19 (seed 001, "the application listens on 127.0.0.1"): a refused
// request's NO_LISTENER says what does listen in the destination pod, read
// over sock_diag there.
func TestListenerMismatch(t *testing.T) {
	cases := []struct {
		name, fault string
		setup       func(l *lab.Lab) error
		message     []string
		advice      []string
		udp         bool
		ipv6        bool // the IPv6 Service of a dual-stack lab (issue 16)
	}{
		{"udp-loopback-only", "none", func(l *lab.Lab) error { return l.StartLoopbackUDP(53) },
			[]string{"nothing listens on udp 10.244.1.2:53", "answered ICMP port unreachable", "udp server listens on port 53 on loopback only (127.0.0.1:53)"},
			[]string{"0.0.0.0:53"}, true, false},
		{"loopback-only", "listener-loopback", nil,
			[]string{"10.244.1.2:80", "loopback only", "127.0.0.1:80"},
			[]string{"0.0.0.0:80", "10.244.1.2:80", "instead of 127.0.0.1:80"}, false, false},
		{"loopback-only-v6", "listener-loopback-v6", nil,
			[]string{"[" + lab.PodBIP6 + "]:80", "loopback only", "[::1]:80"},
			[]string{"[::]:80", "[" + lab.PodBIP6 + "]:80", "instead of [::1]:80"}, false, true},
		{"nothing", "no-listener", nil,
			[]string{"no tcp socket listens in the namespace at all"},
			[]string{"not running", "kubectl describe pod"}, false, false},
		{"other-port", "no-listener", func(l *lab.Lab) error { return l.StartTCPEcho(8080) },
			[]string{"nothing listens on tcp port 80", "10.244.1.2:8080"},
			[]string{"targetPort", "(8080)"}, false, false},
		{"other-protocol", "no-listener", func(l *lab.Lab) error { return l.StartSilentUDP(80) },
			[]string{"nothing listens on tcp port 80", "udp socket is bound to 10.244.1.2:80"},
			[]string{"protocol", "UDP"}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{DualStack: c.ipv6})
			if err := l.ApplyFault(c.fault); err != nil {
				t.Fatal(err)
			}
			if c.setup != nil {
				if err := c.setup(l); err != nil {
					t.Fatal(err)
				}
			}
			var extra []string
			if c.udp {
				extra = []string{"--proto", "udp", "--to", l.DNSService.Addr()}
			}
			probe := probeService
			if c.ipv6 {
				probe = probeService6
			}
			j, res := probe(t, l, extra...)
			if res.exit != 1 {
				t.Errorf("exit %d, want 1", res.exit)
			}
			// refused: a TCP SYN with a RST, a UDP datagram with ICMP port
			// unreachable
			if v := j.Verdict; v.Kind != journey.Rejected || v.Netns != l.PodB || v.Reason != "NO_SOCKET" {
				t.Fatalf("verdict %+v, want rejected in %s (NO_SOCKET)", v, l.PodB)
			}
			f := mustFinding(t, j, "NO_LISTENER")
			if j.Findings[0].Code != "NO_LISTENER" || f.Netns != l.PodB || f.Severity != journey.SeverityError {
				t.Errorf("findings %+v, want NO_LISTENER first, an error in %s", j.Findings, l.PodB)
			}
			requireMentions(t, "message", f.Message, c.message...)
			requireMentions(t, "advice", f.Advice, c.advice...)
		})
	}
}

// Issue 19 (seed 001, "full queues under load"): a packet lost to a full
// socket queue in the destination pod names the socket, the process that
// holds it, the queue and its limit.
func TestSocketQueueFull(t *testing.T) {
	cases := []struct {
		name, fault, kind, reason string
		args                      func(l *lab.Lab) []string
		message, advice           []string
	}{
		{"accept-queue", "accept-queue-full", journey.Delivered, "", nil,
			[]string{"accept queue", "tcp socket 10.244.1.2:80", "held by e2e.test (pid ", "1 connection waits for accept()", "listen backlog) is 0", "ListenOverflows"},
			[]string{"accept()", "somaxconn"}},
		{"udp-receive-buffer", "udp-rcvbuf-full", journey.Dropped, "SOCKET_RCVBUFF",
			func(l *lab.Lab) []string { return []string{"--proto", "udp", "--to", l.DNSService.Addr()} },
			[]string{"receive buffer", "udp socket 10.244.1.2:53", "held by e2e.test (pid ", "(SO_RCVBUF)", "SOCKET_RCVBUFF"},
			[]string{"CoreDNS", "SO_RCVBUF", "rmem_max"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{})
			if err := l.ApplyFault(c.fault); err != nil {
				t.Fatal(err)
			}
			var extra []string
			if c.args != nil {
				extra = c.args(l)
			}
			j, res := probeService(t, l, extra...)
			if res.exit != 1 {
				t.Errorf("exit %d, want 1", res.exit)
			}
			if v := j.Verdict; v.Kind != c.kind || v.Netns != l.PodB || v.Reason != c.reason {
				t.Fatalf("verdict %+v, want %s in %s (%q)", v, c.kind, l.PodB, c.reason)
			}
			f := mustFinding(t, j, "SOCKET_QUEUE_FULL")
			if j.Findings[0].Code != "SOCKET_QUEUE_FULL" || f.Netns != l.PodB || f.Severity != journey.SeverityError {
				t.Errorf("findings %+v, want SOCKET_QUEUE_FULL first, an error in %s", j.Findings, l.PodB)
			}
			requireMentions(t, "message", f.Message, c.message...)
			requireMentions(t, "advice", f.Advice, c.advice...)
		})
	}
}

// Issue 19 (seed 001, "the NIC queue is full"): a packet dropped at a
// device's queue names the device, the qdisc, its fill and its limit.
func TestQdiscDrop(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{})
	if err := l.ApplyFault("qdisc-full"); err != nil {
		t.Fatal(err)
	}
	j, res := probeService(t, l)
	if res.exit != 1 {
		t.Errorf("exit %d, want 1", res.exit)
	}
	if v := j.Verdict; v.Kind != journey.Dropped || v.Netns != l.NodeA || v.Device != "eth0" || v.Reason != "QDISC_DROP" {
		t.Fatalf("verdict %+v, want dropped in %s at eth0 (QDISC_DROP)", v, l.NodeA)
	}
	f := mustFinding(t, j, "QDISC_DROP")
	if j.Findings[0].Code != "QDISC_DROP" || f.Netns != l.NodeA || f.Severity != journey.SeverityError {
		t.Errorf("findings %+v, want QDISC_DROP first, an error in %s", j.Findings, l.NodeA)
	}
	requireMentions(t, "message", f.Message, "tbf qdisc", "at the root of eth0", "queue was full", "limit 3000 bytes", "rate 8 bit/s", "packets dropped")
	requireMentions(t, "advice", f.Advice, "tc -s qdisc show dev eth0", "limit or rate")
}

// Rules a component owns are never advised for deletion or override: with
// Docker's chains on node-b (seed 002 as dockerd leaves it), FORWARD's
// policy DROP is Docker's, and the fix goes into DOCKER-USER.
//
// Issue 16: with IPv6 filtering on, dockerd writes the same in ip6tables;
// the IPv6 journey's advice is ip6tables'.
func TestDockerOwnedPolicy(t *testing.T) {
	for _, ipt := range iptablesVariants {
		t.Run(ipt, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Iptables: ipt, DualStack: true})
			for _, fault := range []string{"docker-forward-drop", "docker-forward-drop-v6"} {
				if err := l.ApplyFault(fault); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range families(l) {
				j, res := probeService(t, l)
				cmd := strings.TrimSuffix(ipt, "-nft") // iptables, iptables-legacy
				if f.suffix != "" {
					j, res = probeService6(t, l)
					cmd = strings.Replace(cmd, "iptables", "ip6tables", 1)
				}
				if res.exit != 1 {
					t.Errorf("%s: exit %d, want 1", f.name, res.exit)
				}
				v := j.Verdict
				if v.Kind != journey.Dropped || v.Netns != l.NodeB || v.Hook != "FORWARD" || v.Table != "filter" || v.Chain != "FORWARD" || v.Rule != "policy DROP" {
					t.Fatalf("%s: verdict %+v, want dropped in %s by filter/FORWARD policy DROP", f.name, v, l.NodeB)
				}
				fd := mustFinding(t, j, "NF_POLICY_DROP")
				requireMentions(t, "message", fd.Message, "from flannel.1 to cni0", "(the policy Docker sets)")
				requireMentions(t, "advice", fd.Advice, cmd+" -I DOCKER-USER -i flannel.1 -o cni0 -j ACCEPT", "Docker sets filter/FORWARD's policy to DROP")
				if strings.Contains(fd.Advice, "-I FORWARD") || strings.Contains(fd.Advice, "-P FORWARD") {
					t.Errorf("%s: advice %q changes Docker's FORWARD chain", f.name, fd.Advice)
				}
			}
		})
	}
}

// Issue 19 (a VXLAN peer's neighbour entry gone after a CNI restart): the
// finding names the next hop, its missing entry and the CNI that writes it.
func TestNeighFailed(t *testing.T) {
	for _, flavor := range []string{lab.FlavorFlannel, lab.FlavorCalico} {
		t.Run(flavor, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Flavor: flavor})
			if err := l.ApplyFault("neigh-missing"); err != nil {
				t.Fatal(err)
			}
			j, res := probeService(t, l)
			if res.exit != 1 {
				t.Errorf("exit %d, want 1", res.exit)
			}
			if v := j.Verdict; v.Kind != journey.Dropped || v.Netns != l.NodeA || v.Device != l.VXLANDevice || v.Reason != "NEIGH_FAILED" {
				t.Fatalf("verdict %+v, want dropped in %s at %s (NEIGH_FAILED)", v, l.NodeA, l.VXLANDevice)
			}
			f := mustFinding(t, j, "NEIGH_FAILED")
			if j.Findings[0].Code != "NEIGH_FAILED" || f.Netns != l.NodeA || f.Severity != journey.SeverityError {
				t.Errorf("findings %+v, want NEIGH_FAILED first, an error in %s", j.Findings, l.NodeA)
			}
			owner := map[string]string{lab.FlavorFlannel: "restart flanneld", lab.FlavorCalico: "restart calico-node"}[flavor]
			requireMentions(t, "message", f.Message, "next hop 10.244.1.0 on "+l.VXLANDevice+" (a VXLAN device)", "resolution failed")
			requireMentions(t, "advice", f.Advice, owner, "permanent neighbour entry", "ip neigh show dev "+l.VXLANDevice)
		})
	}
}

// Issue 19 (seed 001, "the pod's DNS configuration is wrong"): a query from
// a pod whose resolv.conf bypasses the cluster DNS is flagged; a query to
// the cluster DNS names the Service and its endpoints.
func TestDNSConfig(t *testing.T) {
	t.Run("pod-bypasses-cluster-dns", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{})
		if err := l.ApplyFault("pod-dns-upstream"); err != nil {
			t.Fatal(err)
		}
		j, res := probeService(t, l, "--proto", "udp", "--to", lab.UpstreamDNS+":53")
		if res.exit != 1 {
			t.Errorf("exit %d, want 1", res.exit)
		}
		if v := j.Verdict; v.Kind != journey.Dropped || v.Netns != l.Router || v.Reason != "IP_INNOROUTES" {
			t.Errorf("verdict %+v, want dropped in %s (IP_INNOROUTES)", v, l.Router)
		}
		f := mustFinding(t, j, "DNS_CONFIG")
		if j.Findings[0].Code != "DNS_CONFIG" || f.Netns != l.PodA || f.Severity != journey.SeverityWarning {
			t.Errorf("findings %+v, want DNS_CONFIG first, a warning in %s", j.Findings, l.PodA)
		}
		requireMentions(t, "message", f.Message, "resolv.conf of "+l.PodA, "nameserver "+lab.UpstreamDNS, "kube-system/kube-dns:dns (10.96.0.10)", "this query went to "+lab.UpstreamDNS)
		requireMentions(t, "advice", f.Advice, "dnsPolicy", "ClusterFirst", "clusterDNS")
		if hasFinding(j, "DNS_SERVICE") {
			t.Errorf("findings %v: the query did not go to the cluster DNS", findingCodes(j))
		}
	})
	t.Run("query-to-cluster-dns", func(t *testing.T) {
		l := lab.NewForTest(t, lab.Config{})
		if err := l.ApplyFault("silent-dns"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.SetPodDNS(ctx, l.DNSService.ClusterIP); err != nil {
			t.Fatal(err)
		}
		j, res := probeService(t, l, "--proto", "udp", "--to", l.DNSService.Addr())
		if res.exit != 1 || j.Verdict.Kind != journey.Delivered || j.Verdict.Netns != l.PodB {
			t.Errorf("exit %d verdict %+v, want delivered in %s (and no reply)", res.exit, j.Verdict, l.PodB)
		}
		if j.Findings[0].Code != "NO_REPLY" || hasFinding(j, "DNS_CONFIG") {
			t.Errorf("findings %v, want NO_REPLY first and no DNS_CONFIG (resolv.conf names the cluster DNS)", findingCodes(j))
		}
		f := mustFinding(t, j, "DNS_SERVICE")
		if f.Severity != journey.SeverityInfo {
			t.Errorf("DNS_SERVICE %+v, want info", f)
		}
		requireMentions(t, "message", f.Message, "kube-system/kube-dns:dns (10.96.0.10:53/udp)", "10.244.1.2:53", "this query went to 10.244.1.2:53")
	})
}
