package lab

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// FaultInfo names and describes a fault that ApplyFault can inject.
type FaultInfo struct {
	Name        string
	Description string
}

type fault struct {
	desc  string
	apply func(ctx context.Context, l *Lab) error
	// dns marks faults that show on the DNS service rather than on the
	// web service (see ProbeService).
	dns bool
}

// nftFaultJSON is the native nftables ruleset of "forward-drop-rule-nft" in
// libnftables JSON form. It is loaded as JSON because older nft releases
// (e.g. 1.0.6) reject "fwd" as a chain name in the text syntax, where it is
// a keyword.
const nftFaultJSON = `{"nftables": [
  {"table": {"family": "inet", "name": "sbt_fault"}},
  {"chain": {"family": "inet", "table": "sbt_fault", "name": "fwd",
             "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
  {"rule": {"family": "inet", "table": "sbt_fault", "chain": "fwd", "expr": [
    {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.244.1.2"}},
    {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}},
    {"drop": null}]}}
]}
`

// nftFaultTable is the same ruleset in nft text syntax, used when nft has
// no JSON support.
const nftFaultTable = `table inet sbt_fault {
	chain fwd {
		type filter hook forward priority 0; policy accept;
		ip daddr 10.244.1.2 tcp dport 80 drop
	}
}
`

var faults = map[string]fault{
	"none": {
		desc:  "no fault: the healthy lab",
		apply: func(context.Context, *Lab) error { return nil },
	},
	"forward-drop": {
		desc: "node-b: iptables FORWARD policy DROP (Docker-style), so flannel.1 -> cni0 traffic is dropped",
		apply: func(ctx context.Context, l *Lab) error {
			return l.ipt(ctx, l.NodeB, "-P", "FORWARD", "DROP")
		},
	},
	"docker-forward-drop": {
		desc: "node-b: Docker's filter rules as dockerd writes them when it starts (DOCKER, DOCKER-USER, DOCKER-ISOLATION-STAGE-1/2 chains, FORWARD policy DROP), so flannel.1 -> cni0 traffic is dropped (seed 002 with Docker's own chains)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.dockerForwardDrop(ctx, l.NodeB, false)
		},
	},
	"forward-drop-rule-nft": {
		desc: "node-b: native nftables table inet sbt_fault drops forwarded tcp to 10.244.1.2:80",
		apply: func(ctx context.Context, l *Lab) error {
			_, jerr := l.nsExec(ctx, l.NodeB, strings.NewReader(nftFaultJSON), "nft", "-j", "-f", "-")
			if jerr == nil {
				return nil
			}
			if _, err := l.nsExec(ctx, l.NodeB, strings.NewReader(nftFaultTable), "nft", "-f", "-"); err != nil {
				return errors.Join(jerr, err)
			}
			return nil
		},
	},
	"reject-rst": {
		desc: "node-b: iptables FORWARD rule rejects tcp to 10.244.1.2:80 with a TCP reset",
		apply: func(ctx context.Context, l *Lab) error {
			return l.ipt(ctx, l.NodeB, "-A", "FORWARD", "-d", PodBIP+"/32", "-p", "tcp", "-m", "tcp", "--dport", "80",
				"-j", "REJECT", "--reject-with", "tcp-reset")
		},
	},
	"no-dnat": {
		desc: "node-a: kube-proxy rules for 10.96.0.100:80 removed (KUBE-SERVICES jump deleted, KUBE-SEP flushed); packets leave unNATed and die at the router",
		apply: func(ctx context.Context, l *Lab) error {
			s := l.WebService
			if err := l.ipt(ctx, l.NodeA, append([]string{"-t", "nat", "-D", "KUBE-SERVICES"}, serviceJump(s)...)...); err != nil {
				return err
			}
			return l.ipt(ctx, l.NodeA, "-t", "nat", "-F", s.SepChain)
		},
	},
	"service-no-endpoints": {
		desc: "node-a: the web Service (default/web:http) lost its last ready endpoint, rendered as kube-proxy's iptables mode does: no DNAT, and filter KUBE-SERVICES rejects tcp to 10.96.0.100:80 (comment \"default/web:http has no endpoints\", ICMP port unreachable)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.serviceNoEndpointsIptables(ctx, l.WebService)
		},
	},
	"service-no-endpoints-nft": {
		desc: "node-a: the web Service (default/web:http) lost its last ready endpoint, rendered as kube-proxy's nftables mode does: no DNAT, and table ip kube-proxy's no-endpoint-services verdict map sends new connections to 10.96.0.100:80/tcp to reject-chain (ICMP port unreachable)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.serviceNoEndpointsNft(ctx, l.WebService)
		},
	},
	"wrong-vtep": {
		desc: "node-a: VXLAN fdb entry for node-b's flannel.1 MAC points at 203.0.113.20, which the router cannot route",
		apply: func(ctx context.Context, l *Lab) error {
			if err := l.bridgeCmd(ctx, l.NodeA, "fdb", "del", FlannelMACB, "dev", l.VXLANDevice, "dst", NodeBIP); err != nil {
				return err
			}
			return l.bridgeCmd(ctx, l.NodeA, "fdb", "append", FlannelMACB, "dev", l.VXLANDevice, "dst", BogusVTEP)
		},
	},
	"no-listener": {
		desc: "pod-b: the tcp/80 listener is closed, so the pod answers SYNs with RST",
		apply: func(ctx context.Context, l *Lab) error {
			return l.StopServer("tcp", 80)
		},
	},
	"listener-loopback": {
		desc: "pod-b: the tcp/80 server listens on 127.0.0.1:80 only (instead of 10.244.1.2:80), so SYNs to the pod address are answered with RST",
		apply: func(ctx context.Context, l *Lab) error {
			if err := l.stopPodTCPListener(80); err != nil {
				return err
			}
			// listen(2) has returned: the socket is bound and listening
			return l.startTCPEchoOn("127.0.0.1", 80)
		},
	},
	"accept-queue-full": {
		desc: "pod-b: the tcp/80 server is a listener with backlog 0 that never accepts, its accept queue already holding a connection from pod-a: further SYNs are dropped by the kernel (ListenOverflows) and never answered",
		apply: func(ctx context.Context, l *Lab) error {
			return l.fillAcceptQueue(ctx, l.PodBIP, 80)
		},
	},
	"udp-rcvbuf-full": {
		desc: "pod-b: the DNS backend 10.244.1.2:53 is a UDP socket with the smallest receive buffer (SO_RCVBUF 0) that never reads, already full: further queries are dropped (SOCKET_RCVBUFF), like an overloaded DNS server",
		apply: func(ctx context.Context, l *Lab) error {
			return l.fillReceiveBuffer(ctx, l.PodBIP, 53)
		},
		dns: true,
	},
	"qdisc-full": {
		desc: "node-a: eth0 (the underlay NIC) gets a tbf qdisc of 8 bit/s holding at most 3000 bytes, filled with small overlay packets until it drops: every larger packet leaving node-a (a SYN to pod-b) is dropped (QDISC_DROP)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.fillQdisc(ctx)
		},
	},
	"neigh-missing": {
		desc: "node-a: the permanent neighbour entry for node-b's VTEP address (10.244.1.0 on the VXLAN device) is gone, as after a CNI restart that did not write it again: ARP for it gets no answer and packets to pod-b are dropped after about 3 s (NEIGH_FAILED)",
		apply: func(ctx context.Context, l *Lab) error {
			return l.ip(ctx, l.NodeA, "neigh", "del", l.vtepA("").peerAddr, "dev", l.VXLANDevice)
		},
	},
	"pod-dns-upstream": {
		desc: "pod-a: a process whose /etc/resolv.conf (its own mount namespace, like a container's) names nameserver " + UpstreamDNS + " instead of the cluster DNS 10.96.0.10 (dnsPolicy Default): its DNS queries bypass the cluster DNS and die at the router",
		apply: func(ctx context.Context, l *Lab) error {
			return l.SetPodDNS(ctx, UpstreamDNS)
		},
	},
	"no-route": {
		desc: "node-a: route 10.244.1.0/24 via flannel.1 deleted; overlay packets follow the default route and die at the router",
		apply: func(ctx context.Context, l *Lab) error {
			return l.ip(ctx, l.NodeA, "route", "del", "10.244.1.0/24", "via", "10.244.1.0", "dev", l.VXLANDevice)
		},
	},
	"small-mtu": {
		desc: "router rb and node-b eth0 MTU 1400 (< 1450 overlay + 50 VXLAN), df set on node-a flannel.1: handshake works, full-sized segments pod-a -> pod-b are black-holed",
		apply: func(ctx context.Context, l *Lab) error {
			mtu := fmt.Sprint(SmallMTU)
			if err := l.ip(ctx, l.Router, "link", "set", "rb", "mtu", mtu); err != nil {
				return err
			}
			if err := l.ip(ctx, l.NodeB, "link", "set", "eth0", "mtu", mtu); err != nil {
				return err
			}
			// Without "df set" the outer header carries DF=0 and the router
			// simply fragments the outer packet, so nothing would break.
			if err := l.ip(ctx, l.NodeA, "link", "set", l.VXLANDevice, "type", "vxlan", "df", "set"); err != nil {
				l.logf("lab: small-mtu: could not set df on %s in %s (outer packets will be fragmented instead of dropped): %v", l.VXLANDevice, l.NodeA, err)
			}
			return nil
		},
	},
	"wrong-src": {
		desc: "node-a: second eth0 address 192.0.2.11/24 (DHCP + static) and flannel.1 re-created with local 192.0.2.11; the router's anti-spoofing rule (FORWARD -s 192.0.2.11 DROP, like a cloud VPC) drops the outer packet",
		apply: func(ctx context.Context, l *Lab) error {
			// The router refuses the source it does not know; node-b's fdb
			// still sends node-a's MAC to 192.0.2.10.
			if err := l.ipt(ctx, l.Router, "-A", "FORWARD", "-s", WrongSrcIP+"/32", "-j", "DROP"); err != nil {
				return err
			}
			if err := l.ip(ctx, l.NodeA, "addr", "add", WrongSrcIP+"/24", "dev", "eth0"); err != nil {
				return err
			}
			// Same MAC, VNI, port, address, route, neigh and fdb; only the
			// outer source differs.
			if err := l.ip(ctx, l.NodeA, "link", "del", "dev", l.VXLANDevice); err != nil {
				return err
			}
			return l.setupVTEP(ctx, l.vtepA(WrongSrcIP))
		},
	},
	"rp-filter": {
		desc: "node-b: strict rp_filter (all and flannel.1 = 1) and the route to 10.244.0.0/24 replaced by one via eth0 (198.51.100.1), so packets from pod-a arriving on flannel.1 fail the reverse path check (IP_RPFILTER)",
		apply: func(ctx context.Context, l *Lab) error {
			// The slash form keeps the dot in the device name.
			if _, err := l.nsExec(ctx, l.NodeB, nil, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=1",
				"net/ipv4/conf/"+l.VXLANDevice+"/rp_filter=1"); err != nil {
				return err
			}
			return l.ip(ctx, l.NodeB, "route", "replace", "10.244.0.0/24", "via", RouterBIP, "dev", "eth0")
		},
	},
	"nic-exit": {
		desc: "node-a: tun device nic0 (its far end is the lab process, which reads and discards what it sends, so the fault lasts as long as that process) under the VXLAN device, with routes " + NodeBIP + "/32 and " + ExitProbeIP + "/32 dev nic0: packets to node-b and to " + ExitProbeIP + " leave the lab through nic0 like through a physical NIC",
		apply: func(ctx context.Context, l *Lab) error {
			return l.applyNICExit(ctx)
		},
	},
	"flanneld-stopped": {
		desc: "real flanneld only (seed 003): node-a's flanneld stopped and its route 10.244.1.0/24 via flannel.1 gone (node-b's lease came or changed while it was down), so nothing restores it: overlay packets follow the default route and die at the router",
		apply: func(ctx context.Context, l *Lab) error {
			if l.Flannel != FlannelReal {
				return errors.New("needs the real flanneld (Flannel: FlannelReal)")
			}
			if err := l.stopFlanneld(l.NodeA); err != nil {
				return err
			}
			if err := l.ip(ctx, l.NodeA, "route", "del", "10.244.1.0/24", "dev", l.VXLANDevice); err != nil {
				return err
			}
			return waitUntil(ctx, 10*time.Second, func() (bool, error) {
				out, err := runCmd(ctx, nil, "ip", "-n", l.NodeA, "route", "show", "10.244.1.0/24")
				return err == nil && strings.TrimSpace(out) == "", err
			})
		},
	},
	"flanneld-stale-peer": {
		desc: "real flanneld only (seed 003): node-a's flanneld stopped, then node-b restarted (flannel.1 re-created with a new MAC, flanneld again): node-a's neighbour and FDB entries for node-b go stale, nothing updates them",
		apply: func(ctx context.Context, l *Lab) error {
			if l.Flannel != FlannelReal {
				return errors.New("needs the real flanneld (Flannel: FlannelReal)")
			}
			if err := l.stopFlanneld(l.NodeA); err != nil {
				return err
			}
			return l.restartFlanneld(ctx, l.NodeB, "10.244.0.0/24")
		},
	},
	"silent-dns": {
		desc: "pod-b: a UDP socket on 10.244.1.2:53 (behind the DNS ClusterIP 10.96.0.10:53) reads queries and never answers, so DNS lookups time out",
		apply: func(ctx context.Context, l *Lab) error {
			return l.ensureSilentUDP(l.PodBIP, 53)
		},
		dns: true,
	},
}

// ProbeService returns the service whose traffic shows the named fault:
// the DNS service for "silent-dns", the web service otherwise (also for
// unknown names); the IPv6 ones for an IPv6 fault. For a comma separated
// list the first DNS fault wins.
func (l *Lab) ProbeService(faultNames ...string) Service {
	web := l.WebService
	for _, name := range faultNames {
		for n := range strings.SplitSeq(name, ",") {
			n = strings.TrimSpace(n)
			if f, ok := ipv6Faults[n]; ok {
				if f.dns {
					return l.DNSService6
				}
				web = l.WebService6
			}
			if faults[n].dns {
				return l.DNSService
			}
		}
	}
	return web
}

// Faults lists the faults ApplyFault knows, sorted by name.
func Faults() []FaultInfo {
	out := make([]FaultInfo, 0, len(faults))
	for name, f := range faults {
		out = append(out, FaultInfo{Name: name, Description: f.desc})
	}
	slices.SortFunc(out, func(a, b FaultInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// FaultNames returns the fault names, sorted.
func FaultNames() []string {
	var names []string
	for _, f := range Faults() {
		names = append(names, f.Name)
	}
	return names
}

// ApplyFault injects the named fault into the running lab (see Faults).
// Faults are not undone except by tearing the lab down. "none" is a no-op.
func (l *Lab) ApplyFault(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return l.ApplyFaultContext(ctx, name)
}

// ApplyFaultContext is ApplyFault with a context.
func (l *Lab) ApplyFaultContext(ctx context.Context, name string) error {
	f, ok := faults[name]
	if !ok {
		f, ok = ipv6Faults[name]
	}
	if !ok {
		return fmt.Errorf("lab: unknown fault %q (known: %s; dual-stack labs: %s)", name,
			strings.Join(FaultNames(), ", "), strings.Join(IPv6FaultNames(), ", "))
	}
	if err := f.apply(ctx, l); err != nil {
		return fmt.Errorf("lab: fault %s: %w", name, err)
	}
	return nil
}

// RealFlannelScenario adapts faults written for the lab's imitation of
// flannel to the real flanneld (Config.Flannel = FlannelReal), which does
// some of them differently: it returns the config to build the lab with,
// the faults to apply afterwards and one note per change.
//   - wrong-vtep (seed 000) becomes node B's flanneld announcing
//     --public-ip=UnroutedPublicIP (the imitation rewrites an FDB entry
//     flanneld would put back).
//   - wrong-src (seed 001) becomes node A holding WrongSrcIP, which the
//     router refuses, and its flanneld started with --iface=WrongSrcIP
//     --public-ip=NodeAIP (the imitation re-creates flannel.1 by hand).
//   - forward-drop (seed 002) runs flanneld with
//     --iptables-forward-rules=false: with its FLANNEL-FWD rules a FORWARD
//     policy DROP drops no pod traffic.
//   - no-route (seed 003) becomes flanneld-stopped (a running flanneld owns
//     that route).
func RealFlannelScenario(cfg Config, faults []string) (Config, []string, []string) {
	cfg.Flannel = FlannelReal
	var out, notes []string
	if cfg.DualStack && !cfg.IPv6Underlay {
		cfg.IPv6Underlay = true
		notes = append(notes, "dual-stack on the real flanneld: it carries IPv6 over the IPv6 underlay ("+VXLANDevice6+"), not inside flannel.1")
	}
	for _, f := range faults {
		switch f {
		case "wrong-vtep-v6":
			cfg.NodeBPublicIPv6, cfg.IPv6Underlay = UnroutedPublicIPv6, true
			notes = append(notes, "wrong-vtep-v6 on the real flanneld: node-b's flanneld announces --public-ipv6="+UnroutedPublicIPv6+", an address node-b holds but the router does not route (seed 000 over IPv6)")
		case "wrong-vtep":
			cfg.NodeBPublicIP = UnroutedPublicIP
			notes = append(notes, "wrong-vtep on the real flanneld: node-b's flanneld announces --public-ip="+UnroutedPublicIP+", an address node-b holds but the router does not route (seed 000)")
		case "wrong-src":
			cfg.NodeASecondIP = WrongSrcIP
			cfg.NodeAFlannelArgs = []string{"--iface=" + WrongSrcIP, "--public-ip=" + NodeAIP}
			notes = append(notes, "wrong-src on the real flanneld: node-a holds "+WrongSrcIP+" too (refused by the router) and its flanneld runs with --iface="+WrongSrcIP+" --public-ip="+NodeAIP+": flannel.1 sends from "+WrongSrcIP+" while the lease announces "+NodeAIP+" (seed 001)")
		case "forward-drop":
			cfg.NoFlannelForwardRules = true
			out = append(out, f)
			notes = append(notes, "forward-drop on the real flanneld: flanneld runs with --iptables-forward-rules=false (with its FLANNEL-FWD rules the FORWARD policy DROP would drop no pod traffic)")
		case "no-route":
			out = append(out, "flanneld-stopped")
			notes = append(notes, "no-route on the real flanneld: flanneld-stopped (node-a's flanneld stopped, its route to 10.244.1.0/24 gone)")
		default:
			out = append(out, f)
		}
	}
	return cfg, out, notes
}

// ConfigFaulty: the config itself breaks the data path (seed 000/001 on the
// real flanneld), so the healthy check before faults does not apply.
func (c Config) ConfigFaulty() bool {
	return c.NodeBPublicIP != "" && c.NodeBPublicIP != NodeBIP || c.NodeASecondIP != "" ||
		c.NodeBPublicIPv6 != "" && c.NodeBPublicIPv6 != NodeBIP6
}
