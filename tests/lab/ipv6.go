package lab

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Dual-stack addresses (Config.DualStack): unique local (fd00::/8) only.
// Node A's pods are fd00:10:244::/64, node B's fd00:10:244:1::/64 (like
// 10.244.0.0/24 and 10.244.1.0/24); Services take fd00:10:96::/112.
const (
	PodAIP6       = "fd00:10:244::5"
	PodBIP6       = "fd00:10:244:1::2"
	ClusterIP6    = "fd00:10:96::100"
	DNSClusterIP6 = "fd00:10:96::a"
	// UpstreamDNS6 is the nameserver of "pod-dns-upstream-v6": an IPv6
	// address no lab namespace routes.
	UpstreamDNS6  = "2001:db8:53::53"
	ServiceCIDR6  = "fd00:10:96::/112"
	ClusterCIDR6  = "fd00:10:244::/56"
	podGatewayA6  = "fd00:10:244::1"
	podGatewayB6  = "fd00:10:244:1::1"
	podSubnetA6   = "fd00:10:244::/64"
	podSubnetB6   = "fd00:10:244:1::/64"
	vtepAddrA6    = "fd00:10:244::"   // node A's VXLAN device (flannel's x::/128)
	vtepAddrB6    = "fd00:10:244:1::" // node B's VXLAN device
	ipv6PrefixLen = "64"

	// The nodes' IPv6 underlay addresses (documentation prefix) and the
	// router's on each link: dual-stack nodes with an IPv6 default route.
	NodeAIP6   = "2001:db8:a::10"
	NodeBIP6   = "2001:db8:b::20"
	RouterAIP6 = "2001:db8:a::1"
	RouterBIP6 = "2001:db8:b::1"

	// VXLANDevice6 is flannel's VXLAN device for an IPv6 underlay
	// (Config.IPv6Underlay), and FlannelMAC6A/B its MACs on the nodes.
	VXLANDevice6 = "flannel-v6.1"
	// CalicoVXLANDevice6 is Calico's VXLAN device for IPv6 (always over an
	// IPv6 underlay; the calico flavour with Config.IPv6Underlay).
	CalicoVXLANDevice6 = "vxlan-v6.calico"
	FlannelMAC6A       = "0a:58:fd:0a:00:00"
	FlannelMAC6B       = "0a:58:fd:0a:01:00"
	// VXLAN6MTU is flannel-v6.1's MTU: VXLAN over IPv6 takes 70 bytes of
	// the underlay's 1500 (IPv6 40 + UDP 8 + VXLAN 8 + Ethernet 14). The
	// pods keep PodMTU: flanneld (v0.26) writes FLANNEL_MTU as the
	// underlay's MTU minus IPv4's 50 bytes, dual-stack or not, so a
	// full-sized IPv6 pod packet does not fit flannel-v6.1.
	VXLAN6MTU = 1430
	// BogusVTEP6 is the IPv6 underlay address the "wrong-vtep-v6" fault
	// points node B's MAC at: documentation space the router does not route.
	BogusVTEP6 = "2001:db8:ff::20"
	// WrongSrcIP6 is node A's second IPv6 underlay address in the
	// "wrong-src-v6" fault.
	WrongSrcIP6 = "2001:db8:a::11"
)

// ip6tables is the IPv6 binary of the lab's iptables back end
// (ip6tables-nft or ip6tables-legacy).
func (l *Lab) ip6tablesBin() string {
	return strings.Replace(l.Iptables, "iptables", "ip6tables", 1)
}

// ip6t runs the lab's ip6tables in ns.
func (l *Lab) ip6t(ctx context.Context, ns string, args ...string) error {
	_, err := l.nsExec(ctx, ns, nil, append([]string{l.ip6tablesBin(), "-w", "10"}, args...)...)
	return err
}

// ipv6Sysctls are the IPv6 settings of a dual-stack lab namespace: IPv6
// on, no duplicate address detection (addresses usable at once), and
// forwarding on the nodes and the router.
func (l *Lab) ipv6Sysctls(name string) []string {
	s := []string{
		"net.ipv6.conf.all.disable_ipv6=0",
		"net.ipv6.conf.default.disable_ipv6=0",
		"net.ipv6.conf.all.accept_dad=0",
		"net.ipv6.conf.default.accept_dad=0",
	}
	if name == l.NodeA || name == l.NodeB || name == l.Router {
		s = append(s, "net.ipv6.conf.all.forwarding=1")
	}
	return s
}

// setupIPv6 gives a dual-stack lab its IPv6 half: node underlay addresses
// and default routes via the router, pod addresses and routes and the cni0
// gateways (setupIPv6Overlay adds the VXLAN side).
func (l *Lab) setupIPv6(ctx context.Context) error {
	type step struct {
		ns   string
		args []string
	}
	steps := []step{
		{l.Router, []string{"-6", "addr", "add", RouterAIP6 + "/" + ipv6PrefixLen, "dev", "ra", "nodad"}},
		{l.Router, []string{"-6", "addr", "add", RouterBIP6 + "/" + ipv6PrefixLen, "dev", "rb", "nodad"}},
		{l.NodeA, []string{"-6", "addr", "add", NodeAIP6 + "/" + ipv6PrefixLen, "dev", "eth0", "nodad"}},
		{l.NodeA, []string{"-6", "route", "add", "default", "via", RouterAIP6, "dev", "eth0"}},
		{l.NodeB, []string{"-6", "addr", "add", NodeBIP6 + "/" + ipv6PrefixLen, "dev", "eth0", "nodad"}},
		{l.NodeB, []string{"-6", "route", "add", "default", "via", RouterBIP6, "dev", "eth0"}},
		{l.NodeA, []string{"-6", "addr", "add", podGatewayA6 + "/" + ipv6PrefixLen, "dev", BridgeDevice, "nodad"}},
		{l.PodA, []string{"-6", "addr", "add", PodAIP6 + "/" + ipv6PrefixLen, "dev", "eth0", "nodad"}},
		{l.PodA, []string{"-6", "route", "add", "default", "via", podGatewayA6, "dev", "eth0"}},
		{l.NodeB, []string{"-6", "addr", "add", podGatewayB6 + "/" + ipv6PrefixLen, "dev", BridgeDevice, "nodad"}},
		{l.PodB, []string{"-6", "addr", "add", PodBIP6 + "/" + ipv6PrefixLen, "dev", "eth0", "nodad"}},
		{l.PodB, []string{"-6", "route", "add", "default", "via", podGatewayB6, "dev", "eth0"}},
	}
	for _, s := range steps {
		if err := l.ip(ctx, s.ns, s.args...); err != nil {
			return fmt.Errorf("lab: ipv6: %w", err)
		}
	}
	return nil
}

// setupIPv6Overlay writes what the flannel imitation's dual-stack needs
// on the VXLAN side: IPv6 on flannel.1 (over the IPv4 underlay), or
// flannel-v6.1 devices over the IPv6 underlay.
func (l *Lab) setupIPv6Overlay(ctx context.Context) error {
	if l.IPv6Underlay {
		for _, v := range []vtep{l.vtep6A(NodeAIP6), l.vtep6B()} {
			if err := l.setupVTEP(ctx, v); err != nil {
				return fmt.Errorf("lab: ipv6 underlay: %w", err)
			}
		}
		return nil
	}
	for _, v := range []struct{ ns, addr, peerCIDR, peerAddr, peerMAC string }{
		{l.NodeA, vtepAddrA6, podSubnetB6, vtepAddrB6, FlannelMACB},
		{l.NodeB, vtepAddrB6, podSubnetA6, vtepAddrA6, FlannelMACA},
	} {
		for _, args := range [][]string{
			{"-6", "addr", "add", v.addr + "/128", "dev", l.VXLANDevice, "nodad"},
			{"-6", "route", "add", v.peerCIDR, "via", v.peerAddr, "dev", l.VXLANDevice, "onlink"},
			{"-6", "neigh", "add", v.peerAddr, "lladdr", v.peerMAC, "dev", l.VXLANDevice, "nud", "permanent"},
		} {
			if err := l.ip(ctx, v.ns, args...); err != nil {
				return fmt.Errorf("lab: ipv6: %w", err)
			}
		}
	}
	return nil
}

// vtep6A is node A's flannel-v6.1 endpoint with outer source local
// (NodeAIP6, or WrongSrcIP6 for "wrong-src-v6").
func (l *Lab) vtep6A(local string) vtep {
	return vtep{ns: l.NodeA, dev: l.VXLANDevice6, mtu: VXLAN6MTU, mac: FlannelMAC6A, local: local, addr: vtepAddrA6,
		peerCIDR: podSubnetB6, peerAddr: vtepAddrB6, peerMAC: FlannelMAC6B, peerVTEP: NodeBIP6}
}

func (l *Lab) vtep6B() vtep {
	return vtep{ns: l.NodeB, dev: l.VXLANDevice6, mtu: VXLAN6MTU, mac: FlannelMAC6B, local: NodeBIP6, addr: vtepAddrB6,
		peerCIDR: podSubnetA6, peerAddr: vtepAddrA6, peerMAC: FlannelMAC6A, peerVTEP: NodeAIP6}
}

// ipv6Faults are the IPv6 forms of the faults (name + "-v6"): the same
// place and mechanism, on the IPv6 path of a dual-stack lab.
var ipv6Faults = map[string]fault{
	"forward-drop-v6": {
		desc: "node-b: ip6tables FORWARD policy DROP (Docker-style), so IPv6 flannel.1 -> cni0 traffic is dropped (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.ip6t(ctx, l.NodeB, "-P", "FORWARD", "DROP")
		},
	},
	"accept-queue-full-v6": {
		desc: "pod-b: the tcp/80 server is a listener on [" + PodBIP6 + "]:80 with backlog 0 that never accepts, its accept queue already holding a connection from pod-a: further IPv6 SYNs are dropped by the kernel (ListenOverflows) and never answered (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.fillAcceptQueue(ctx, PodBIP6, 80)
		},
	},
	"silent-dns-v6": {
		desc: "pod-b: a UDP socket on [" + PodBIP6 + "]:53 (behind the IPv6 DNS ClusterIP [" + DNSClusterIP6 + "]:53) reads queries and never answers, so IPv6 DNS lookups time out (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.ensureSilentUDP(PodBIP6, 53)
		},
		dns: true,
	},
	"udp-rcvbuf-full-v6": {
		desc: "pod-b: the DNS backend [" + PodBIP6 + "]:53 is a UDP socket with the smallest receive buffer (SO_RCVBUF 0) that never reads, already full: further IPv6 queries are dropped (SOCKET_RCVBUFF) (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.fillReceiveBuffer(ctx, PodBIP6, 53)
		},
		dns: true,
	},
	"pod-dns-upstream-v6": {
		desc: "pod-a: a process whose /etc/resolv.conf (its own mount namespace, like a container's) names nameserver " + UpstreamDNS6 + " instead of the cluster DNS: its IPv6 DNS queries bypass the cluster DNS and die at the router (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.SetPodDNS(ctx, UpstreamDNS6)
		},
	},
	"docker-forward-drop-v6": {
		desc: "node-b: Docker's filter rules in ip6tables, as dockerd writes them with IPv6 filtering on (\"ip6tables\": true, Docker 27's default): its chains and the IPv6 FORWARD policy DROP, so IPv6 flannel.1 -> cni0 traffic is dropped (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.dockerForwardDrop(ctx, l.NodeB, true)
		},
	},
	"reject-rst-v6": {
		desc: "node-b: ip6tables FORWARD rule rejects tcp to [" + PodBIP6 + "]:80 with a TCP reset (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.ip6t(ctx, l.NodeB, "-A", "FORWARD", "-d", PodBIP6+"/128", "-p", "tcp", "-m", "tcp", "--dport", "80",
				"-j", "REJECT", "--reject-with", "tcp-reset")
		},
	},
	"forward-drop-rule-nft-v6": {
		desc: "node-b: native nftables table inet sbt_fault drops forwarded tcp to [" + PodBIP6 + "]:80 (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			_, jerr := l.nsExec(ctx, l.NodeB, strings.NewReader(nftFaultJSON6), "nft", "-j", "-f", "-")
			if jerr == nil {
				return nil
			}
			if _, err := l.nsExec(ctx, l.NodeB, strings.NewReader(nftFaultTable6), "nft", "-f", "-"); err != nil {
				return errors.Join(jerr, err)
			}
			return nil
		},
	},
	"no-dnat-v6": {
		desc: "node-a: kube-proxy's ip6tables rules for [" + ClusterIP6 + "]:80 removed (KUBE-SERVICES jump deleted, KUBE-SEP flushed); packets leave unNATed and die at the router (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			s := l.WebService6
			if err := l.ip6t(ctx, l.NodeA, append([]string{"-t", "nat", "-D", "KUBE-SERVICES"}, serviceJump(s)...)...); err != nil {
				return err
			}
			return l.ip6t(ctx, l.NodeA, "-t", "nat", "-F", s.SepChain)
		},
	},
	"service-no-endpoints-v6": {
		desc: "node-a: the IPv6 web Service (default/web:http) lost its last ready endpoint, rendered as kube-proxy's IPv6 iptables proxier does: no ip6tables DNAT, and ip6tables filter KUBE-SERVICES rejects tcp to [" + ClusterIP6 + "]:80 (comment \"default/web:http has no endpoints\", ICMPv6 port unreachable) (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.serviceNoEndpointsIptables(ctx, l.WebService6)
		},
	},
	"service-no-endpoints-nft-v6": {
		desc: "node-a: the IPv6 web Service (default/web:http) lost its last ready endpoint, rendered as kube-proxy's nftables mode does for IPv6: no ip6tables DNAT, and table ip6 kube-proxy's no-endpoint-services verdict map sends new connections to [" + ClusterIP6 + "]:80/tcp to reject-chain (ICMPv6 port unreachable) (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.serviceNoEndpointsNft(ctx, l.WebService6)
		},
	},
	"listener-loopback-v6": {
		desc: "pod-b: the tcp/80 server listens on [::1]:80 only (instead of [::]:80, which takes " + PodBIP6 + " and 10.244.1.2), so SYNs to the pod's IPv6 address are answered with RST (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			if err := l.stopPodTCPListener(80); err != nil {
				return err
			}
			// a key of its own: listener-loopback's 127.0.0.1:80 may be
			// there too; listen(2) has returned: bound and listening
			return l.startTCPEchoAs(serverKey("tcp", 80)+" [::1]", "::1", 80)
		},
	},
	"rp-filter-v6": {
		desc: "node-b: reverse-path filtering for IPv6 as firewalld writes it (ip6tables -t raw PREROUTING -m rpfilter --invert -j DROP: IPv6 has no rp_filter sysctl) and the route to " + podSubnetA6 + " replaced by one via eth0 (" + RouterBIP6 + "), so IPv6 packets from pod-a arriving on flannel.1 fail the reverse path check (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			if err := l.ip6t(ctx, l.NodeB, "-t", "raw", "-A", "PREROUTING", "-m", "rpfilter", "--invert", "-j", "DROP"); err != nil {
				return err
			}
			return l.ip(ctx, l.NodeB, "-6", "route", "replace", podSubnetA6, "via", RouterBIP6, "dev", "eth0")
		},
	},
	"neigh-missing-v6": {
		desc: "node-a: the permanent neighbour entry for node-b's IPv6 VTEP address (" + vtepAddrB6 + " on the VXLAN device) is gone: neighbour discovery for it gets no answer and IPv6 packets to pod-b are dropped after about 3 s (NEIGH_FAILED) (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.ip(ctx, l.NodeA, "-6", "neigh", "del", vtepAddrB6, "dev", l.VXLANDevice6)
		},
	},
	"no-route-v6": {
		desc: "node-a: route " + podSubnetB6 + " via flannel.1 deleted; IPv6 overlay packets follow the default route and die at the router (dual-stack lab)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.ip(ctx, l.NodeA, "-6", "route", "del", podSubnetB6, "via", vtepAddrB6, "dev", l.VXLANDevice6)
		},
	},
}

// ipv6UnderlayFaults are the faults of an IPv6 underlay
// (Config.IPv6Underlay): the IPv4 underlay faults in IPv6 form.
var ipv6UnderlayFaults = map[string]fault{
	"wrong-vtep-v6": {
		desc: "node-a: the IPv6 VXLAN device's (" + VXLANDevice6 + ", " + CalicoVXLANDevice6 + ") fdb entry for node-b's MAC points at " + BogusVTEP6 + ", which the router cannot route (IPv6 underlay lab)",
		apply: func(ctx context.Context, l *Lab) error {
			if err := l.bridgeCmd(ctx, l.NodeA, "fdb", "del", FlannelMAC6B, "dev", l.VXLANDevice6, "dst", NodeBIP6); err != nil {
				return err
			}
			return l.bridgeCmd(ctx, l.NodeA, "fdb", "append", FlannelMAC6B, "dev", l.VXLANDevice6, "dst", BogusVTEP6)
		},
	},
	"wrong-src-v6": {
		desc: "node-a: second eth0 address " + WrongSrcIP6 + "/64 and the IPv6 VXLAN device re-created with local " + WrongSrcIP6 + "; the router's anti-spoofing rule (ip6tables FORWARD -s " + WrongSrcIP6 + " DROP) drops the outer packet (IPv6 underlay lab)",
		apply: func(ctx context.Context, l *Lab) error {
			if err := l.ip6t(ctx, l.Router, "-A", "FORWARD", "-s", WrongSrcIP6+"/128", "-j", "DROP"); err != nil {
				return err
			}
			if err := l.ip(ctx, l.NodeA, "-6", "addr", "add", WrongSrcIP6+"/"+ipv6PrefixLen, "dev", "eth0", "nodad"); err != nil {
				return err
			}
			if err := l.ip(ctx, l.NodeA, "link", "del", "dev", l.VXLANDevice6); err != nil {
				return err
			}
			return l.setupVTEP(ctx, l.vtep6A(WrongSrcIP6))
		},
	},
}

// nftFaultJSON6 is forward-drop-rule-nft's table for the IPv6 path (JSON,
// for the reason nftFaultJSON is).
const nftFaultJSON6 = `{"nftables": [
  {"table": {"family": "inet", "name": "sbt_fault"}},
  {"chain": {"family": "inet", "table": "sbt_fault", "name": "fwd",
             "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
  {"rule": {"family": "inet", "table": "sbt_fault", "chain": "fwd", "expr": [
    {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "` + PodBIP6 + `"}},
    {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}},
    {"drop": null}]}}
]}
`

// nftFaultTable6 is the same in nft text syntax (nft without JSON).
const nftFaultTable6 = `table inet sbt_fault {
	chain fwd {
		type filter hook forward priority 0; policy accept;
		ip6 daddr ` + PodBIP6 + ` tcp dport 80 drop
	}
}
`

// IPv6FaultNames returns the names of the IPv6 forms of the faults
// (dual-stack labs only; the underlay ones need Config.IPv6Underlay),
// sorted. Faults and FaultNames list the others.
func IPv6FaultNames() []string {
	names := make([]string, 0, len(ipv6Faults))
	for name := range ipv6Faults {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// IPv6UnderlayFault reports whether the named fault needs a lab with an
// IPv6 underlay (Config.IPv6Underlay).
func IPv6UnderlayFault(name string) bool {
	_, ok := ipv6UnderlayFaults[name]
	return ok
}

// IPv6FaultDescription describes one of IPv6FaultNames.
func IPv6FaultDescription(name string) string { return ipv6Faults[name].desc }

func init() {
	for name, f := range ipv6UnderlayFaults {
		apply := f.apply
		f.apply = func(ctx context.Context, l *Lab) error {
			if !l.IPv6Underlay {
				return fmt.Errorf("needs a lab with an IPv6 underlay (Config.IPv6Underlay)")
			}
			if l.Flannel == FlannelReal {
				// the real flanneld's MACs and device are its own
				return fmt.Errorf("works on the flannel imitation only (with the real flanneld: Config.NodeBPublicIPv6 for a wrong VTEP)")
			}
			return apply(ctx, l)
		}
		ipv6Faults[name] = f
	}
	for name, f := range ipv6Faults {
		apply := f.apply
		f.apply = func(ctx context.Context, l *Lab) error {
			if !l.DualStack {
				return fmt.Errorf("needs a dual-stack lab (Config.DualStack)")
			}
			return apply(ctx, l)
		}
		ipv6Faults[name] = f
	}
}
