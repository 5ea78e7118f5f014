package diagnose

import (
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nfrules"
)

// dockerSave is a node's filter table with Docker's chains and its FORWARD
// policy DROP, plus kube-proxy and flannel chains, as iptables-save -c
// prints them after the rules dropped or rejected one packet each.
const dockerSave = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [1:60]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:FLANNEL-FWD - [0:0]
:KUBE-SERVICES - [0:0]
[1:60] -A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
[0:0] -A FORWARD -j DOCKER-USER
[0:0] -A FORWARD -j DOCKER-ISOLATION-STAGE-1
[0:0] -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
[1:60] -A KUBE-SERVICES -d 10.96.0.100/32 -p tcp -m comment --comment "default/web:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
[0:0] -A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DROP
[0:0] -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j DROP
COMMIT
`

func snapshot(t *testing.T, save string) *nfrules.Snapshot {
	t.Helper()
	rs, err := nfrules.ParseIptablesSave("nft", save)
	if err != nil {
		t.Fatal(err)
	}
	return &nfrules.Snapshot{NFT: rs}
}

func fwdPacket(dst string, dport uint16) nfrules.Packet {
	return nfrules.Packet{Tuple: tcp("10.244.0.5", dst, 40000, dport), Iif: "cni0", Oif: "eth0"}
}

func TestServiceNoEndpointsFinding(t *testing.T) {
	after := snapshot(t, dockerSave)
	dec, ok := nfrules.DropByCounters(nil, after.NFT, "filter", "FORWARD")
	if !ok || dec.Chain != "KUBE-SERVICES" {
		t.Fatalf("decision %+v %v, want the KUBE-SERVICES REJECT", dec, ok)
	}
	v := journey.Verdict{Kind: journey.Rejected, Netns: "node-a", Table: "filter", Chain: dec.Chain, Rule: dec.Rule}
	f := nfFinding(dec, fwdPacket("10.96.0.100", 80), after, v, "tcp 10.244.0.5:40000 -> 10.96.0.100:80", " from cni0 to eth0")
	if f.Code != CodeServiceNoEndpoints || f.Severity != journey.SeverityError || f.Netns != "node-a" {
		t.Fatalf("finding %+v", f)
	}
	for _, w := range []string{"default/web:http", "10.96.0.100:80/tcp", "no ready endpoints"} {
		if !strings.Contains(f.Message, w) {
			t.Errorf("message %q lacks %q", f.Message, w)
		}
	}
	for _, w := range []string{"kubectl get endpointslices -n default -l kubernetes.io/service-name=web", "selector", "not Ready", "Do not delete"} {
		if !strings.Contains(f.Advice, w) {
			t.Errorf("advice %q lacks %q", f.Advice, w)
		}
	}
	if strings.Contains(f.Advice, "-D ") {
		t.Errorf("advice %q deletes kube-proxy's rule", f.Advice)
	}

	local := nfrules.Decision{Family: "ip", Source: "iptables-legacy", Table: "filter", Chain: "KUBE-SERVICES", Verdict: "DROP",
		Rule: `-A KUBE-SERVICES -d 10.96.0.100/32 -p tcp -m comment --comment "default/web:http has no local endpoints" -m tcp --dport 80 -j DROP`}
	f = nfFinding(local, fwdPacket("10.96.0.100", 80), after, v, "tcp 10.244.0.5:40000 -> 10.96.0.100:80", "")
	if f.Code != CodeServiceNoEndpoints || !strings.Contains(f.Message, "no ready endpoint on this node") || !strings.Contains(f.Message, "dropped") ||
		!strings.Contains(f.Advice, "nodeName") || !strings.Contains(f.Advice, "Cluster") || strings.Contains(f.Advice, "-D ") {
		t.Errorf("local finding %+v", f)
	}
}

// The IPv6 form (kube-proxy's ip6tables REJECT, an IPv6 ClusterIP): the
// Service's address and port as [addr]:port.
func TestServiceNoEndpointsFindingIPv6(t *testing.T) {
	dec := nfrules.Decision{Family: "ip6", Source: "iptables-nft", Table: "filter", Chain: "KUBE-SERVICES", Verdict: "REJECT",
		Rule: `-A KUBE-SERVICES -d fd00:10:96::100/128 -p tcp -m comment --comment "default/web:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp6-port-unreachable`}
	v := journey.Verdict{Kind: journey.Rejected, Netns: "node-a", Table: "filter", Chain: dec.Chain, Rule: dec.Rule}
	pkt := nfrules.Packet{Tuple: tcp("fd00:10:244::5", "fd00:10:96::100", 40000, 80), Iif: "cni0", Oif: "eth0"}
	f := nfFinding(dec, pkt, &nfrules.Snapshot{}, v, "tcp [fd00:10:244::5]:40000 -> [fd00:10:96::100]:80", " from cni0 to eth0")
	if f.Code != CodeServiceNoEndpoints || f.Severity != journey.SeverityError || f.Netns != "node-a" {
		t.Fatalf("finding %+v", f)
	}
	for _, w := range []string{"Service default/web:http ([fd00:10:96::100]:80/tcp) has no ready endpoints", "icmp6-port-unreachable"} {
		if !strings.Contains(f.Message, w) {
			t.Errorf("message %q lacks %q", f.Message, w)
		}
	}
	if !strings.Contains(f.Advice, "kubernetes.io/service-name=web") || strings.Contains(f.Advice, "-D ") {
		t.Errorf("advice %q", f.Advice)
	}
}

func TestNoEndpointsService(t *testing.T) {
	cases := []struct {
		dec  nfrules.Decision
		want string
	}{
		{nfrules.Decision{Source: "iptables-legacy", Table: "filter", Chain: "KUBE-EXTERNAL-SERVICES", Verdict: "REJECT",
			Rule: `-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "default/my-nodeport-service:80-8080 has no endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 31736 -j REJECT --reject-with icmp-port-unreachable`},
			"default/my-nodeport-service:80-8080"},
		{nfrules.Decision{Source: "iptables-nft", Table: "filter", Chain: "KUBE-SERVICES", Verdict: "REJECT",
			Rule: `-A KUBE-SERVICES -d 10.96.5.5/32 -p udp -m comment --comment "ns1/unnamed has no endpoints" -m udp --dport 53 -j REJECT`},
			"ns1/unnamed"},
		{nfrules.Decision{Source: "nft", Family: "ip", Table: "kube-proxy", Chain: "reject-chain", Verdict: "REJECT", Rule: "reject",
			Map: "no-endpoint-services", Comment: "ns6/svc6:p80"}, "ns6/svc6:p80"},
		{nfrules.Decision{Source: "iptables-nft", Table: "filter", Chain: "KUBE-EXTERNAL-SERVICES", Verdict: "DROP",
			Rule: `-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "ingress-nginx/ingress-nginx-controller:http has no local endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j DROP`},
			"ingress-nginx/ingress-nginx-controller:http local"},
		{nfrules.Decision{Source: "nft", Family: "ip", Table: "kube-proxy", Chain: "service-endpoints-check", Verdict: "DROP", Rule: "vmap @no-endpoint-services",
			Map: "no-endpoint-services", Comment: "ns2/svc2:p80"}, "ns2/svc2:p80 local"},
		// kube-proxy's IPv6 proxiers: ip6tables, table ip6 kube-proxy
		{nfrules.Decision{Family: "ip6", Source: "iptables-legacy", Table: "filter", Chain: "KUBE-SERVICES", Verdict: "REJECT",
			Rule: `-A KUBE-SERVICES -d fd00:10:96::100/128 -p tcp -m comment --comment "default/web:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp6-port-unreachable`},
			"default/web:http"},
		{nfrules.Decision{Source: "nft", Family: "ip6", Table: "kube-proxy", Chain: "reject-chain", Verdict: "REJECT", Rule: "reject",
			Map: "no-endpoint-services", Comment: "default/web:http"}, "default/web:http"},
		// not kube-proxy's: a user's REJECT with a look-alike comment
		{nfrules.Decision{Source: "iptables-nft", Table: "filter", Chain: "FORWARD", Verdict: "REJECT",
			Rule: `-A FORWARD -m comment --comment "default/web:http has no endpoints" -j REJECT`}, ""},
		{nfrules.Decision{Source: "nft", Family: "ip", Table: "kube-proxy", Chain: "cluster-ips-check", Verdict: "REJECT",
			Rule: `ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"`}, ""},
	}
	for _, c := range cases {
		svc, ok := noEndpointsService(c.dec)
		got := map[bool]string{true: svc.String()}[ok]
		if svc.Local {
			got += " local"
		}
		if got != c.want {
			t.Errorf("%s: service %q, want %q", c.dec.Rule, got, c.want)
		}
	}
}

// Rules a component owns are never advised for deletion: the advice names
// the component and what to change there.
func TestOwnedRuleAdvice(t *testing.T) {
	after := snapshot(t, dockerSave)
	v := journey.Verdict{Kind: journey.Dropped, Netns: "node-b"}
	pkt := fwdPacket("10.244.1.2", 80)
	cases := []struct {
		dec         nfrules.Decision
		code, owner string
		words       []string
	}{
		{nfrules.Decision{Family: "ip", Source: "iptables-nft", Table: "filter", Chain: "FLANNEL-FWD", Verdict: "DROP",
			Rule: `-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j DROP`}, CodeNFRuleDrop, "flannel", []string{"net-conf.json"}},
		{nfrules.Decision{Family: "ip", Source: "iptables-nft", Table: "filter", Chain: "DOCKER-ISOLATION-STAGE-1", Verdict: "DROP",
			Rule: `-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DROP`}, CodeNFRuleDrop, "Docker", []string{"DOCKER-USER"}},
		{nfrules.Decision{Family: "ip", Source: "iptables-legacy", Table: "filter", Chain: "KUBE-FORWARD", Verdict: "REJECT",
			Rule: `-A KUBE-FORWARD -j REJECT`}, CodeNFReject, "kube-proxy", []string{"Service"}},
		{nfrules.Decision{Family: "ip", Source: "iptables-nft", Table: "filter", Chain: "cali-fw-cali1234", Verdict: "DROP",
			Rule: `-A cali-fw-cali1234 -m comment --comment "cali:abc" -j DROP`}, CodeNFRuleDrop, "Calico", []string{"networkpolicy"}},
		{nfrules.Decision{Family: "ip", Source: "nft", Table: "kube-proxy", Chain: "cluster-ips-check", Verdict: "DROP",
			Rule: `ip daddr { 10.96.0.0/12 } drop comment "Drop traffic to unallocated ClusterIPs"`, Handle: 9}, CodeNFRuleDrop, "kube-proxy", []string{"chain cluster-ips-check of table ip kube-proxy"}},
	}
	for _, c := range cases {
		f := nfFinding(c.dec, pkt, after, v, "tcp 10.244.0.5:40000 -> 10.244.1.2:80", "")
		if f.Code != c.code {
			t.Errorf("%s: code %s, want %s", c.dec.Chain, f.Code, c.code)
		}
		if strings.Contains(f.Advice, "-D ") || strings.Contains(f.Advice, "nft delete") || !strings.Contains(f.Advice, "do not delete it") {
			t.Errorf("%s: advice %q must not delete the owned rule", c.dec.Chain, f.Advice)
		}
		for _, w := range append(c.words, c.owner) {
			if !strings.Contains(f.Advice, w) {
				t.Errorf("%s: advice %q lacks %q", c.dec.Chain, f.Advice, w)
			}
		}
	}

	// Docker's FORWARD policy DROP: allow in DOCKER-USER, not by the policy.
	pol := nfrules.Decision{Family: "ip", Source: "iptables-nft", Table: "filter", Chain: "FORWARD", Rule: "policy DROP", Verdict: "policy DROP"}
	pkt.Iif, pkt.Oif = "flannel.1", "cni0"
	f := nfFinding(pol, pkt, after, v, "tcp", "")
	if f.Code != CodeNFPolicyDrop || !strings.Contains(f.Advice, "iptables -I DOCKER-USER -i flannel.1 -o cni0 -j ACCEPT") || !strings.Contains(f.Advice, "Docker sets") {
		t.Errorf("docker policy finding %+v", f)
	}
	// Without Docker's chains the policy is the administrator's (seed 002).
	f = nfFinding(pol, pkt, nil, v, "tcp", "")
	if !strings.Contains(f.Advice, "iptables -I FORWARD -i flannel.1 -o cni0 -j ACCEPT") {
		t.Errorf("plain policy finding %+v", f)
	}
	// A rule nobody known owns keeps the delete hint.
	user := nfrules.Decision{Family: "ip", Source: "iptables-nft", Table: "filter", Chain: "FORWARD", Verdict: "DROP", Rule: "-A FORWARD -d 10.244.1.2/32 -j DROP"}
	if f := nfFinding(user, pkt, after, v, "tcp", ""); !strings.Contains(f.Advice, "iptables -D FORWARD -d 10.244.1.2/32 -j DROP") {
		t.Errorf("user rule finding %+v", f)
	}
	// DOCKER-USER is the administrator's chain.
	du := nfrules.Decision{Family: "ip", Source: "iptables-nft", Table: "filter", Chain: "DOCKER-USER", Verdict: "DROP", Rule: "-A DOCKER-USER -j DROP"}
	if f := nfFinding(du, pkt, after, v, "tcp", ""); !strings.Contains(f.Advice, "iptables -D DOCKER-USER -j DROP") {
		t.Errorf("DOCKER-USER finding %+v", f)
	}

	// Docker's chains in ip6tables (IPv6 filtering on): the IPv6 policy is
	// Docker's too, and only the ip6tables rules say so.
	pol6 := pol
	pol6.Family = "ip6"
	pkt6 := nfrules.Packet{Tuple: tcp("fd00:10:244::5", "fd00:10:244:1::2", 40000, 80), Iif: "flannel.1", Oif: "cni0"}
	if f := nfFinding(pol6, pkt6, after, v, "tcp", ""); strings.Contains(f.Advice, "DOCKER-USER") {
		t.Errorf("IPv6 policy with Docker's chains in iptables only: %+v", f)
	}
	after6 := &nfrules.Snapshot{NFT6: after.NFT}
	if f := nfFinding(pol6, pkt6, after6, v, "tcp", ""); !strings.Contains(f.Advice, "ip6tables -I DOCKER-USER -i flannel.1 -o cni0 -j ACCEPT") {
		t.Errorf("IPv6 docker policy finding %+v", f)
	}
}

func TestRuleComment(t *testing.T) {
	for rule, want := range map[string]string{
		`-A X -m comment --comment "a b" -j DROP`:        "a b",
		`-A X -m comment --comment plain -j DROP`:        "plain",
		`-A X -m comment --comment "say \"hi\"" -j DROP`: `say "hi"`,
		`-A X -j DROP`: "",
		`-A X -m comment --comment "" -m comment --comment`: "",
	} {
		if got := ruleComment(rule); got != want {
			t.Errorf("ruleComment(%q) = %q, want %q", rule, got, want)
		}
	}
}
