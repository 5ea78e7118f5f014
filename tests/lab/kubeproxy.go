package lab

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net"
	"strings"
)

// chainHash returns 16 characters of the base32 encoded SHA-256 of parts,
// the way kube-proxy derives its per-service and per-endpoint chain names
// (the characters are A-Z and 2-7).
func chainHash(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "")))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}

func newService(name, proto, clusterIP string, port int, endpoint string) Service {
	return Service{
		Name:      name,
		Protocol:  proto,
		ClusterIP: clusterIP,
		Port:      port,
		Endpoint:  endpoint,
		SvcChain:  "KUBE-SVC-" + chainHash(name, proto),
		SepChain:  "KUBE-SEP-" + chainHash(name, proto, endpoint),
	}
}

// clusterCIDR is the pod network; traffic to a service from outside it is
// marked for masquerading, like kube-proxy does with --cluster-cidr.
const clusterCIDR = "10.244.0.0/16"

// serviceJump is the KUBE-SERVICES rule (without "-A KUBE-SERVICES") that
// sends traffic for s to its KUBE-SVC chain.
func serviceJump(s Service) []string {
	return []string{"-d", hostPrefix(s.ClusterIP), "-p", s.Protocol,
		"-m", "comment", "--comment", s.Name + " cluster IP",
		"-m", s.Protocol, "--dport", fmt.Sprint(s.Port), "-j", s.SvcChain}
}

// dnatRule is the KUBE-SEP rule that rewrites the destination to the endpoint.
func dnatRule(s Service) []string {
	return []string{"-p", s.Protocol, "-m", s.Protocol, "-j", "DNAT", "--to-destination", s.Endpoint}
}

// hostPrefix is ip as a one-address prefix: 10.96.0.100/32, fd00::1/128.
func hostPrefix(ip string) string {
	if isIPv6(ip) {
		return ip + "/128"
	}
	return ip + "/32"
}

// kubeProxyRules returns the IPv4 nat table rules as (chain, rule args) pairs.
func (l *Lab) kubeProxyRules() (chains []string, rules [][]string) {
	return kubeProxyRulesFor(l.Services(), clusterCIDR)
}

// kubeProxyRulesFor returns the nat table rules of services of one IP
// version, podCIDR being that version's pod network.
func kubeProxyRulesFor(services []Service, podCIDR string) (chains []string, rules [][]string) {
	chains = []string{"KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"}
	portals := []string{"-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}
	rules = [][]string{
		append([]string{"PREROUTING"}, portals...),
		append([]string{"OUTPUT"}, portals...),
		{"POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"},
		{"KUBE-MARK-MASQ", "-j", "MARK", "--or-mark", KubeMarkMasq},
		{"KUBE-POSTROUTING", "-m", "mark", "!", "--mark", KubeMarkMasq + "/" + KubeMarkMasq, "-j", "RETURN"},
		{"KUBE-POSTROUTING", "-j", "MARK", "--xor-mark", KubeMarkMasq},
		{"KUBE-POSTROUTING", "-m", "comment", "--comment", "kubernetes service traffic requiring SNAT", "-j", "MASQUERADE"},
	}
	for _, s := range services {
		chains = append(chains, s.SvcChain, s.SepChain)
		epIP, _, _ := net.SplitHostPort(s.Endpoint)
		rules = append(rules,
			append([]string{"KUBE-SERVICES"}, serviceJump(s)...),
			[]string{s.SvcChain, "!", "-s", podCIDR, "-d", hostPrefix(s.ClusterIP), "-p", s.Protocol,
				"-m", "comment", "--comment", s.Name + " cluster IP",
				"-m", s.Protocol, "--dport", fmt.Sprint(s.Port), "-j", "KUBE-MARK-MASQ"},
			[]string{s.SvcChain, "-m", "comment", "--comment", s.Name + " -> " + s.Endpoint, "-j", s.SepChain},
			[]string{s.SepChain, "-s", hostPrefix(epIP), "-m", "comment", "--comment", s.Name, "-j", "KUBE-MARK-MASQ"},
			append([]string{s.SepChain}, dnatRule(s)...),
		)
	}
	return chains, rules
}

func (l *Lab) programKubeProxy(ctx context.Context) error {
	chains, rules := l.kubeProxyRules()
	if err := programNAT(ctx, l.ipt, l.NodeA, chains, rules); err != nil {
		return err
	}
	if !l.DualStack {
		return nil
	}
	// kube-proxy's IPv6 proxier: the same chains in ip6tables
	chains, rules = kubeProxyRulesFor(l.Services6(), ClusterCIDR6)
	if err := programNAT(ctx, l.ip6t, l.NodeA, chains, rules); err != nil {
		return fmt.Errorf("%w (ip6tables)", err)
	}
	return nil
}

// programNAT creates chains and appends rules to the nat table with ipt.
func programNAT(ctx context.Context, ipt func(context.Context, string, ...string) error, ns string, chains []string, rules [][]string) error {
	for _, c := range chains {
		if err := ipt(ctx, ns, "-t", "nat", "-N", c); err != nil {
			return fmt.Errorf("lab: kube-proxy rules: %w", err)
		}
	}
	for _, r := range rules {
		if err := ipt(ctx, ns, append([]string{"-t", "nat", "-A"}, r...)...); err != nil {
			return fmt.Errorf("lab: kube-proxy rules: %w", err)
		}
	}
	return nil
}

// noEndpointsComment is the comment kube-proxy gives the rules that refuse
// traffic to a Service port without ready endpoints.
func noEndpointsComment(s Service) string { return s.Name + " has no endpoints" }

// noEndpointsRule is the filter KUBE-SERVICES rule (without "-A
// KUBE-SERVICES") kube-proxy's iptables mode writes for a ClusterIP port
// whose Service has no ready endpoint: the packet is answered with ICMP
// (ICMPv6 for an IPv6 ClusterIP) port unreachable instead of being
// DNAT'd. kube-proxy writes "-j REJECT" alone; the option here is the
// REJECT target's default for that IP version, as iptables-save prints it.
func noEndpointsRule(s Service) []string {
	reject := "icmp-port-unreachable"
	if isIPv6(s.ClusterIP) {
		reject = "icmp6-port-unreachable"
	}
	return []string{"-d", hostPrefix(s.ClusterIP), "-p", s.Protocol,
		"-m", "comment", "--comment", noEndpointsComment(s),
		"-m", s.Protocol, "--dport", fmt.Sprint(s.Port), "-j", "REJECT", "--reject-with", reject}
}

// isIPv6 tells an IPv6 address from an IPv4 one.
func isIPv6(ip string) bool { return strings.Contains(ip, ":") }

// iptFor is the lab's iptables (ip6tables for an IPv6 Service) for s.
func (l *Lab) iptFor(s Service) func(context.Context, string, ...string) error {
	if isIPv6(s.ClusterIP) {
		return l.ip6t
	}
	return l.ipt
}

// dropServiceNAT removes s's nat rules the way kube-proxy does when its
// last endpoint goes away: the KUBE-SERVICES jump, and the KUBE-SVC and
// KUBE-SEP chains (ip6tables' for an IPv6 Service).
func (l *Lab) dropServiceNAT(ctx context.Context, s Service) error {
	ipt := l.iptFor(s)
	if err := ipt(ctx, l.NodeA, append([]string{"-t", "nat", "-D", "KUBE-SERVICES"}, serviceJump(s)...)...); err != nil {
		return err
	}
	for _, op := range []string{"-F", "-X"} {
		for _, c := range []string{s.SvcChain, s.SepChain} {
			if err := ipt(ctx, l.NodeA, "-t", "nat", op, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// serviceNoEndpointsIptables renders s as kube-proxy's iptables mode does
// once the Service has no ready endpoint: no DNAT, and in the filter table
// the KUBE-SERVICES / KUBE-EXTERNAL-SERVICES chains (jumped to for new
// connections from INPUT, FORWARD and OUTPUT) with a REJECT for the
// ClusterIP port. A ClusterIP Service has no external rule. An IPv6
// Service gets the same from ip6tables, as kube-proxy's IPv6 proxier
// writes it.
func (l *Lab) serviceNoEndpointsIptables(ctx context.Context, s Service) error {
	if err := l.dropServiceNAT(ctx, s); err != nil {
		return err
	}
	const (
		portals    = "kubernetes service portals"
		extPortals = "kubernetes externally-visible service portals"
	)
	newConn := []string{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment"}
	cmds := [][]string{
		{"-N", "KUBE-SERVICES"},
		{"-N", "KUBE-EXTERNAL-SERVICES"},
		append(append([]string{"-A", "INPUT"}, newConn...), extPortals, "-j", "KUBE-EXTERNAL-SERVICES"),
		append(append([]string{"-A", "FORWARD"}, newConn...), portals, "-j", "KUBE-SERVICES"),
		append(append([]string{"-A", "FORWARD"}, newConn...), extPortals, "-j", "KUBE-EXTERNAL-SERVICES"),
		append(append([]string{"-A", "OUTPUT"}, newConn...), portals, "-j", "KUBE-SERVICES"),
		append([]string{"-A", "KUBE-SERVICES"}, noEndpointsRule(s)...),
	}
	ipt := l.iptFor(s)
	for _, c := range cmds {
		if err := ipt(ctx, l.NodeA, append([]string{"-t", "filter"}, c...)...); err != nil {
			return fmt.Errorf("kube-proxy filter rules: %w", err)
		}
	}
	return nil
}

// kubeProxyNftNoEndpoints is the part of kube-proxy's nftables mode (table
// ip kube-proxy, or ip6 kube-proxy for the IPv6 proxier: same chains, sets
// and maps, IPv6 address types and matches) that refuses a Service port
// without ready endpoints, for the lab's Services of one IP version with
// one of them listed in the no-endpoint-services verdict map. Names,
// priorities, comments and the map's shape are kube-proxy's
// (pkg/proxy/nftables); the nat part stays in the lab's iptables
// imitation. The arguments are those of nftNoEndpointsArgs.
const kubeProxyNftNoEndpoints = `table %[1]s kube-proxy {
	comment "rules for kube-proxy"
	set cluster-ips {
		type %[2]s
		comment "Active ClusterIPs"
		elements = { %[3]s }
	}
	map no-endpoint-services {
		type %[2]s . inet_proto . inet_service : verdict
		comment "vmap to drop or reject packets to services with no endpoints"
		elements = { %[4]s . %[5]s . %[6]d comment "%[7]s" : goto reject-chain }
	}
	chain filter-forward {
		type filter hook forward priority 0; policy accept;
		ct state new jump service-endpoints-check
		ct state new jump cluster-ips-check
	}
	chain filter-input {
		type filter hook input priority 0; policy accept;
		ct state new jump service-endpoints-check
	}
	chain filter-output {
		type filter hook output priority 0; policy accept;
		ct state new jump service-endpoints-check
		ct state new jump cluster-ips-check
	}
	chain service-endpoints-check {
		%[1]s daddr . meta l4proto . th dport vmap @no-endpoint-services
	}
	chain cluster-ips-check {
		%[1]s daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
		%[1]s daddr { %[8]s } drop comment "Drop traffic to unallocated ClusterIPs"
	}
	chain reject-chain {
		comment "helper for @no-endpoint-services / @no-endpoint-nodeports"
		reject
	}
}
`

// serviceCIDR is the lab's IPv4 Service range (kube-apiserver's default).
const serviceCIDR = "10.96.0.0/12"

// nftNoEndpointsTable is kubeProxyNftNoEndpoints for s: the table family
// (ip or ip6, also the address match), the address type, s's version's
// ClusterIPs and Service range, and s in the verdict map.
func (l *Lab) nftNoEndpointsTable(s Service) string {
	family, addrType, cidr, services := "ip", "ipv4_addr", serviceCIDR, l.Services()
	if isIPv6(s.ClusterIP) {
		family, addrType, cidr, services = "ip6", "ipv6_addr", ServiceCIDR6, l.Services6()
	}
	ips := make([]string, 0, len(services))
	for _, o := range services {
		ips = append(ips, o.ClusterIP)
	}
	return fmt.Sprintf(kubeProxyNftNoEndpoints, family, addrType, strings.Join(ips, ", "),
		s.ClusterIP, s.Protocol, s.Port, s.Name, cidr)
}

// serviceNoEndpointsNft renders s as kube-proxy's nftables mode does once
// the Service has no ready endpoint: no DNAT, and s's ClusterIP port in
// the no-endpoint-services verdict map of table ip (ip6) kube-proxy, which
// sends new connections to reject-chain (ICMP or ICMPv6 port unreachable).
func (l *Lab) serviceNoEndpointsNft(ctx context.Context, s Service) error {
	if err := l.dropServiceNAT(ctx, s); err != nil {
		return err
	}
	if _, err := l.nsExec(ctx, l.NodeA, strings.NewReader(l.nftNoEndpointsTable(s)), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("kube-proxy nftables table: %w", err)
	}
	return nil
}
