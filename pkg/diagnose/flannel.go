package diagnose

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/flannelstate"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nfrules"
	"github.com/skbtrail/skbtrail/pkg/nodestate"
)

// FlannelConfig says where flannel's own state is read (once, in Prepare).
// Nothing here is required: what cannot be read leaves the advice as it is
// without it.
type FlannelConfig struct {
	// SubnetFiles maps a namespace name ("host" for the initial one) to
	// its flanneld's --subnet-file. Empty: flannelstate.DefaultSubnetFile
	// for "host", when it exists.
	SubnetFiles map[string]string
	// EtcdEndpoints: flannel's etcd (its --etcd-endpoints), to read the
	// leases; none: leases are not read.
	EtcdEndpoints []string
	// EtcdPrefix is flannel's --etcd-prefix (default /coreos.com/network).
	EtcdPrefix string
	// EtcdNetns dials etcd from inside this namespace (labs); "": from
	// skbtrail's own.
	EtcdNetns string
	// ProcRoot is where flanneld processes are looked for ("" = /proc).
	ProcRoot string
}

// calicoAutodetect is calico-node's setting that picks the node's address
// (and so its VXLAN source and the address peers send to);
// calicoAutodetect6 picks its IPv6 address (vxlan-v6.calico). Both end in
// calicoAutodetectSuffix.
const (
	calicoAutodetect       = "IP_AUTODETECTION_METHOD"
	calicoAutodetect6      = "IP6_AUTODETECTION_METHOD"
	calicoAutodetectSuffix = "_AUTODETECTION_METHOD"
)

// calicoAutodetectFor is calico-node's address setting for a's IP version.
func calicoAutodetectFor(a netip.Addr) string {
	if a.Unmap().Is6() {
		return calicoAutodetect6
	}
	return calicoAutodetect
}

// isCalicoDevice: Calico's VXLAN device (IPv4 or IPv6), whose advice names
// Calico's knobs.
func isCalicoDevice(dev string) bool { return dev == "vxlan.calico" || dev == "vxlan-v6.calico" }

// flannelView is what was read of flannel's state.
type flannelView struct {
	subnets  map[uint32]*flannelstate.SubnetFile // by netns inode
	leases   []flannelstate.Lease                // nil: not read
	flanneld map[uint64]bool                     // netns inodes where flanneld runs; nil: unknown
}

// readFlannel reads flannel's subnet files, leases and processes.
func (d *Diagnoser) readFlannel(ctx context.Context) {
	fc, reg := d.cfg.Flannel, d.cfg.Registry
	v := &flannelView{subnets: map[uint32]*flannelstate.SubnetFile{}}
	files := fc.SubnetFiles
	explicit := len(files) > 0
	if !explicit {
		files = map[string]string{"host": flannelstate.DefaultSubnetFile}
	}
	for name, path := range files {
		var ino uint32
		found := false
		for _, e := range reg.All() {
			if e.Name == name {
				ino, found = uint32(e.Inode), true
			}
		}
		if !found {
			if explicit {
				d.cfg.Logger.Warn("flannel subnet file: no such namespace", zap.String("netns", name))
			}
			continue
		}
		sf, err := flannelstate.ReadSubnetFile(path)
		if err != nil {
			if explicit {
				d.cfg.Logger.Warn("flannel subnet file not read", zap.Error(err))
			}
			continue
		}
		v.subnets[ino] = sf
	}
	if len(fc.EtcdEndpoints) > 0 {
		leases, err := readLeases(ctx, fc)
		if err != nil {
			d.cfg.Logger.Warn("flannel leases not read", zap.Error(err))
		}
		v.leases = leases
	}
	root := fc.ProcRoot
	if root == "" {
		root = "/proc"
	}
	if m, err := flannelstate.FlanneldNetns(root); err == nil {
		v.flanneld = m
	} else {
		d.cfg.Logger.Debug("flanneld processes not read", zap.Error(err))
	}
	d.flannel = v
}

// isFlannelNode: the namespace runs flannel (a flannel.* VXLAN device, or a
// subnet file configured for it).
func (d *Diagnoser) isFlannelNode(ns *nodestate.Netns) bool {
	if ns == nil {
		return false
	}
	if d.flannel != nil && d.flannel.subnets[ns.Inode] != nil {
		return true
	}
	for _, l := range ns.Links {
		if l.VXLAN != nil && strings.HasPrefix(l.Name, "flannel") {
			return true
		}
	}
	return false
}

// flannelEvidence: flannel's own state shows for ns (its subnet file, or a
// flanneld running there), not just a device named like flannel's.
func (d *Diagnoser) flannelEvidence(ns *nodestate.Netns) bool {
	if ns == nil || d.flannel == nil {
		return false
	}
	return d.flannel.subnets[ns.Inode] != nil || d.flannel.flanneld[uint64(ns.Inode)]
}

// leaseOf returns the flannel lease of a subnet or of a VTEP MAC.
func (d *Diagnoser) leaseOf(subnet netip.Prefix, mac string) (flannelstate.Lease, bool) {
	if d.flannel == nil {
		return flannelstate.Lease{}, false
	}
	mac = strings.ToLower(mac)
	for _, l := range d.flannel.leases {
		if subnet.IsValid() && l.Subnet.Masked() == subnet.Masked() || mac != "" && l.VtepMAC == mac {
			return l, true
		}
		if subnet.IsValid() && l.IPv6Subnet.IsValid() && l.IPv6Subnet.Masked() == subnet.Masked() || mac != "" && l.VtepMACv6 == mac {
			return ipv6Half(l), true
		}
	}
	return flannelstate.Lease{}, false
}

// ipv6Half is a dual-stack lease as its IPv6 half: the IPv6 subnet,
// PublicIPv6 and the MAC of flannel-v6.1 in the IPv4 fields.
func ipv6Half(l flannelstate.Lease) flannelstate.Lease {
	l.Subnet, l.PublicIP, l.VtepMAC = l.IPv6Subnet, l.PublicIPv6, l.VtepMACv6
	return l
}

// leaseOfFDBDst: the flannel lease of the VTEP the device's FDB sends to
// dst (by its VtepMAC).
func (d *Diagnoser) leaseOfFDBDst(dev *nodestate.Link, dst netip.Addr) (flannelstate.Lease, bool) {
	if dev == nil || dev.VXLAN == nil {
		return flannelstate.Lease{}, false
	}
	for _, f := range dev.VXLAN.FDB {
		if f.Dst == dst {
			if l, ok := d.leaseOf(netip.Prefix{}, f.MAC); ok {
				return l, true
			}
		}
	}
	return flannelstate.Lease{}, false
}

func leaseText(l flannelstate.Lease) string {
	field := "PublicIP"
	if l.Subnet.Addr().Is6() {
		field = "PublicIPv6"
	}
	s := fmt.Sprintf("flannel's lease %s (%s) announces %s %s", l.Subnet, l.Key, field, l.PublicIP)
	if l.VtepMAC != "" {
		s += ", VtepMAC " + l.VtepMAC
	}
	return s
}

// flanneldRuns: true/false when known whether a flanneld runs in ns.
func (d *Diagnoser) flanneldRuns(ns *nodestate.Netns) (runs, known bool) {
	if d.flannel == nil || d.flannel.flanneld == nil {
		return false, false
	}
	if d.flannel.flanneld[uint64(ns.Inode)] {
		return true, true
	}
	// not running: trusted only where flannel evidently runs (its device
	// or subnet file), so a host without flannel is never told to start it
	return false, d.isFlannelNode(ns)
}

// flannelMTU is the FLANNEL_MTU of the namespace's flannel subnet file (0:
// none read).
func (d *Diagnoser) flannelMTU(ino uint32) int {
	if d.flannel == nil || d.flannel.subnets[ino] == nil {
		return 0
	}
	return d.flannel.subnets[ino].MTU
}

// flannelNetwork is the flannel network of the namespace for a's IP
// version (its subnet file's FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK).
func (d *Diagnoser) flannelNetwork(ino uint32, a netip.Addr) (netip.Prefix, bool) {
	if d.flannel == nil || d.flannel.subnets[ino] == nil {
		return netip.Prefix{}, false
	}
	n := d.flannel.subnets[ino].Network
	if a.Unmap().Is6() {
		n = d.flannel.subnets[ino].IPv6Network
	}
	return n, n.IsValid()
}

// flannelForwardAdvice: a FORWARD policy DROP of pod traffic on a flannel
// node whose FORWARD has no flanneld rules (FLANNEL-FWD). flanneld adds them
// unless started with --iptables-forward-rules=false; "" when it does not
// apply (not flannel, not pod traffic, or FLANNEL-FWD is there).
func (d *Diagnoser) flannelForwardAdvice(v *journey.Verdict, dec nfrules.Decision, pkt nfrules.Packet, after *nfrules.Snapshot) string {
	if d.state == nil || dec.Chain != "FORWARD" || dec.Source == "nft" {
		return ""
	}
	ns := d.state.Namespaces[v.NetnsInode]
	if !d.flannelEvidence(ns) || hasChain(after, "FLANNEL-FWD") {
		return ""
	}
	network, ok := d.flannelNetwork(ns.Inode, pkt.Tuple.Dst)
	pod := func(a netip.Addr) bool {
		if ok {
			return network.Contains(a)
		}
		_, _, in := d.state.PodCIDROf(a)
		return in
	}
	if !pod(pkt.Tuple.Src) && !pod(pkt.Tuple.Dst) {
		return ""
	}
	net, ipt := "<FLANNEL_NETWORK>", "iptables"
	if pkt.Tuple.Dst.Unmap().Is6() {
		net, ipt = "<FLANNEL_IPV6_NETWORK>", "ip6tables"
	}
	if ok {
		net = network.String()
	}
	return fmt.Sprintf("flanneld accepts the pod network in FORWARD itself (chain FLANNEL-FWD: -s %s and -d %s -j ACCEPT) unless it runs with --iptables-forward-rules=false, and %s has no such rule: start flanneld with --iptables-forward-rules=true (the default) and restart it, or accept the pod network yourself (%s -I FORWARD -s %s -j ACCEPT; %s -I FORWARD -d %s -j ACCEPT; with Docker's policy DROP put them in DOCKER-USER so they survive Docker restarts)",
		net, net, v.Netns, ipt, net, ipt, net)
}

func hasChain(s *nfrules.Snapshot, name string) bool {
	if s == nil {
		return false
	}
	for _, rs := range []*nfrules.IptRuleset{s.NFT, s.Legacy} {
		if rs == nil {
			continue
		}
		if t := rs.Tables["filter"]; t != nil {
			if _, ok := t.Chains[name]; ok {
				return true
			}
		}
	}
	return false
}

// srcMismatchAdvice: the VXLAN device sends from src while its peers know
// it as known. flanneld takes the device's local address from the interface
// it picks (--iface, --iface-regex; default the default route's interface),
// while --public-ip and the public-ip-overwrite annotation change only what
// its lease announces. Over an IPv6 underlay it takes the first global
// IPv6 address of that interface, so --iface cannot name the address.
func srcMismatchAdvice(src netip.Addr, known string, dev string) string {
	if isCalicoDevice(dev) {
		return fmt.Sprintf("the node has several addresses and Calico sends VXLAN from the wrong one (%s local %s): calico-node picks the node address by %s (first-found by default) — set it so it picks %s (e.g. cidr=%s/%d, interface=<the device holding it>, can-reach=<a peer's IP>, kubernetes-internal-ip) and restart calico-node, or remove the extra address %s from the node (e.g. DHCP next to a static address)",
			dev, src, calicoAutodetectFor(src), known, known, src.BitLen(), src)
	}
	flag, annotation := flannelPublic(src)
	if src.Unmap().Is6() {
		return fmt.Sprintf("the node has several IPv6 addresses and flannel sends VXLAN from the wrong one (%s local %s): flanneld takes the IPv6 VXLAN source from the interface it picks (--iface, --iface-regex; its first global IPv6 address), while %s and the %s annotation change only what its lease announces — remove the extra address %s from the node (e.g. SLAAC or DHCPv6 next to a static address), or move it to another interface, so flanneld picks %s, and restart flanneld",
			dev, src, flag, annotation, src, known)
	}
	return fmt.Sprintf("the node has several addresses and flannel sends VXLAN from the wrong one (%s local %s): flanneld takes the VXLAN source from the interface address it picks, while %s and the %s annotation change only what its lease announces — start flanneld with --iface=%s (an address is accepted; or an --iface-regex that matches it) and restart it, or remove the extra address %s from the node (e.g. DHCP next to a static address)",
		dev, src, flag, annotation, known, src)
}

// demoteUnderlayRuleDrop: the underlay refused the VXLAN packet by its outer
// source because the node sends from an address its peers do not know it
// by: the rule is a consequence, not the fix.
func demoteUnderlayRuleDrop(j *journey.Journey) {
	var mismatch bool
	for _, f := range j.Findings {
		mismatch = mismatch || f.Code == CodeVXLANSrcMismatch && f.Severity == journey.SeverityError
	}
	if !mismatch || len(j.Events) == 0 || !j.Events[len(j.Events)-1].Encap {
		return
	}
	for i := range j.Findings {
		f := &j.Findings[i]
		if f.Code == CodeNFRuleDrop || f.Code == CodeNFPolicyDrop {
			f.Severity = journey.SeverityWarning
			f.Advice = fmt.Sprintf("a consequence of %s: the underlay refuses VXLAN from an address the peers do not know this node by; fix the address the overlay sends from (see %s) rather than this rule", CodeVXLANSrcMismatch, CodeVXLANSrcMismatch)
		}
	}
}

// underlaySourceAdvice: a rule in the underlay dropped the VXLAN packet by
// its outer source (anti-spoofing, a security group), and the node that
// encapsulated it holds another underlay address. The address the node's
// flannel picked is the thing to change; "" when that does not apply.
func (d *Diagnoser) underlaySourceAdvice(j *journey.Journey, dec nfrules.Decision, outerSrc netip.Addr) (string, string) {
	if d.state == nil || !outerSrc.IsValid() || !ruleMatchesSource(dec.Rule, outerSrc) {
		return "", ""
	}
	for _, enc := range j.Encaps {
		if enc.OuterSrc != outerSrc.String() {
			continue
		}
		owner := d.state.Namespaces[enc.NetnsInode]
		if owner == nil || enc.NetnsInode == j.Verdict.NetnsInode {
			return "", ""
		}
		var alts []string
		for _, l := range owner.Links {
			if l.Loopback || l.VXLAN != nil || l.Type == "bridge" {
				continue
			}
			for _, p := range l.Addrs {
				a := p.Addr()
				if a == outerSrc || !sameFamily(a, outerSrc) || a.IsLoopback() || a.IsLinkLocalUnicast() {
					continue
				}
				if _, _, inPods := d.state.PodCIDROf(a); !inPods {
					alts = append(alts, a.String())
				}
			}
		}
		if len(alts) == 0 {
			return "", ""
		}
		msg := fmt.Sprintf("; %s is the VXLAN source (local address of %s) of %s", outerSrc, enc.Device, enc.Netns)
		if dev, ok := owner.Link(enc.Device); ok {
			if l, ok := d.leaseOf(netip.Prefix{}, dev.MAC); ok {
				msg += " and " + leaseText(l)
			}
		}
		msg += fmt.Sprintf(", while %s also holds %s", enc.Netns, strings.Join(alts, ", "))
		if isCalicoDevice(enc.Device) {
			return msg, fmt.Sprintf("the underlay refuses VXLAN from %s, the address calico-node on %s picked: make it pick %s — set %s (e.g. cidr=%s/%d, interface=<the device holding it>, can-reach=<a peer's IP>, kubernetes-internal-ip) and restart calico-node — or remove %s from the node; change the underlay's rule only if it should accept %s",
				outerSrc, enc.Netns, alts[0], calicoAutodetectFor(outerSrc), alts[0], outerSrc.BitLen(), outerSrc, outerSrc)
		}
		if outerSrc.Unmap().Is6() {
			// flanneld picks an interface's first global IPv6 address:
			// no flag names the address
			return msg, fmt.Sprintf("the underlay refuses VXLAN from %s, the IPv6 address flannel on %s picked (its interface's first global IPv6 address): remove %s from the node (e.g. SLAAC or DHCPv6 next to a static address) or move it to another interface so flanneld picks %s, and restart flanneld; in Kubernetes mode the node's %s annotation (=%s) tells peers where to send; change the underlay's rule only if it should accept %s",
				outerSrc, enc.Netns, outerSrc, alts[0], publicIPv6Overwrite, alts[0], outerSrc)
		}
		advice := fmt.Sprintf("the underlay refuses VXLAN from %s, the address flannel on %s picked: make flannel use %s — start flanneld there with --iface=%s (an address is accepted; or an --iface-regex that matches it; in Kubernetes mode also annotate the node with %s=%s so peers send to it) and restart it — or remove %s from the node (e.g. DHCP next to a static address); change the underlay's rule only if it should accept %s",
			outerSrc, enc.Netns, alts[0], alts[0], publicIPOverwrite, alts[0], outerSrc, outerSrc)
		return msg, advice
	}
	return "", ""
}

// ruleMatchesSource: the rule text matches on exactly this source address
// (iptables "-s A/32", ip6tables "-s A/128", nft "ip saddr A" or "ip6
// saddr A").
func ruleMatchesSource(rule string, src netip.Addr) bool {
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		negated := i > 0 && f[i-1] == "!" || f[i+1] == "!="
		if !negated && (f[i] == "-s" || f[i] == "--source" || f[i] == "saddr") && (f[i+1] == src.String() || f[i+1] == fmt.Sprintf("%s/%d", src, src.BitLen())) {
			return true
		}
	}
	return false
}

// readLeases reads flannel's leases from etcd, dialling from fc.EtcdNetns
// when set.
func readLeases(ctx context.Context, fc FlannelConfig) ([]flannelstate.Lease, error) {
	var dial flannelstate.DialFunc
	if fc.EtcdNetns != "" {
		path, _, err := netnsutil.ResolveName(fc.EtcdNetns)
		if err != nil {
			return nil, fmt.Errorf("flannel etcd netns: %w", err)
		}
		dial = func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = netnsutil.Do(path, func() error {
				var nd net.Dialer
				c, err = nd.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return flannelstate.ReadLeases(ctx, fc.EtcdEndpoints, fc.EtcdPrefix, dial)
}

// staleVTEPMAC: the VXLAN packet reached the peer, whose VXLAN device
// dropped the inner frame as addressed to another host (OTHERHOST): the
// sender's FDB and neighbour entries still name a MAC the peer's device no
// longer has (the peer re-created it, e.g. after a reboot, while the
// sender's flanneld did not follow).
func (d *Diagnoser) staleVTEPMAC(j *journey.Journey) {
	v := j.Verdict
	if d.state == nil || v.Kind != journey.Dropped || v.Reason != "OTHERHOST" || len(j.Encaps) == 0 {
		return
	}
	at := d.state.Namespaces[v.NetnsInode]
	if at == nil {
		return
	}
	peerDev, ok := at.Link(v.Device)
	if !ok || peerDev.VXLAN == nil {
		return
	}
	enc := j.Encaps[len(j.Encaps)-1]
	sender := d.state.Namespaces[enc.NetnsInode]
	if sender == nil {
		return
	}
	dev, ok := sender.Link(enc.Device)
	if !ok || dev.VXLAN == nil {
		return
	}
	dst, _ := netip.ParseAddr(enc.OuterDst)
	var stale []string
	for _, f := range dev.VXLAN.FDB {
		if f.Dst == dst && f.MAC != peerDev.MAC {
			stale = append(stale, f.MAC)
		}
	}
	if len(stale) == 0 {
		return
	}
	msg := fmt.Sprintf("%s in %s sends to VTEP MAC %s (its FDB: %s -> %s), but %s's %s is now %s", enc.Device, sender.Name, stale[0], stale[0], dst, at.Name, peerDev.Name, peerDev.MAC)
	if l, ok := d.leaseOf(netip.Prefix{}, peerDev.MAC); ok {
		msg += " (" + leaseText(l) + ")"
	}
	msg += fmt.Sprintf(": %s's neighbour and FDB entries for that peer are stale, and %s dropped the frame addressed to another MAC (OTHERHOST)", sender.Name, peerDev.Name)
	gw := "<peer's VTEP IP>"
	if inner, err := netip.ParseAddr(atDropDst(j)); err == nil {
		if r, ok := sender.RouteTo(inner); ok && r.Gw.IsValid() {
			gw = r.Gw.String()
		}
	}
	restart, why := "restart flanneld on "+sender.Name, ""
	if runs, known := d.flanneldRuns(sender); known && !runs {
		msg += fmt.Sprintf("; no flanneld runs in %s, so nothing updates them", sender.Name)
		restart, why = "start (or restart) flanneld on "+sender.Name, "; find out why it stopped (its log)"
	}
	advice := fmt.Sprintf("%s: it rewrites them from the peer's lease; by hand: ip neigh replace %s lladdr %s dev %s nud permanent; bridge fdb replace %s dev %s dst %s self permanent; bridge fdb del %s dev %s dst %s%s",
		restart, gw, peerDev.MAC, dev.Name, peerDev.MAC, dev.Name, dst, stale[0], dev.Name, dst, why)
	if isCalicoDevice(dev.Name) {
		advice = fmt.Sprintf("restart calico-node on %s so it rewrites the FDB and neighbour entries for the peer's new VTEP MAC %s", sender.Name, peerDev.MAC)
	}
	d.add(j, journey.Finding{Code: CodeNoRoute, Severity: journey.SeverityError, Netns: sender.Name, Message: msg, Advice: advice})
}

// atDropDst is the packet's (inner) destination where it was dropped.
func atDropDst(j *journey.Journey) string {
	if n := len(j.Events); n > 0 && j.Events[n-1].Pkt.Dst.IsValid() {
		return j.Events[n-1].Pkt.Dst.String()
	}
	return j.Packet.Dst
}
