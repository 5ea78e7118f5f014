package diagnose

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nfrules"
	"github.com/skbtrail/skbtrail/pkg/resolvconf"
)

// nodeASnapshot is the lab's node-a rules (kube-proxy style nat table) as
// recorded in pkg/nfrules/testdata.
func nodeASnapshot(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../nfrules/testdata/iptables-nft-save-node-a.txt")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestKubeServices(t *testing.T) {
	s := snapshot(t, nodeASnapshot(t))
	svcs := kubeServices(s, false)
	if len(svcs) != 2 {
		t.Fatalf("services %+v, want web and kube-dns", svcs)
	}
	dns := svcs[1]
	if svcs[0].Name == "kube-system/kube-dns:dns" {
		dns = svcs[0]
	}
	if dns.Name != "kube-system/kube-dns:dns" || dns.IP != netip.MustParseAddr("10.96.0.10") || dns.Proto != "udp" || dns.Port != 53 ||
		len(dns.Endpoints) != 1 || dns.Endpoints[0] != "10.244.1.2:53" {
		t.Errorf("kube-dns %+v", dns)
	}
}

// kube-proxy's IPv6 proxier programs the IPv6 ClusterIPs with ip6tables
// (/128 destinations, [addr]:port endpoints): they are read from the
// snapshot's IPv6 rules, and only when IPv6 ones are asked for.
const nodeAIP6Nat = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SEP-ABC [0:0]
:KUBE-SERVICES [0:0]
:KUBE-SVC-XYZ [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SEP-ABC -s fd00:10:244:1::2/128 -m comment --comment "kube-system/kube-dns:dns" -j KUBE-MARK-MASQ
-A KUBE-SEP-ABC -p udp -m comment --comment "kube-system/kube-dns:dns" -m udp -j DNAT --to-destination [fd00:10:244:1::2]:53
-A KUBE-SERVICES -d fd00:10:96::a/128 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-XYZ
-A KUBE-SVC-XYZ -m comment --comment "kube-system/kube-dns:dns -> [fd00:10:244:1::2]:53" -j KUBE-SEP-ABC
COMMIT
`

func TestKubeServicesIPv6(t *testing.T) {
	rs, err := nfrules.ParseIptablesSave("legacy", nodeAIP6Nat)
	if err != nil {
		t.Fatal(err)
	}
	s := &nfrules.Snapshot{Legacy6: rs}
	if svcs := kubeServices(s, false); len(svcs) != 0 {
		t.Errorf("IPv4 services %+v from ip6tables rules", svcs)
	}
	svcs := kubeServices(s, true)
	if len(svcs) != 1 {
		t.Fatalf("IPv6 services %+v, want kube-dns", svcs)
	}
	dns := svcs[0]
	if dns.Name != "kube-system/kube-dns:dns" || dns.IP != netip.MustParseAddr("fd00:10:96::a") || dns.Proto != "udp" || dns.Port != 53 ||
		len(dns.Endpoints) != 1 || dns.Endpoints[0] != "[fd00:10:244:1::2]:53" {
		t.Errorf("kube-dns %+v", dns)
	}
}

func TestDNSFindings(t *testing.T) {
	udp := func(dst string) journey.Tuple {
		return journey.Tuple{Proto: journey.ProtoUDP, Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr(dst), Sport: 4000, Dport: 53}
	}
	cluster := resolvconf.Config{Nameservers: []netip.Addr{netip.MustParseAddr("10.96.0.10")}}
	upstream := resolvconf.Config{Nameservers: []netip.Addr{netip.MustParseAddr("203.0.113.53")}}
	cases := []struct {
		name       string
		dst        string
		conf       *resolvconf.Config
		want       map[string][]string // code -> words
		wantAbsent []string
	}{
		{"pod bypasses the cluster DNS", "203.0.113.53", &upstream,
			map[string][]string{CodeDNSConfig: {"resolv.conf of pod-a (read through pid 4321) names nameserver 203.0.113.53", "kube-system/kube-dns:dns (10.96.0.10)", "this query went to 203.0.113.53"}},
			[]string{CodeDNSService}},
		{"query to the cluster DNS", "10.96.0.10", &cluster,
			map[string][]string{CodeDNSService: {"cluster DNS Service kube-system/kube-dns:dns (10.96.0.10:53/udp)", "endpoints on this node's kube-proxy rules: 10.244.1.2:53"}},
			[]string{CodeDNSConfig}},
		{"no process to read", "10.96.0.10", nil, map[string][]string{CodeDNSService: nil}, []string{CodeDNSConfig}},
	}
	for _, c := range cases {
		d := New(Config{})
		d.before[nodeA] = snapshot(t, nodeASnapshot(t))
		d.resolvConf = func(ns uint32) (resolvconf.Config, int, bool) {
			if ns != podA {
				t.Errorf("%s: resolv.conf of netns %d, want pod-a's", c.name, ns)
			}
			if c.conf == nil {
				return resolvconf.Config{}, 0, false
			}
			return *c.conf, 4321, true
		}
		pkt := udp(c.dst)
		j := build(t, ev(journey.KindTx, podA, "eth0", pkt), ev(journey.KindRx, nodeA, "vethpoda", pkt), ev(journey.KindConsume, nodeA, "vethpoda", pkt))
		d.Diagnose(j)
		for code, words := range c.want {
			var f *journey.Finding
			for i := range j.Findings {
				if j.Findings[i].Code == code {
					f = &j.Findings[i]
				}
			}
			if f == nil {
				t.Errorf("%s: findings %+v, want %s", c.name, j.Findings, code)
				continue
			}
			for _, w := range words {
				if !strings.Contains(f.Message, w) {
					t.Errorf("%s: %s message %q lacks %q", c.name, code, f.Message, w)
				}
			}
		}
		for _, code := range c.wantAbsent {
			for _, f := range j.Findings {
				if f.Code == code {
					t.Errorf("%s: unexpected %+v", c.name, f)
				}
			}
		}
	}
}

// An IPv6 DNS query: the IPv6 cluster DNS Service from ip6tables' rules
// when kube-proxy programs one, else the IPv4 one a dual-stack pod's
// resolv.conf names.
func TestDNSFindingsIPv6(t *testing.T) {
	rs6, err := nfrules.ParseIptablesSave("legacy", nodeAIP6Nat)
	if err != nil {
		t.Fatal(err)
	}
	ipv4Only := snapshot(t, nodeASnapshot(t))
	dualStack := snapshot(t, nodeASnapshot(t))
	dualStack.Legacy6 = rs6
	cases := []struct {
		name       string
		rules      *nfrules.Snapshot
		dst        string
		nameserver string
		code       string
		words      []string
	}{
		{"query to the IPv6 cluster DNS", dualStack, "fd00:10:96::a", "fd00:10:96::a", CodeDNSService,
			[]string{"a query to the cluster DNS Service kube-system/kube-dns:dns (", "fd00:10:96::a", "53/udp", "[fd00:10:244:1::2]:53"}},
		{"IPv6 upstream, IPv4 cluster DNS", ipv4Only, "2001:db8::53", "2001:db8::53", CodeDNSConfig,
			[]string{"names nameserver 2001:db8::53", "kube-system/kube-dns:dns (10.96.0.10)"}},
	}
	for _, c := range cases {
		d := New(Config{})
		d.before[nodeA] = c.rules
		d.resolvConf = func(uint32) (resolvconf.Config, int, bool) {
			return resolvconf.Config{Nameservers: []netip.Addr{netip.MustParseAddr(c.nameserver)}}, 4321, true
		}
		pkt := journey.Tuple{Proto: journey.ProtoUDP, Src: netip.MustParseAddr("fd00:10:244::5"), Dst: netip.MustParseAddr(c.dst), Sport: 4000, Dport: 53}
		j := build(t, ev(journey.KindTx, podA, "eth0", pkt), ev(journey.KindRx, nodeA, "vethpoda", pkt), ev(journey.KindConsume, nodeA, "vethpoda", pkt))
		d.Diagnose(j)
		var f *journey.Finding
		for i := range j.Findings {
			if j.Findings[i].Code == c.code {
				f = &j.Findings[i]
			}
		}
		if f == nil {
			t.Errorf("%s: findings %+v, want %s", c.name, j.Findings, c.code)
			continue
		}
		for _, w := range c.words {
			if !strings.Contains(f.Message, w) {
				t.Errorf("%s: %s message %q lacks %q", c.name, c.code, f.Message, w)
			}
		}
	}
}
