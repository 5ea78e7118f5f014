package nfrules

import (
	"net/netip"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// kubeProxyNoEndpointsJSON is `nft -j list ruleset` (nft 1.0.6) of the part
// of kube-proxy's nftables table that refuses a Service port without
// endpoints, as the lab's "service-no-endpoints-nft" fault writes it.
const kubeProxyNoEndpointsJSON = `{"nftables": [
{"table": {"family": "ip", "name": "kube-proxy", "handle": 3}},
{"set": {"family": "ip", "name": "cluster-ips", "table": "kube-proxy", "type": "ipv4_addr", "handle": 7, "comment": "Active ClusterIPs", "elem": ["10.96.0.10", "10.96.0.100"]}},
{"map": {"family": "ip", "name": "no-endpoint-services", "table": "kube-proxy", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 8, "map": "verdict", "elem": [[{"elem": {"val": {"concat": ["10.96.0.100", "tcp", 80]}, "comment": "default/web:http"}}, {"goto": {"target": "reject-chain"}}], [{"elem": {"val": {"concat": ["192.0.2.99", "tcp", 443]}, "comment": "ns2/svc2:p443"}}, {"drop": null}]]}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "filter-forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "service-endpoints-check", "handle": 4}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "cluster-ips-check", "handle": 5}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "reject-chain", "handle": 6}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "filter-forward", "handle": 9, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"jump": {"target": "service-endpoints-check"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "filter-forward", "handle": 10, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"jump": {"target": "cluster-ips-check"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "service-endpoints-check", "handle": 14, "expr": [{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@no-endpoint-services"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "cluster-ips-check", "handle": 15, "comment": "Reject traffic to invalid ports of ClusterIPs", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@cluster-ips"}}, {"reject": {"type": "icmp", "expr": "port-unreachable"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "cluster-ips-check", "handle": 16, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.96.0.0", "len": 12}}}}, {"drop": null}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "reject-chain", "handle": 17, "expr": [{"reject": {"type": "icmp", "expr": "port-unreachable"}}]}}
]}`

// vmapCase is a packet through kube-proxy's nftables table and the
// decision it must meet.
type vmapCase struct {
	name                          string
	p                             Packet
	ok                            bool
	chain, verdict, mapName, comm string
}

// checkVerdictMap parses a kube-proxy table (of family) and checks each
// case's forward-hook decision.
func checkVerdictMap(t *testing.T, table, family string, cases []vmapCase) {
	t.Helper()
	rs, err := ParseNftJSON([]byte(table), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		d, ok := rs.DropAt("forward", -1000, 1000, c.p, nil)
		if ok != c.ok || d.Chain != c.chain || d.Verdict != c.verdict || d.Map != c.mapName || d.Comment != c.comm {
			t.Errorf("%s: %+v %v, want chain %q verdict %q map %q comment %q", c.name, d, ok, c.chain, c.verdict, c.mapName, c.comm)
		}
		if ok && d.Family != family {
			t.Errorf("%s: family %q, want %s", c.name, d.Family, family)
		}
	}
}

// vmapPacket is a packet from src to dst:dport in conntrack state ct.
func vmapPacket(src, dst string, proto uint8, dport uint16, ct string) Packet {
	return Packet{Tuple: journey.Tuple{Proto: proto, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Sport: 40000, Dport: dport}, CT: ct}
}

func TestKubeProxyVerdictMap(t *testing.T) {
	pkt := func(dst string, proto uint8, dport uint16, ct string) Packet {
		return vmapPacket("10.244.0.5", dst, proto, dport, ct)
	}
	checkVerdictMap(t, kubeProxyNoEndpointsJSON, "ip", []vmapCase{
		{"no endpoints", pkt("10.96.0.100", journey.ProtoTCP, 80, "new"), true, "reject-chain", "REJECT", "no-endpoint-services", "default/web:http"},
		{"established: not checked", pkt("10.96.0.100", journey.ProtoTCP, 80, "established"), false, "", "", "", ""},
		{"ct unknown: not decided", pkt("10.96.0.100", journey.ProtoTCP, 80, ""), false, "", "", "", ""},
		{"other port of a ClusterIP", pkt("10.96.0.100", journey.ProtoTCP, 81, "new"), true, "cluster-ips-check", "REJECT", "", ""},
		{"unallocated ClusterIP", pkt("10.96.7.7", journey.ProtoTCP, 80, "new"), true, "cluster-ips-check", "DROP", "", ""},
		{"udp to the same port", pkt("10.96.0.100", journey.ProtoUDP, 80, "new"), true, "cluster-ips-check", "REJECT", "", ""},
		{"pod address", pkt("10.244.1.2", journey.ProtoTCP, 80, "new"), false, "", "", "", ""},
		{"no local endpoints: drop", pkt("192.0.2.99", journey.ProtoTCP, 443, "new"), true, "service-endpoints-check", "DROP", "no-endpoint-services", "ns2/svc2:p443"},
	})
}

// kubeProxyNoEndpointsJSON6 is the same in kube-proxy's IPv6 table (table
// ip6 kube-proxy), as the lab's "service-no-endpoints-nft-v6" fault writes
// it with a second element added by hand (nft 1.0.6).
const kubeProxyNoEndpointsJSON6 = `{"nftables": [
{"table": {"family": "ip6", "name": "kube-proxy", "handle": 3}},
{"set": {"family": "ip6", "name": "cluster-ips", "table": "kube-proxy", "type": "ipv6_addr", "handle": 7, "comment": "Active ClusterIPs", "elem": ["fd00:10:96::100"]}},
{"map": {"family": "ip6", "name": "no-endpoint-services", "table": "kube-proxy", "type": ["ipv6_addr", "inet_proto", "inet_service"], "handle": 8, "comment": "vmap to drop or reject packets to services with no endpoints", "map": "verdict", "elem": [[{"elem": {"val": {"concat": ["fd00:10:96::100", "tcp", 80]}, "comment": "default/web:http"}}, {"goto": {"target": "reject-chain"}}], [{"elem": {"val": {"concat": ["2001:db8::99", "tcp", 443]}, "comment": "ns2/svc2:p443"}}, {"drop": null}]]}},
{"chain": {"family": "ip6", "table": "kube-proxy", "name": "filter-forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
{"chain": {"family": "ip6", "table": "kube-proxy", "name": "filter-input", "handle": 2, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
{"chain": {"family": "ip6", "table": "kube-proxy", "name": "filter-output", "handle": 3, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}},
{"chain": {"family": "ip6", "table": "kube-proxy", "name": "service-endpoints-check", "handle": 4}},
{"chain": {"family": "ip6", "table": "kube-proxy", "name": "cluster-ips-check", "handle": 5}},
{"chain": {"family": "ip6", "table": "kube-proxy", "name": "reject-chain", "handle": 6}},
{"rule": {"family": "ip6", "table": "kube-proxy", "chain": "filter-forward", "handle": 9, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"jump": {"target": "service-endpoints-check"}}]}},
{"rule": {"family": "ip6", "table": "kube-proxy", "chain": "filter-forward", "handle": 10, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"jump": {"target": "cluster-ips-check"}}]}},
{"rule": {"family": "ip6", "table": "kube-proxy", "chain": "filter-input", "handle": 11, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"jump": {"target": "service-endpoints-check"}}]}},
{"rule": {"family": "ip6", "table": "kube-proxy", "chain": "filter-output", "handle": 12, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"jump": {"target": "service-endpoints-check"}}]}},
{"rule": {"family": "ip6", "table": "kube-proxy", "chain": "filter-output", "handle": 13, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"jump": {"target": "cluster-ips-check"}}]}},
{"rule": {"family": "ip6", "table": "kube-proxy", "chain": "service-endpoints-check", "handle": 14, "expr": [{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip6", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@no-endpoint-services"}}]}},
{"rule": {"family": "ip6", "table": "kube-proxy", "chain": "cluster-ips-check", "handle": 15, "comment": "Reject traffic to invalid ports of ClusterIPs", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "@cluster-ips"}}, {"reject": {"type": "icmpv6", "expr": "port-unreachable"}}]}},
{"rule": {"family": "ip6", "table": "kube-proxy", "chain": "cluster-ips-check", "handle": 16, "comment": "Drop traffic to unallocated ClusterIPs", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "fd00:10:96::", "len": 112}}}}, {"drop": null}]}},
{"rule": {"family": "ip6", "table": "kube-proxy", "chain": "reject-chain", "handle": 17, "expr": [{"reject": {"type": "icmpv6", "expr": "port-unreachable"}}]}}
]}`

func TestKubeProxyVerdictMapIPv6(t *testing.T) {
	pkt := func(dst string, proto uint8, dport uint16, ct string) Packet {
		return vmapPacket("fd00:10:244::5", dst, proto, dport, ct)
	}
	checkVerdictMap(t, kubeProxyNoEndpointsJSON6, "ip6", []vmapCase{
		{"no endpoints", pkt("fd00:10:96::100", journey.ProtoTCP, 80, "new"), true, "reject-chain", "REJECT", "no-endpoint-services", "default/web:http"},
		{"established: not checked", pkt("fd00:10:96::100", journey.ProtoTCP, 80, "established"), false, "", "", "", ""},
		{"other port of a ClusterIP", pkt("fd00:10:96::100", journey.ProtoTCP, 81, "new"), true, "cluster-ips-check", "REJECT", "", ""},
		{"unallocated ClusterIP", pkt("fd00:10:96::7", journey.ProtoTCP, 80, "new"), true, "cluster-ips-check", "DROP", "", ""},
		{"pod address", pkt("fd00:10:244:1::2", journey.ProtoTCP, 80, "new"), false, "", "", "", ""},
		{"no local endpoints: drop", pkt("2001:db8::99", journey.ProtoTCP, 443, "new"), true, "service-endpoints-check", "DROP", "no-endpoint-services", "ns2/svc2:p443"},
		// an IPv4 packet never meets table ip6 kube-proxy
		{"IPv4 packet", vmapPacket("10.244.0.5", "10.96.0.100", journey.ProtoTCP, 80, "new"), false, "", "", "", ""},
	})
}
