// Package lab builds a small, self-contained Kubernetes-node-like network out
// of Linux network namespaces so that skbtrail can be exercised end to end.
//
// The topology mimics two flannel (VXLAN backend) nodes joined by a router
// (Config.Flavor "calico" builds the same topology with Calico's VXLAN
// device: vxlan.calico, VNI 4096, UDP 4789):
//
//	<p>-pod-a ──veth── <p>-node-a ──veth── <p>-router ──veth── <p>-node-b ──veth── <p>-pod-b
//	10.244.0.5     cni0 10.244.0.1     ra 192.0.2.1        rb 198.51.100.1   cni0 10.244.1.1     10.244.1.2
//	               eth0 192.0.2.10                                          eth0 198.51.100.20
//	               flannel.1 (VNI 1, UDP 8472) <──── encapsulated ────> flannel.1
//
// Node A carries kube-proxy style iptables NAT rules that translate the
// ClusterIP 10.96.0.100:80/tcp to pod B (10.244.1.2:80) and the DNS ClusterIP
// 10.96.0.10:53/udp to pod B (10.244.1.2:53).
//
// Everything lives in namespaces created by the lab (named with a per-run
// prefix); the initial network namespace is never modified. Underlay
// addresses are TEST-NET only. A TCP echo server bound inside pod B is run
// in-process, so no helper processes are started.
//
// The lab requires root (CAP_NET_ADMIN and CAP_SYS_ADMIN), iproute2 (ip,
// bridge), sysctl, the configured iptables binary and, for one fault, nft.
package lab

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Roles of the lab namespaces. The netns name of a role is Prefix + "-" + role.
const (
	RolePodA   = "pod-a"
	RoleNodeA  = "node-a"
	RoleRouter = "router"
	RoleNodeB  = "node-b"
	RolePodB   = "pod-b"
)

// Roles returns the namespace roles in path order (pod-a ... pod-b).
func Roles() []string {
	return []string{RolePodA, RoleNodeA, RoleRouter, RoleNodeB, RolePodB}
}

// NetnsDir is where iproute2 keeps the named network namespaces.
const NetnsDir = "/run/netns"

// Addresses and names used by the topology.
const (
	PodAIP       = "10.244.0.5"
	PodBIP       = "10.244.1.2"
	ClusterIP    = "10.96.0.100"
	DNSClusterIP = "10.96.0.10"
	NodeAIP      = "192.0.2.10"
	NodeBIP      = "198.51.100.20"
	RouterAIP    = "192.0.2.1"
	RouterBIP    = "198.51.100.1"

	// BogusVTEP is the underlay address the "wrong-vtep" fault points the
	// VXLAN forwarding entry at; nothing routes it.
	BogusVTEP = "203.0.113.20"

	// WrongSrcIP is the second address the "wrong-src" fault gives node A's
	// eth0 and uses as the VXLAN device's local (outer source) address.
	WrongSrcIP = "192.0.2.11"

	PodMTU       = 1450 // pod eth0, host-side veth and the VXLAN device
	UnderlayMTU  = 1500
	SmallMTU     = 1400 // underlay MTU set by the "small-mtu" fault
	VXLANPort    = 8472 // flannel's default (Linux legacy) VXLAN port
	VXLANID      = 1
	VXLANDevice  = "flannel.1"
	BridgeDevice = "cni0"

	// Calico's VXLAN device, port and VNI (Config.Flavor "calico").
	CalicoVXLANDevice = "vxlan.calico"
	CalicoVXLANPort   = 4789
	CalicoVNI         = 4096

	// FlannelMACA and FlannelMACB are the fixed MACs of the VXLAN device on
	// node A and node B (0a:58 + the node's VXLAN device IPv4 address), in
	// both flavours.
	FlannelMACA = "0a:58:0a:f4:00:00"
	FlannelMACB = "0a:58:0a:f4:01:00"

	// KubeMarkMasq is the mark kube-proxy uses to request SNAT.
	KubeMarkMasq = "0x4000"
)

// Flavours of the overlay (Config.Flavor).
const (
	FlavorFlannel = "flannel" // flannel.1, VNI 1, UDP 8472 (the default)
	FlavorCalico  = "calico"  // vxlan.calico, VNI 4096, UDP 4789
)

// Flavors returns the supported Config.Flavor values (besides "", which
// means FlavorFlannel).
func Flavors() []string { return []string{FlavorFlannel, FlavorCalico} }

// Config configures a lab.
type Config struct {
	// Prefix names every namespace (Prefix + "-" + role). It must be unique
	// on the host and at most 10 characters of [A-Za-z0-9_-] starting with
	// a letter or digit. Empty means "st" followed by 6 random hex digits.
	Prefix string
	// Iptables is the iptables binary used for the kube-proxy rules and the
	// iptables based faults: "iptables-nft" (default) or "iptables-legacy".
	Iptables string
	// Flavor selects the overlay's VXLAN device: "" or "flannel" (flannel.1,
	// VNI 1, UDP 8472) or "calico" (vxlan.calico, VNI 4096, UDP 4789). The
	// rest of the topology is the same.
	Flavor string
	// Flannel selects who programs flannel.1 (Flavor flannel only):
	// FlannelImitation ("", the lab writes the device, route, neighbour and
	// FDB entries itself) or FlannelReal (a real flanneld per node against
	// an etcd in the namespace Prefix-etcd; see FlannelBinaries). With
	// FlannelReal the VXLAN MACs are flanneld's (not FlannelMACA/B), so the
	// faults that name those MACs (wrong-vtep, wrong-src) do not apply.
	Flannel string
	// NodeBPublicIP, with FlannelReal, is node B's flanneld --public-ip
	// (default NodeBIP). Any other address is added to node B's eth0 as a
	// /32 first, as a second address of the node (seed 000 uses
	// UnroutedPublicIP, which the router does not route).
	NodeBPublicIP string
	// NodeBPublicIPv6, with FlannelReal and IPv6Underlay, is node B's
	// flanneld --public-ipv6 (default NodeBIP6); another address is added
	// to node B's eth0 as a /128 first (UnroutedPublicIPv6: seed 000 over
	// the IPv6 underlay).
	NodeBPublicIPv6 string
	// NodeASecondIP, with FlannelReal, is added to node A's eth0 (/24)
	// before flanneld starts, as a second address of the node (DHCP next to
	// a static address, seed 001), and the router drops forwarded packets
	// from it: like a cloud VPC's anti-spoofing, the underlay accepts only
	// the node's assigned address NodeAIP. Usually WrongSrcIP.
	NodeASecondIP string
	// NodeAFlannelArgs, with FlannelReal, replace the address selection
	// flags of node A's flanneld (default --iface=eth0
	// --public-ip=192.0.2.10), e.g. --iface=192.0.2.11.
	NodeAFlannelArgs []string
	// NoFlannelForwardRules, with FlannelReal, starts every flanneld with
	// --iptables-forward-rules=false (as some distributions do): flanneld
	// then adds no FLANNEL-FWD accept rules to FORWARD.
	NoFlannelForwardRules bool
	// DualStack gives the pods IPv6 addresses next to their IPv4 ones
	// (PodAIP6, PodBIP6: IPv6 over the IPv4 VXLAN device, as flannel's
	// dual-stack mode carries it) and node A an IPv6 web Service
	// (ClusterIP6, through ip6tables DNAT). Flannel imitation only (the
	// real flanneld carries IPv6 over an IPv6 underlay: IPv6Underlay).
	DualStack bool
	// IPv6Underlay (implies DualStack) carries the pods' IPv6 traffic over
	// an IPv6 underlay instead: a second VXLAN device VXLANDevice6
	// ("flannel-v6.1", outer IPv6 NodeAIP6 <-> NodeBIP6), as flannel does
	// with EnableIPv6 and an IPv6 public address. The pods' MTU is
	// still PodMTU, as flanneld writes it, and flannel-v6.1's VXLAN6MTU
	// (1500 - 70 bytes of VXLAN over IPv6). IPv4 stays on flannel.1 over
	// the IPv4 underlay. The calico flavour's device is CalicoVXLANDevice6
	// ("vxlan-v6.calico"); with FlannelReal the real flanneld runs
	// dual-stack (EnableIPv6, --public-ipv6) and creates flannel-v6.1
	// itself.
	IPv6Underlay bool
	// Logf, if set, receives notes (e.g. optional features that were not
	// available). It is not used for a per-command trace.
	Logf func(format string, args ...any)

	// testHook, if set, is called at named stages of Up; an error aborts Up.
	testHook func(stage string) error
}

// Service describes one kube-proxy style service programmed on node A.
type Service struct {
	Name      string // service port name, e.g. "default/web:http"
	Protocol  string // "tcp" or "udp"
	ClusterIP string
	Port      int
	Endpoint  string // "ip:port" the service is DNAT'd to
	SvcChain  string // KUBE-SVC-XXXXXXXXXXXXXXXX
	SepChain  string // KUBE-SEP-XXXXXXXXXXXXXXXX
}

// Addr returns "ClusterIP:Port".
func (s Service) Addr() string { return net.JoinHostPort(s.ClusterIP, fmt.Sprint(s.Port)) }

// Lab is a running lab. Create it with Up (or NewForTest) and destroy it with
// Down.
type Lab struct {
	Prefix string

	// Network namespace names as `ip netns list` shows them.
	PodA, NodeA, Router, NodeB, PodB string

	// Addresses: pod A, pod B, the web and DNS ClusterIPs and the node
	// underlay addresses (see the package constants of the same names).
	PodAIP, PodBIP, ClusterIP, DNSClusterIP, NodeAIP, NodeBIP string

	// Iptables is the iptables binary used in the lab.
	Iptables string

	// DualStack: the pods also have IPv6 addresses PodAIP6 and PodBIP6,
	// and WebService6 (ClusterIP6:80 -> [PodBIP6]:80) is programmed on
	// node A with ip6tables (Config.DualStack).
	DualStack                    bool
	PodAIP6, PodBIP6, ClusterIP6 string
	// WebService6 is [fd00:10:96::100]:80/tcp -> [PodBIP6]:80, DNSService6
	// [fd00:10:96::a]:53/udp -> [PodBIP6]:53 (kube-proxy's IPv6 proxier).
	WebService6, DNSService6 Service
	// IPv6Underlay: the pods' IPv6 traffic crosses the IPv6 underlay
	// (NodeAIP6 <-> NodeBIP6) through VXLANDevice6 (Config.IPv6Underlay).
	// VXLANDevice6 is the device that carries IPv6 pod traffic: VXLANDevice
	// unless IPv6Underlay.
	IPv6Underlay bool
	VXLANDevice6 string

	// Flavor is FlavorFlannel or FlavorCalico. VXLANDevice, VXLANPort and
	// VNI are the overlay device's name, UDP port and VXLAN ID on both
	// nodes (flannel.1/8472/1 or vxlan.calico/4789/4096).
	Flavor string
	// Flannel is FlannelImitation or FlannelReal (Config.Flannel); Etcd is
	// the etcd namespace of FlannelReal ("" otherwise).
	Flannel     string
	Etcd        string
	VXLANDevice string
	VXLANPort   int
	VNI         int

	// WebService is 10.96.0.100:80/tcp -> 10.244.1.2:80, DNSService is
	// 10.96.0.10:53/udp -> 10.244.1.2:53. Both are programmed on node A.
	WebService, DNSService Service

	logf     func(format string, args ...any)
	testHook func(stage string) error

	nodeBPublicIP    string
	nodeBPublicIPv6  string
	nodeASecondIP    string
	nodeAFlannelArgs []string
	noForwardRules   bool
	dir              string   // FlannelReal: logs, etcd data, subnet files
	podDNS           []string // SetPodDNS: pod A's nameservers
	podDNSProc       *proc    // SetPodDNS: the process whose resolv.conf names them

	mu      sync.Mutex
	created []nsID  // namespaces this lab created, in creation order
	procs   []*proc // processes this lab started (FlannelReal), in start order
	servers map[string]*server
	// exitFrames counts what the "nic-exit" fault's tun reader took off nic0.
	exitFrames atomic.Uint64
	// bpfLinks are the tcx/XDP links of the eBPF datapath faults.
	bpfLinks []io.Closer
	down     bool
	wg       sync.WaitGroup
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,9}$`)

// ValidatePrefix reports whether p is usable as a lab prefix.
func ValidatePrefix(p string) error {
	if !prefixRE.MatchString(p) {
		return fmt.Errorf("lab: invalid prefix %q: want 1-10 characters of [A-Za-z0-9_-] starting with a letter or digit", p)
	}
	return nil
}

// RandomPrefix returns "st" followed by 6 random hex digits.
func RandomPrefix() string {
	var b [3]byte
	_, _ = rand.Read(b[:]) // never returns an error since Go 1.24
	return "st" + hex.EncodeToString(b[:])
}

// NetnsName returns the namespace name of role in a lab with prefix.
func NetnsName(prefix, role string) string { return prefix + "-" + role }

// NetnsNames returns the namespace names of a lab with prefix, in path order.
func NetnsNames(prefix string) []string {
	var out []string
	for _, r := range Roles() {
		out = append(out, NetnsName(prefix, r))
	}
	return out
}

// NetnsPath returns the bind-mount path of a named network namespace.
func NetnsPath(name string) string { return NetnsDir + "/" + name }

// nsID identifies a named network namespace by the nsfs device and inode
// its /run/netns entry is bound to, and by its net cookie: the kernel hands
// an inode number out again once its namespace is gone (a namespace deleted
// behind the lab's back and re-created under the same name often gets it),
// a cookie never.
type nsID struct {
	name     string
	dev, ino uint64
	cookie   uint64 // SO_NETNS_COOKIE (Linux >= 5.14); 0 where there is none
}

func statNetns(name string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(NetnsPath(name), &st); err != nil {
		return nsID{}, err
	}
	return nsID{name: name, dev: uint64(st.Dev), ino: st.Ino, cookie: netnsCookie(name)}, nil
}

// netnsCookie returns the net cookie of the named namespace (0: the kernel
// has none), read from a socket made in it.
func netnsCookie(name string) uint64 {
	var cookie uint64
	_ = InNetns(name, func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	return cookie
}

func netnsExists(name string) bool {
	_, err := os.Lstat(NetnsPath(name))
	return err == nil
}

var supportedIptables = []string{"iptables-nft", "iptables-legacy"}

// Up builds the lab and starts the TCP echo server on 10.244.1.2:80 in pod
// B. On failure everything created so far is torn down again.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = RandomPrefix()
	}
	if err := ValidatePrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if cfg.Iptables == "" {
		cfg.Iptables = "iptables-nft"
	}
	if !slices.Contains(supportedIptables, cfg.Iptables) {
		return nil, fmt.Errorf("lab: unsupported iptables binary %q (want one of %s)", cfg.Iptables, strings.Join(supportedIptables, ", "))
	}
	if cfg.Flavor != "" && !slices.Contains(Flavors(), cfg.Flavor) {
		return nil, fmt.Errorf("lab: unsupported flavor %q (want one of %s)", cfg.Flavor, strings.Join(Flavors(), ", "))
	}
	switch {
	case cfg.Flannel != FlannelImitation && cfg.Flannel != FlannelReal:
		return nil, fmt.Errorf("lab: unsupported flannel mode %q (want %q or %q)", cfg.Flannel, FlannelImitation, FlannelReal)
	case cfg.Flannel == FlannelReal && cfg.Flavor == FlavorCalico:
		return nil, errors.New("lab: the real flanneld needs the flannel flavor")
	case cfg.NodeBPublicIP != "" && cfg.Flannel != FlannelReal:
		return nil, errors.New("lab: NodeBPublicIP needs the real flanneld (Flannel: FlannelReal)")
	case cfg.NodeBPublicIPv6 != "" && (cfg.Flannel != FlannelReal || !cfg.IPv6Underlay):
		return nil, errors.New("lab: NodeBPublicIPv6 needs the real flanneld over an IPv6 underlay (Flannel: FlannelReal, IPv6Underlay)")
	case (cfg.NodeASecondIP != "" || len(cfg.NodeAFlannelArgs) > 0 || cfg.NoFlannelForwardRules) && cfg.Flannel != FlannelReal:
		return nil, errors.New("lab: NodeASecondIP, NodeAFlannelArgs and NoFlannelForwardRules need the real flanneld (Flannel: FlannelReal)")
	case cfg.DualStack && !cfg.IPv6Underlay && cfg.Flannel == FlannelReal:
		return nil, errors.New("lab: the real flanneld carries IPv6 over an IPv6 underlay only (flannel-v6.1): set IPv6Underlay, not just DualStack")
	}
	if _, err := os.Stat("/proc/sys/net/ipv6"); (cfg.DualStack || cfg.IPv6Underlay) && err != nil {
		return nil, fmt.Errorf("lab: DualStack needs IPv6 in the kernel: %w", err)
	}
	if cfg.Flannel == FlannelReal {
		if _, _, err := FlannelBinaries(); err != nil {
			return nil, err
		}
	}
	for _, bin := range []string{"ip", "bridge", "sysctl", cfg.Iptables} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("lab: required tool missing: %w", err)
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: must run as root (needs CAP_NET_ADMIN and CAP_SYS_ADMIN)")
	}

	l := newLab(cfg)
	for _, name := range append(l.Namespaces(), NetnsName(l.Prefix, RoleEtcd)) {
		if netnsExists(name) {
			return nil, fmt.Errorf("lab: network namespace %q already exists; choose another prefix or remove it (skbtrail-lab down --prefix %s)", name, l.Prefix)
		}
	}
	if err := l.build(ctx); err != nil {
		if derr := l.Down(); derr != nil {
			err = errors.Join(err, fmt.Errorf("lab: teardown after failed Up: %w", derr))
		}
		return nil, err
	}
	return l, nil
}

func newLab(cfg Config) *Lab {
	l := &Lab{
		Prefix:       cfg.Prefix,
		PodA:         NetnsName(cfg.Prefix, RolePodA),
		NodeA:        NetnsName(cfg.Prefix, RoleNodeA),
		Router:       NetnsName(cfg.Prefix, RoleRouter),
		NodeB:        NetnsName(cfg.Prefix, RoleNodeB),
		PodB:         NetnsName(cfg.Prefix, RolePodB),
		PodAIP:       PodAIP,
		PodBIP:       PodBIP,
		ClusterIP:    ClusterIP,
		DNSClusterIP: DNSClusterIP,
		NodeAIP:      NodeAIP,
		NodeBIP:      NodeBIP,
		Iptables:     cfg.Iptables,
		Flavor:       FlavorFlannel,
		VXLANDevice:  VXLANDevice,
		VXLANPort:    VXLANPort,
		VNI:          VXLANID,
		WebService:   newService("default/web:http", "tcp", ClusterIP, 80, PodBIP+":80"),
		DNSService:   newService("kube-system/kube-dns:dns", "udp", DNSClusterIP, 53, PodBIP+":53"),
		Flannel:      cfg.Flannel,
		logf:         cfg.Logf,
		testHook:     cfg.testHook,
		servers:      map[string]*server{},
	}
	if cfg.Flannel == FlannelReal {
		l.Etcd = NetnsName(cfg.Prefix, RoleEtcd)
		l.nodeBPublicIP = cfg.NodeBPublicIP
		l.nodeBPublicIPv6 = cfg.NodeBPublicIPv6
		l.nodeASecondIP = cfg.NodeASecondIP
		l.nodeAFlannelArgs = cfg.NodeAFlannelArgs
		l.noForwardRules = cfg.NoFlannelForwardRules
	}
	if cfg.DualStack || cfg.IPv6Underlay {
		l.DualStack = true
		l.PodAIP6, l.PodBIP6, l.ClusterIP6 = PodAIP6, PodBIP6, ClusterIP6
		l.WebService6 = newService("default/web:http", "tcp", ClusterIP6, 80, net.JoinHostPort(PodBIP6, "80"))
		l.DNSService6 = newService("kube-system/kube-dns:dns", "udp", DNSClusterIP6, 53, net.JoinHostPort(PodBIP6, "53"))
	}
	l.IPv6Underlay = cfg.IPv6Underlay
	if cfg.Flavor == FlavorCalico {
		l.Flavor = FlavorCalico
		l.VXLANDevice = CalicoVXLANDevice
		l.VXLANPort = CalicoVXLANPort
		l.VNI = CalicoVNI
	}
	l.VXLANDevice6 = l.VXLANDevice
	switch {
	case l.IPv6Underlay && l.Flavor == FlavorCalico:
		l.VXLANDevice6 = CalicoVXLANDevice6
	case l.IPv6Underlay:
		l.VXLANDevice6 = VXLANDevice6
	}
	if l.logf == nil {
		l.logf = func(string, ...any) {}
	}
	return l
}

// Namespaces returns the lab's namespace names in path order
// (pod-a, node-a, router, node-b, pod-b).
func (l *Lab) Namespaces() []string {
	return []string{l.PodA, l.NodeA, l.Router, l.NodeB, l.PodB}
}

// Netns returns the namespace name for a role (see Roles) or "" if unknown.
func (l *Lab) Netns(role string) string {
	if slices.Contains(Roles(), role) {
		return NetnsName(l.Prefix, role)
	}
	return ""
}

// Services returns the services programmed on node A.
func (l *Lab) Services() []Service { return []Service{l.WebService, l.DNSService} }

// Services6 returns the IPv6 services programmed on node A (none unless
// the lab is dual-stack).
func (l *Lab) Services6() []Service {
	if !l.DualStack {
		return nil
	}
	return []Service{l.WebService6, l.DNSService6}
}

// resolveNetns maps a lab namespace name (or a bare role name) to the lab
// namespace name, refusing anything that is not part of this lab.
func (l *Lab) resolveNetns(ns string) (string, error) {
	if slices.Contains(l.Namespaces(), ns) {
		return ns, nil
	}
	if n := l.Netns(ns); n != "" {
		return n, nil
	}
	return "", fmt.Errorf("lab: %q is not a namespace of lab %s (have %s)", ns, l.Prefix, strings.Join(l.Namespaces(), ", "))
}

// String summarises the lab in one line.
func (l *Lab) String() string {
	return fmt.Sprintf("lab %s: pod-a=%s(%s) node-a=%s(%s) router=%s node-b=%s(%s) pod-b=%s(%s) service=%s->%s dns=%s->%s iptables=%s",
		l.Prefix, l.PodA, l.PodAIP, l.NodeA, l.NodeAIP, l.Router, l.NodeB, l.NodeBIP, l.PodB, l.PodBIP,
		l.WebService.Addr(), l.WebService.Endpoint, l.DNSService.Addr(), l.DNSService.Endpoint, l.Iptables) +
		l.flavorSuffix()
}

// flavorSuffix is empty for the default flavour (so that String stays as it
// always was) and names the flavour otherwise.
func (l *Lab) flavorSuffix() string {
	if l.Flavor == FlavorFlannel {
		if l.Flannel == FlannelReal {
			return " flannel=real(flanneld + etcd in " + l.Etcd + ")"
		}
		return ""
	}
	return fmt.Sprintf(" flavor=%s(%s vni %d udp %d)", l.Flavor, l.VXLANDevice, l.VNI, l.VXLANPort)
}

// Describe returns a multi-line human readable description of the lab.
func (l *Lab) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lab prefix: %s (iptables: %s)\n", l.Prefix, l.Iptables)
	fmt.Fprintf(&b, "  %-16s eth0 %s/24 (mtu %d), default via 10.244.0.1\n", l.PodA, l.PodAIP, PodMTU)
	fmt.Fprintf(&b, "  %-16s eth0 %s/24, cni0 10.244.0.1/24, %s 10.244.0.0/32 (%s)\n", l.NodeA, l.NodeAIP, l.VXLANDevice, FlannelMACA)
	fmt.Fprintf(&b, "  %-16s ra %s/24, rb %s/24\n", l.Router, RouterAIP, RouterBIP)
	fmt.Fprintf(&b, "  %-16s eth0 %s/24, cni0 10.244.1.1/24, %s 10.244.1.0/32 (%s)\n", l.NodeB, l.NodeBIP, l.VXLANDevice, FlannelMACB)
	fmt.Fprintf(&b, "  %-16s eth0 %s/24 (mtu %d), default via 10.244.1.1, tcp/80 echo server\n", l.PodB, l.PodBIP, PodMTU)
	for _, s := range l.Services() {
		fmt.Fprintf(&b, "  service %-24s %s/%s -> %s (%s, %s) on %s\n", s.Name, s.Addr(), s.Protocol, s.Endpoint, s.SvcChain, s.SepChain, l.NodeA)
	}
	fmt.Fprintf(&b, "  overlay (%s): %s VXLAN VNI %d, UDP %d, nolearning, static neigh + fdb\n", l.Flavor, l.VXLANDevice, l.VNI, l.VXLANPort)
	switch {
	case l.IPv6Underlay:
		fmt.Fprintf(&b, "  IPv6: pods %s, %s; nodes %s, %s; over an IPv6 underlay: %s VXLAN (outer IPv6, mtu %d)\n",
			l.PodAIP6, l.PodBIP6, NodeAIP6, NodeBIP6, l.VXLANDevice6, VXLAN6MTU)
	case l.DualStack:
		fmt.Fprintf(&b, "  IPv6: pods %s, %s; nodes %s, %s; inside %s (outer IPv4)\n", l.PodAIP6, l.PodBIP6, NodeAIP6, NodeBIP6, l.VXLANDevice)
	}
	return b.String()
}

// Run runs `ip netns exec ns args...` and returns the combined output. On
// failure the error includes the command and its output. ns must be one of
// the lab's namespaces (a bare role name such as "node-a" is accepted too).
func (l *Lab) Run(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return l.RunContext(ctx, ns, args...)
}

// RunContext is Run with a context.
func (l *Lab) RunContext(ctx context.Context, ns string, args ...string) (string, error) {
	name, err := l.resolveNetns(ns)
	if err != nil {
		return "", err
	}
	return l.nsExec(ctx, name, nil, args...)
}

func (l *Lab) nsExec(ctx context.Context, ns string, stdin io.Reader, args ...string) (string, error) {
	return runCmd(ctx, stdin, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

func runCmd(ctx context.Context, stdin io.Reader, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = stdin
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = "(no output)"
		}
		return string(out), fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, msg)
	}
	return string(out), nil
}

// ip runs `ip -n ns args...`.
func (l *Lab) ip(ctx context.Context, ns string, args ...string) error {
	_, err := runCmd(ctx, nil, "ip", append([]string{"-n", ns}, args...)...)
	return err
}

// bridgeCmd runs `bridge -n ns args...`.
func (l *Lab) bridgeCmd(ctx context.Context, ns string, args ...string) error {
	_, err := runCmd(ctx, nil, "bridge", append([]string{"-n", ns}, args...)...)
	return err
}

// ipt runs the lab's iptables binary in ns (waiting for the xtables lock).
func (l *Lab) ipt(ctx context.Context, ns string, args ...string) error {
	_, err := l.nsExec(ctx, ns, nil, append([]string{l.Iptables, "-w", "10"}, args...)...)
	return err
}

func (l *Lab) build(ctx context.Context) error {
	// 1. Namespaces.
	for _, name := range l.Namespaces() {
		if err := l.addNetns(ctx, name); err != nil {
			return err
		}
	}

	_, err := os.Stat("/proc/sys/net/ipv6")
	haveIPv6 := err == nil

	// 2. sysctls (before any interface exists, so "default" applies to all
	// interfaces created later) and loopback.
	for _, name := range l.Namespaces() {
		sysctls := []string{
			"net.ipv4.conf.all.rp_filter=0",
			"net.ipv4.conf.default.rp_filter=0",
		}
		switch {
		case l.DualStack:
			sysctls = append(sysctls, l.ipv6Sysctls(name)...)
		case haveIPv6:
			sysctls = append(sysctls,
				"net.ipv6.conf.all.disable_ipv6=1",
				"net.ipv6.conf.default.disable_ipv6=1")
		}
		if name == l.NodeA || name == l.NodeB || name == l.Router {
			sysctls = append(sysctls, "net.ipv4.ip_forward=1")
		}
		if _, err := l.nsExec(ctx, name, nil, append([]string{"sysctl", "-q", "-w"}, sysctls...)...); err != nil {
			return fmt.Errorf("lab: sysctl in %s: %w", name, err)
		}
		if err := l.ip(ctx, name, "link", "set", "lo", "up"); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}

	// 3. Underlay: node-a eth0 <-> router ra, node-b eth0 <-> router rb.
	type step struct {
		ns   string
		args []string
	}
	mtu := fmt.Sprint(PodMTU)
	steps := []step{
		{l.NodeA, []string{"link", "add", "eth0", "type", "veth", "peer", "name", "ra", "netns", l.Router}},
		{l.NodeB, []string{"link", "add", "eth0", "type", "veth", "peer", "name", "rb", "netns", l.Router}},
		{l.Router, []string{"addr", "add", RouterAIP + "/24", "dev", "ra"}},
		{l.Router, []string{"addr", "add", RouterBIP + "/24", "dev", "rb"}},
		{l.Router, []string{"link", "set", "ra", "up"}},
		{l.Router, []string{"link", "set", "rb", "up"}},
		{l.NodeA, []string{"addr", "add", NodeAIP + "/24", "dev", "eth0"}},
		{l.NodeA, []string{"link", "set", "eth0", "up"}},
		{l.NodeA, []string{"route", "add", "default", "via", RouterAIP, "dev", "eth0"}},
		{l.NodeB, []string{"addr", "add", NodeBIP + "/24", "dev", "eth0"}},
		{l.NodeB, []string{"link", "set", "eth0", "up"}},
		{l.NodeB, []string{"route", "add", "default", "via", RouterBIP, "dev", "eth0"}},

		// Pod networks: cni0 bridge per node, pod veth enslaved to it.
		{l.NodeA, []string{"link", "add", BridgeDevice, "address", "0a:58:0a:f4:00:01", "type", "bridge"}},
		{l.NodeA, []string{"addr", "add", "10.244.0.1/24", "dev", BridgeDevice}},
		{l.NodeA, []string{"link", "set", BridgeDevice, "up"}},
		{l.PodA, []string{"link", "add", "eth0", "address", "0a:58:0a:f4:00:05", "mtu", mtu, "type", "veth", "peer", "name", "vethpoda", "netns", l.NodeA}},
		{l.NodeA, []string{"link", "set", "vethpoda", "mtu", mtu, "master", BridgeDevice}},
		{l.NodeA, []string{"link", "set", "vethpoda", "up"}},
		{l.PodA, []string{"addr", "add", PodAIP + "/24", "dev", "eth0"}},
		{l.PodA, []string{"link", "set", "eth0", "up"}},
		{l.PodA, []string{"route", "add", "default", "via", "10.244.0.1", "dev", "eth0"}},

		{l.NodeB, []string{"link", "add", BridgeDevice, "address", "0a:58:0a:f4:01:01", "type", "bridge"}},
		{l.NodeB, []string{"addr", "add", "10.244.1.1/24", "dev", BridgeDevice}},
		{l.NodeB, []string{"link", "set", BridgeDevice, "up"}},
		{l.PodB, []string{"link", "add", "eth0", "address", "0a:58:0a:f4:01:02", "mtu", mtu, "type", "veth", "peer", "name", "vethpodb", "netns", l.NodeB}},
		{l.NodeB, []string{"link", "set", "vethpodb", "mtu", mtu, "master", BridgeDevice}},
		{l.NodeB, []string{"link", "set", "vethpodb", "up"}},
		{l.PodB, []string{"addr", "add", PodBIP + "/24", "dev", "eth0"}},
		{l.PodB, []string{"link", "set", "eth0", "up"}},
		{l.PodB, []string{"route", "add", "default", "via", "10.244.1.1", "dev", "eth0"}},
	}
	for _, s := range steps {
		if err := l.ip(ctx, s.ns, s.args...); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	// IPv6 addresses and routes first: flanneld picks its IPv6 underlay
	// address when it starts.
	if l.DualStack {
		if err := l.setupIPv6(ctx); err != nil {
			return err
		}
	}
	// Overlay: VXLAN devices (flannel.1 or vxlan.calico) with the static
	// state flanneld / calico-node would program, or the real flanneld.
	if l.Flannel == FlannelReal {
		if err := l.startRealFlannel(ctx); err != nil {
			return err
		}
	} else {
		for _, v := range []vtep{l.vtepA(NodeAIP), l.vtepB()} {
			if err := l.setupVTEP(ctx, v); err != nil {
				return err
			}
		}
		if l.DualStack {
			if err := l.setupIPv6Overlay(ctx); err != nil {
				return err
			}
		}
	}

	// 4. kube-proxy style NAT rules on node A.
	if err := l.programKubeProxy(ctx); err != nil {
		return err
	}

	if err := l.hook("before-server"); err != nil {
		return err
	}
	// 5. The in-process TCP echo server in pod B.
	if err := l.StartTCPEcho(80); err != nil {
		return err
	}
	if err := l.hook("done"); err != nil {
		return err
	}
	return ctx.Err()
}

// addNetns creates a namespace and records it for Down.
func (l *Lab) addNetns(ctx context.Context, name string) error {
	if _, err := runCmd(ctx, nil, "ip", "netns", "add", name); err != nil {
		return fmt.Errorf("lab: create netns: %w", err)
	}
	id, err := statNetns(name)
	if err != nil {
		return fmt.Errorf("lab: created netns %s: %w", name, err)
	}
	l.mu.Lock()
	l.created = append(l.created, id)
	l.mu.Unlock()
	return nil
}

func (l *Lab) hook(stage string) error {
	if l.testHook == nil {
		return nil
	}
	return l.testHook(stage)
}

// vtep is one node's VXLAN endpoint and the static state pointing at the
// other node's.
type vtep struct {
	ns    string // node namespace
	mac   string // MAC of the local VXLAN device
	local string // underlay address used as outer source ("local")
	addr  string // address of the local VXLAN device (x.x.x.0/32, or x::/128)
	under string // underlay device the VXLAN device is bound to ("": eth0)
	dev   string // the VXLAN device ("": the lab's VXLANDevice)
	mtu   int    // its MTU (0: PodMTU)

	peerCIDR string // pod network of the other node
	peerAddr string // VXLAN device address of the other node (gateway, onlink)
	peerMAC  string // VXLAN device MAC of the other node
	peerVTEP string // underlay address of the other node (fdb dst)
}

// vtepA is node A's endpoint with outer source local (NodeAIP, or WrongSrcIP
// for the "wrong-src" fault).
func (l *Lab) vtepA(local string) vtep {
	return vtep{ns: l.NodeA, mac: FlannelMACA, local: local, addr: "10.244.0.0",
		peerCIDR: "10.244.1.0/24", peerAddr: "10.244.1.0", peerMAC: FlannelMACB, peerVTEP: NodeBIP}
}

func (l *Lab) vtepB() vtep {
	return vtep{ns: l.NodeB, mac: FlannelMACB, local: NodeBIP, addr: "10.244.1.0",
		peerCIDR: "10.244.0.0/24", peerAddr: "10.244.0.0", peerMAC: FlannelMACA, peerVTEP: NodeAIP}
}

// setupVTEP creates the VXLAN device of v and programs what flanneld (or
// calico-node) would: the route to the other node's pod network via the
// remote device address onlink, a permanent neighbour entry for that
// address and an fdb entry sending its MAC to the remote VTEP.
func (l *Lab) setupVTEP(ctx context.Context, v vtep) error {
	dev := cmp.Or(v.dev, l.VXLANDevice)
	under := cmp.Or(v.under, "eth0")
	addr := v.addr + "/32"
	if isIPv6(v.addr) {
		addr = v.addr + "/128"
	}
	steps := [][]string{
		{"link", "add", dev, "address", v.mac, "mtu", fmt.Sprint(cmp.Or(v.mtu, PodMTU)),
			"type", "vxlan", "id", fmt.Sprint(l.VNI), "local", v.local, "dev", under,
			"dstport", fmt.Sprint(l.VXLANPort), "nolearning"},
		{"addr", "add", addr, "dev", dev},
		{"link", "set", dev, "up"},
		{"route", "add", v.peerCIDR, "via", v.peerAddr, "dev", dev, "onlink"},
		{"neigh", "add", v.peerAddr, "lladdr", v.peerMAC, "dev", dev, "nud", "permanent"},
	}
	for _, args := range steps {
		if err := l.ip(ctx, v.ns, args...); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	if err := l.bridgeCmd(ctx, v.ns, "fdb", "append", v.peerMAC, "dev", dev, "dst", v.peerVTEP); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// Down closes the in-process servers and deletes the lab's namespaces. It is
// idempotent and safe to call after a partially failed Up.
func (l *Lab) Down() error {
	l.mu.Lock()
	l.down = true
	servers := l.servers
	l.servers = map[string]*server{}
	created := slices.Clone(l.created)
	l.mu.Unlock()

	var errs []error
	for _, s := range servers {
		s.close()
	}
	// Sockets hold a reference on pod B's namespace; wait for the server
	// goroutines so that the namespace can really go away.
	l.wg.Wait()
	// flanneld and etcd (FlannelReal) before their namespaces.
	if err := l.stopProcs(); err != nil {
		errs = append(errs, err)
	}
	if err := l.closeLinks(); err != nil {
		errs = append(errs, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var remaining []nsID
	for i := len(created) - 1; i >= 0; i-- {
		id := created[i]
		cur, err := statNetns(id.name)
		if err != nil {
			continue // already gone
		}
		if cur != id {
			// Someone deleted our namespace and created another one with
			// the same name (e.g. `skbtrail-lab down` plus a new lab):
			// not ours to delete.
			l.logf("lab: not deleting netns %s: it is no longer the namespace this lab created", id.name)
			continue
		}
		if _, err := runCmd(ctx, nil, "ip", "netns", "del", id.name); err != nil && netnsExists(id.name) {
			errs = append(errs, fmt.Errorf("lab: delete netns: %w", err))
			remaining = append(remaining, id)
		}
	}
	l.mu.Lock()
	l.created = remaining
	l.mu.Unlock()
	if l.dir != "" && len(errs) == 0 {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	return errors.Join(errs...)
}

// DownPrefix deletes leftover namespaces of a lab with the given prefix (the
// five role names Prefix-pod-a ... Prefix-pod-b and Prefix-etcd of
// FlannelReal; nothing else is touched) and
// returns the names it deleted. It is meant for cleaning up after a process
// that died without calling Down.
func DownPrefix(ctx context.Context, prefix string) ([]string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	var deleted []string
	var errs []error
	for _, name := range append(NetnsNames(prefix), NetnsName(prefix, RoleEtcd)) {
		if !netnsExists(name) {
			continue
		}
		if _, err := runCmd(ctx, nil, "ip", "netns", "del", name); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, name)
	}
	return deleted, errors.Join(errs...)
}

// ExistingNetns returns the lab namespaces of prefix that currently exist.
func ExistingNetns(prefix string) []string {
	var out []string
	for _, name := range NetnsNames(prefix) {
		if netnsExists(name) {
			out = append(out, name)
		}
	}
	return out
}
