package lab

import (
	"context"
	"fmt"
	"strings"
)

// Dual-stack addresses (Config.DualStack): unique local (fd00::/8) only.
// Node A's pods are fd00:10:244::/64, node B's fd00:10:244:1::/64 (like
// 10.244.0.0/24 and 10.244.1.0/24); Services take fd00:10:96::/112.
const (
	PodAIP6       = "fd00:10:244::5"
	PodBIP6       = "fd00:10:244:1::2"
	ClusterIP6    = "fd00:10:96::100"
	ServiceCIDR6  = "fd00:10:96::/112"
	ClusterCIDR6  = "fd00:10:244::/56"
	podGatewayA6  = "fd00:10:244::1"
	podGatewayB6  = "fd00:10:244:1::1"
	podSubnetA6   = "fd00:10:244::/64"
	podSubnetB6   = "fd00:10:244:1::/64"
	vtepAddrA6    = "fd00:10:244::"   // node A's VXLAN device (flannel's x::/128)
	vtepAddrB6    = "fd00:10:244:1::" // node B's VXLAN device
	ipv6PrefixLen = "64"
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

// setupIPv6 gives a dual-stack lab its IPv6 half: pod addresses and
// routes, the cni0 gateways, and IPv6 over the IPv4 VXLAN device (flannel
// dual-stack: inner IPv6, outer IPv4), with the static state flanneld
// would write.
func (l *Lab) setupIPv6(ctx context.Context) error {
	type step struct {
		ns   string
		args []string
	}
	steps := []step{
		{l.NodeA, []string{"-6", "addr", "add", podGatewayA6 + "/" + ipv6PrefixLen, "dev", BridgeDevice, "nodad"}},
		{l.PodA, []string{"-6", "addr", "add", PodAIP6 + "/" + ipv6PrefixLen, "dev", "eth0", "nodad"}},
		{l.PodA, []string{"-6", "route", "add", "default", "via", podGatewayA6, "dev", "eth0"}},
		{l.NodeB, []string{"-6", "addr", "add", podGatewayB6 + "/" + ipv6PrefixLen, "dev", BridgeDevice, "nodad"}},
		{l.PodB, []string{"-6", "addr", "add", PodBIP6 + "/" + ipv6PrefixLen, "dev", "eth0", "nodad"}},
		{l.PodB, []string{"-6", "route", "add", "default", "via", podGatewayB6, "dev", "eth0"}},
	}
	for _, v := range []struct{ ns, addr, peerCIDR, peerAddr, peerMAC string }{
		{l.NodeA, vtepAddrA6, podSubnetB6, vtepAddrB6, FlannelMACB},
		{l.NodeB, vtepAddrB6, podSubnetA6, vtepAddrA6, FlannelMACA},
	} {
		steps = append(steps,
			step{v.ns, []string{"-6", "addr", "add", v.addr + "/128", "dev", l.VXLANDevice, "nodad"}},
			step{v.ns, []string{"-6", "route", "add", v.peerCIDR, "via", v.peerAddr, "dev", l.VXLANDevice, "onlink"}},
			step{v.ns, []string{"-6", "neigh", "add", v.peerAddr, "lladdr", v.peerMAC, "dev", l.VXLANDevice, "nud", "permanent"}},
		)
	}
	for _, s := range steps {
		if err := l.ip(ctx, s.ns, s.args...); err != nil {
			return fmt.Errorf("lab: ipv6: %w", err)
		}
	}
	return nil
}
