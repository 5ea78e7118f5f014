package diagnose

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nodestate"
)

// publicIPOverwrite is flannel's node annotation that overrides the
// address a node announces as its VTEP (publicIPv6Overwrite: its IPv6 VTEP
// on an IPv6 underlay). Both start with publicIPAnnotations.
const (
	publicIPAnnotations = "flannel.alpha.coreos.com/public-ip"
	publicIPOverwrite   = publicIPAnnotations + "-overwrite"
	publicIPv6Overwrite = publicIPAnnotations + "v6-overwrite"
)

// flannelPublic is flanneld's flag and the node annotation that set the
// VTEP address it announces on a's underlay (IPv4 or IPv6).
func flannelPublic(a netip.Addr) (flag, annotation string) {
	if a.Unmap().Is6() {
		return "--public-ipv6", publicIPv6Overwrite
	}
	return "--public-ip", publicIPOverwrite
}

// vxlanOverhead is what VXLAN adds in front of the inner IP packet: outer
// IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14); over an IPv6
// underlay the outer header is 40 bytes (vxlanOverhead6).
const (
	vxlanOverhead  = 50
	vxlanOverhead6 = 70
)

// overheadFor is VXLAN's overhead with outer destination outer.
func overheadFor(outer netip.Addr) uint32 {
	if outer.Unmap().Is6() {
		return vxlanOverhead6
	}
	return vxlanOverhead
}

// sameFamily: a and b are both IPv4 or both IPv6.
func sameFamily(a, b netip.Addr) bool { return a.Unmap().Is4() == b.Unmap().Is4() }

func knownVTEPs(st *nodestate.State, except uint32) (map[netip.Addr]string, string) {
	m := map[netip.Addr]string{}
	var list []string
	for _, v := range st.VTEPs() {
		if !v.Addr.IsValid() || v.Netns.Inode == except {
			continue
		}
		if _, dup := m[v.Addr]; !dup {
			list = append(list, fmt.Sprintf("%s (%s %s)", v.Addr, v.Netns.Name, v.Device.Name))
		}
		m[v.Addr] = v.Netns.Name
	}
	sort.Strings(list)
	return m, strings.Join(list, ", ")
}

// diedEncapsulated: the journey ended while the packet was encapsulated.
func diedEncapsulated(j *journey.Journey) (journey.Event, bool) {
	if j.Verdict.Kind != journey.Dropped && j.Verdict.Kind != journey.Lost || len(j.Events) == 0 {
		return journey.Event{}, false
	}
	for i := len(j.Events) - 1; i >= 0; i-- {
		e := j.Events[i]
		if e.Kind == journey.KindDrop || e.Kind == journey.KindConsume || e.Kind == journey.KindNF {
			continue
		}
		return e, e.Encap
	}
	return journey.Event{}, false
}

func fate(j *journey.Journey) string {
	v := j.Verdict
	switch v.Kind {
	case journey.Dropped:
		return fmt.Sprintf("the outer packet was dropped in %s at %s (%s)", v.Netns, v.Device, v.Reason)
	case journey.Lost:
		return fmt.Sprintf("the outer packet left %s through %s and was never seen again", v.Netns, v.Device)
	}
	return ""
}

// underlay checks each encapsulation's outer headers against what the
// nodes' VXLAN devices and FDBs say.
func (d *Diagnoser) underlay(j *journey.Journey) {
	st := d.state
	if st == nil {
		return
	}
	for _, enc := range j.Encaps {
		ns := st.Namespaces[enc.NetnsInode]
		if ns == nil {
			continue
		}
		dev, _ := ns.Link(enc.Device)
		dst, _ := netip.ParseAddr(enc.OuterDst)
		src, _ := netip.ParseAddr(enc.OuterSrc)
		vteps, list := knownVTEPs(st, enc.NetnsInode)
		_, died := diedEncapsulated(j)
		peer, known := vteps[dst]
		if node, ok := d.cfg.NodeAddrs[dst]; ok && !known {
			peer, known = "node "+node, true
		}
		// a packet that left toward a peer of which this node sees nothing
		// (no other VTEP here, no cluster node list) cannot be judged
		blind := j.Verdict.Kind == journey.Left && list == "" && len(d.cfg.NodeAddrs) == 0
		devName := enc.Device
		if devName == "" {
			devName = "the VXLAN device"
		}
		switch {
		case !known && !blind:
			msg := fmt.Sprintf("%s in %s sent the packet to VTEP %s, which is not the underlay address of any known node (known VTEPs: %s)", devName, enc.Netns, dst, orNone(list))
			if dev != nil && dev.VXLAN != nil {
				for _, f := range dev.VXLAN.FDB {
					if f.Dst == dst {
						msg += fmt.Sprintf("; its FDB maps %s to %s", f.MAC, dst)
						if owner := vtepByMAC(st, f.MAC); owner != nil {
							msg += fmt.Sprintf(", but that MAC is %s's %s at %s", owner.Netns.Name, owner.Device.Name, owner.Addr)
						}
						break
					}
				}
			}
			if l, ok := d.leaseOfFDBDst(dev, dst); ok {
				msg += "; " + leaseText(l)
			}
			if died {
				msg += "; " + fate(j)
			}
			flag, annotation := flannelPublic(dst)
			advice := "the peer's VTEP address is one this node cannot reach (often its private IP): make flannel announce the reachable address — annotate the peer node with " + annotation + "=<reachable IP> (or start flanneld with " + flag + " / --iface) and restart flannel there; check with `bridge fdb show dev " + enc.Device + "`"
			if isCalicoDevice(enc.Device) {
				advice = "the peer's VTEP address is one this node cannot reach (often its private IP): make calico-node on the peer pick the reachable address — set its " + calicoAutodetectFor(dst) + " (e.g. interface=NAME, can-reach=<a peer's IP>, cidr=<underlay CIDR>, kubernetes-internal-ip) — and restart it; check with `bridge fdb show dev " + enc.Device + "`"
			}
			// the address is one a node holds (a second address flanneld
			// was told to announce): say which of its addresses works
			if owner, _, ok := st.OwnerOf(dst); ok && owner.Inode != enc.NetnsInode {
				msg += fmt.Sprintf("; %s holds %s", owner.Name, dst)
				if alt, ok := d.reachableAlternative(j, owner, dst); ok {
					msg += fmt.Sprintf(", but the underlay routes only its other address %s", alt)
					advice = announceAdvice(owner.Name, dst, alt, enc.Device)
				}
			}
			d.add(j, journey.Finding{Code: CodeVXLANDstUnknown, Severity: journey.SeverityError, Netns: enc.Netns, Message: msg, Advice: advice})
		case died && j.Verdict.Reason != "" && isRouteReason(j.Verdict.Reason) || died && j.Verdict.Kind == journey.Lost && !journey.ConsumedOnArrival(j.Events):
			msg := fmt.Sprintf("VTEP %s is %s's, but it is unreachable from %s: %s", dst, peer, enc.Netns, fate(j))
			if l, ok := d.leaseOfFDBDst(dev, dst); ok {
				msg += "; " + leaseText(l)
			}
			advice := fmt.Sprintf("fix the underlay route to %s (ip route get %s in %s), or have the peer announce a reachable address", dst, dst, enc.Netns)
			if owner := vtepNetns(st, dst, enc.NetnsInode); owner != nil {
				if alt, ok := d.reachableAlternative(j, owner, dst); ok {
					// the peer announces (and sends from) an address the
					// underlay does not route, while it holds one it does:
					// a wrong announcement, not a missing route
					msg += fmt.Sprintf("; %s also holds %s, which the underlay routes", owner.Name, alt)
					advice = announceAdvice(owner.Name, dst, alt, enc.Device)
				}
			}
			d.add(j, journey.Finding{Code: CodeVXLANDstUnknown, Severity: journey.SeverityError, Netns: enc.Netns,
				Message: msg, Advice: advice})
		}
		if dev != nil && src.IsValid() {
			knownAs := st.KnownAs(dev.MAC, enc.NetnsInode)
			if len(knownAs) > 0 && knownAs[src] == nil {
				var addrs []string
				for a, who := range knownAs {
					addrs = append(addrs, fmt.Sprintf("%s (FDB of %s)", a, strings.Join(who, ", ")))
				}
				sort.Strings(addrs)
				msg := fmt.Sprintf("%s in %s sends with outer source %s, but its peers know this VTEP (%s) as %s", devName, enc.Netns, src, dev.MAC, strings.Join(addrs, ", "))
				lease, hasLease := d.leaseOf(netip.Prefix{}, dev.MAC)
				if hasLease {
					msg += "; " + leaseText(lease)
				}
				if died {
					msg += "; " + fate(j)
				}
				known := "<the address peers know>"
				if len(knownAs) == 1 {
					for a := range knownAs {
						known = a.String()
					}
				} else if hasLease && knownAs[lease.PublicIP] != nil {
					known = lease.PublicIP.String()
				}
				d.add(j, journey.Finding{Code: CodeVXLANSrcMismatch, Severity: journey.SeverityError, Netns: enc.Netns, Message: msg,
					Advice: srcMismatchAdvice(src, known, devName)})
			} else if lease, ok := d.leaseOf(netip.Prefix{}, dev.MAC); ok && len(knownAs) == 0 && lease.PublicIP.IsValid() && lease.PublicIP != src {
				// no peer FDB here: flannel's lease says how peers know it
				msg := fmt.Sprintf("%s in %s sends with outer source %s, but %s", devName, enc.Netns, src, leaseText(lease))
				if died {
					msg += "; " + fate(j)
				}
				d.add(j, journey.Finding{Code: CodeVXLANSrcMismatch, Severity: journey.SeverityError, Netns: enc.Netns, Message: msg,
					Advice: srcMismatchAdvice(src, lease.PublicIP.String(), devName)})
			} else if len(knownAs) == 0 && len(d.cfg.NodeIPs) > 0 && !containsAddr(d.cfg.NodeIPs, src) {
				d.add(j, journey.Finding{Code: CodeVXLANSrcMismatch, Severity: journey.SeverityError, Netns: enc.Netns,
					Message: fmt.Sprintf("%s in %s sends with outer source %s, not the node's public IP %v", devName, enc.Netns, src, d.cfg.NodeIPs),
					Advice:  srcMismatchAdvice(src, d.cfg.NodeIPs[0].String(), devName)})
			}
		}
	}
	d.missingPodRoute(j)
	d.staleVTEPMAC(j)
	d.mtu(j)
	d.tooBig(j)
}

// announceAdvice: node announces bad as its VTEP address; alt is one its
// peers reach.
func announceAdvice(node string, bad, alt netip.Addr, dev string) string {
	if isCalicoDevice(dev) {
		return fmt.Sprintf("%s announces VTEP address %s, which its peers cannot reach: make calico-node there pick %s — set %s so it picks %s (e.g. cidr=%s/%d, interface=<the device holding it>, can-reach=<a peer's IP>, kubernetes-internal-ip) and restart calico-node; the peers' FDB entries (`bridge fdb show dev %s`) follow", node, bad, alt, calicoAutodetectFor(alt), alt, alt, alt.BitLen(), dev)
	}
	flag, annotation := flannelPublic(alt)
	return fmt.Sprintf("%s announces VTEP address %s, which its peers cannot reach: make flannel there announce %s — start flanneld with %s=%s (or --iface naming the interface that holds it), or annotate the node with %s=%s — and restart flannel; the peers' FDB entries (`bridge fdb show dev %s`) follow", node, bad, alt, flag, alt, annotation, alt, dev)
}

// vtepNetns is the namespace (other than except) whose VXLAN device uses
// addr as its local address.
func vtepNetns(st *nodestate.State, addr netip.Addr, except uint32) *nodestate.Netns {
	for _, v := range st.VTEPs() {
		if v.Addr == addr && v.Netns.Inode != except {
			return v.Netns
		}
	}
	return nil
}

// reachableAlternative finds another underlay address of owner (not dst,
// not on a VXLAN device, a bridge or loopback, not inside a pod CIDR) that
// the namespace where the outer packet died has a route to.
func (d *Diagnoser) reachableAlternative(j *journey.Journey, owner *nodestate.Netns, dst netip.Addr) (netip.Addr, bool) {
	at := d.state.Namespaces[j.Verdict.NetnsInode]
	if at == nil || j.Verdict.Kind != journey.Dropped {
		return netip.Addr{}, false
	}
	for _, l := range owner.Links {
		if l.Loopback || l.VXLAN != nil || l.Type == "bridge" {
			continue
		}
		for _, p := range l.Addrs {
			a := p.Addr()
			if a == dst || !sameFamily(a, dst) || a.IsLoopback() || a.IsLinkLocalUnicast() {
				continue
			}
			if _, _, inPods := d.state.PodCIDROf(a); inPods {
				continue
			}
			if _, ok := at.RouteTo(a); ok {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

func isRouteReason(r string) bool {
	return r == "IP_INNOROUTES" || r == "IP_OUTNOROUTES" || strings.HasPrefix(r, "NEIGH_")
}

func vtepByMAC(st *nodestate.State, mac string) *nodestate.VTEP {
	for _, v := range st.VTEPs() {
		if v.Device.MAC == mac {
			v := v
			return &v
		}
	}
	return nil
}

// missingPodRoute: a packet for another node's pod CIDR left a node
// unencapsulated through a device other than the overlay.
func (d *Diagnoser) missingPodRoute(j *journey.Journey) {
	if len(j.Events) == 0 || j.Verdict.Kind == journey.Delivered {
		return
	}
	origin := j.Events[0].Netns
	for _, e := range j.Events {
		if e.Kind != journey.KindTx || e.Encap || e.Netns == origin {
			continue
		}
		ns := d.state.Namespaces[e.Netns]
		owner, cidr, ok := d.state.PodCIDROf(e.Pkt.Dst)
		if ns == nil || !ok || owner.Inode == e.Netns {
			continue
		}
		if l, ok := ns.Link(e.Ifname); ok && l.VXLAN != nil {
			return // it left through an overlay device
		}
		overlay := overlayFor(ns, e.Pkt.Dst)
		if overlay == "" {
			return
		}
		msg := fmt.Sprintf("%s has no route for %s (%s's pod CIDR) via %s: %s -> %s left through %s unencapsulated", ns.Name, cidr, owner.Name, overlay, j.Packet.Src, e.Pkt.Dst, e.Ifname)
		advice := fmt.Sprintf("restore the pod-CIDR route in %s (flannel writes `ip route add %s via <peer VTEP IP> dev %s onlink` for every node; restart flanneld if it is missing)", ns.Name, cidr, overlay)
		if lease, ok := d.leaseOf(cidr, ""); ok {
			msg += "; " + leaseText(lease) + ", so flanneld should have written the route"
		}
		if runs, known := d.flanneldRuns(ns); known && !runs {
			msg += fmt.Sprintf("; no flanneld runs in %s, so nothing writes or repairs its routes", ns.Name)
			advice = fmt.Sprintf("start (or restart) flanneld on %s (systemctl restart flanneld, or delete that node's kube-flannel pod): on start it reads every node's lease and writes the route `%s via %s dev %s onlink`, its neighbour and FDB entries; find out why it stopped (its log)", ns.Name, cidr, cidr.Addr(), overlay)
		} else if known && runs {
			advice = fmt.Sprintf("flanneld runs in %s but has not written the route for %s: check its log and the lease of %s (etcd key .../subnets/%s, or the node's flannel annotations), then restart it", ns.Name, cidr, cidr, strings.Replace(cidr.String(), "/", "-", 1))
		}
		d.add(j, journey.Finding{Code: CodeNoRoute, Severity: journey.SeverityError, Netns: ns.Name, Message: msg, Advice: advice})
		return
	}
}

// mtu: the packet plus encapsulation did not fit a device on its way.
func (d *Diagnoser) mtu(j *journey.Journey) {
	if j.Verdict.Kind != journey.Dropped && j.Verdict.Kind != journey.Lost {
		return
	}
	var inner uint16
	var overlayMTU, overlayNS uint32
	var overlayDev string
	for _, e := range j.Events {
		if e.Pkt.IPLen > inner {
			inner = e.Pkt.IPLen
		}
		if e.Kind == journey.KindTx && !e.Encap && isOverlay(d.state, e.Netns, e.Ifname) {
			overlayMTU, overlayDev, overlayNS = e.MTU, e.Ifname, e.Netns
		}
	}
	if inner == 0 {
		return
	}
	encapsulated := len(j.Encaps) > 0 || overlayDev != ""
	size := uint32(inner)
	var overhead uint32
	if encapsulated {
		overhead = d.encapOverhead(j, overlayNS, overlayDev)
		size += overhead
	}
	// the smallest MTU of the underlay devices the journey touched, and of
	// the device the drop point would have sent it through
	var limit uint32
	var limitDev, limitNS string
	consider := func(mtu uint32, dev, ns string) {
		if mtu != 0 && (limit == 0 || mtu < limit) {
			limit, limitDev, limitNS = mtu, dev, ns
		}
	}
	for _, e := range j.Events {
		if e.Encap && e.MTU != 0 {
			consider(e.MTU, e.Ifname, j.NetnsName(e.Netns))
		}
	}
	if ns := d.state.Namespaces[j.Verdict.NetnsInode]; ns != nil && encapsulated {
		if enc := lastEncap(j); enc != nil {
			if dev := routeDevice(ns, enc.Outer.Dst); dev != nil {
				consider(uint32(dev.MTU), dev.Name, ns.Name)
			}
			// a path MTU the node learned from an ICMP "fragmentation needed"
			if d.cfg.Registry == nil {
				// no way into the namespace: device MTUs only
			} else if path, ok := d.cfg.Registry.Path(netnsutil.Inode(ns.Inode)); ok {
				if dev, mtu := routeGet(path, enc.Outer.Dst); mtu != 0 {
					consider(uint32(mtu), dev+" (path MTU to "+enc.Outer.Dst.String()+" learned from ICMP)", ns.Name)
				}
			}
		}
	}
	if limit == 0 || size <= limit {
		return
	}
	msg := fmt.Sprintf("a %d-byte packet", inner)
	if encapsulated {
		msg += fmt.Sprintf(" + %d bytes of VXLAN = %d bytes", overhead, size)
	}
	msg += fmt.Sprintf(" does not fit the MTU %d of %s in %s", limit, limitDev, limitNS)
	if overlayMTU != 0 {
		msg += fmt.Sprintf(" (the overlay %s allows %d, so the underlay needs %d)", overlayDev, overlayMTU, overlayMTU+overhead)
	}
	msg += fmt.Sprintf("; %s in %s (%s)", j.Verdict.Kind, j.Verdict.Netns, orNone(j.Verdict.Reason))
	d.add(j, journey.Finding{Code: CodeMTUExceeded, Severity: journey.SeverityError, Netns: limitNS, Message: msg,
		Advice: mtuAdvice(limit, size, overhead, j.Packet.Src, overlayDev)})
}

// encapOverhead is what the journey's VXLAN adds: by the outer header
// seen, else by the family of the local address of the overlay device the
// packet was sent through (overlayDev in namespace overlayNS).
func (d *Diagnoser) encapOverhead(j *journey.Journey, overlayNS uint32, overlayDev string) uint32 {
	if enc := lastEncap(j); enc != nil && enc.Outer.Dst.IsValid() {
		return overheadFor(enc.Outer.Dst)
	}
	if ns := d.state.Namespaces[overlayNS]; ns != nil {
		if l, ok := ns.Link(overlayDev); ok && l.VXLAN != nil && l.VXLAN.Local.IsValid() {
			return overheadFor(l.VXLAN.Local)
		}
	}
	return vxlanOverhead
}

// tooBig: a node forwarding the packet refused it for the MTU of its next
// device (PKT_TOO_BIG: IPv6 routers never fragment, nor do IPv4 ones with
// DF set) and told the sender with an ICMP error. mtu() explains the
// encapsulated case; this one the plain next hop.
func (d *Diagnoser) tooBig(j *journey.Journey) {
	v := &j.Verdict
	if v.Kind != journey.Dropped || v.Reason != "PKT_TOO_BIG" || hasCode(j, CodeMTUExceeded) || len(j.Events) == 0 {
		return
	}
	var size uint32
	for _, e := range j.Events {
		size = max(size, uint32(e.Pkt.IPLen))
	}
	last := j.Events[len(j.Events)-1].Pkt
	limit, dev := uint32(0), ""
	if ns := d.state.Namespaces[v.NetnsInode]; ns != nil {
		if l := routeDevice(ns, last.Dst); l != nil && l.MTU > 0 {
			limit, dev = uint32(l.MTU), l.Name
		}
	}
	var told uint32 // the MTU the ICMP error gave the sender
	for _, e := range j.ErrorEvents {
		if e.Pkt.ICMPMTU != 0 {
			told = e.Pkt.ICMPMTU
			break
		}
	}
	if limit == 0 {
		limit, dev = told, "the next hop"
	}
	if limit == 0 || size == 0 {
		return
	}
	v6 := last.Dst.Unmap().Is6()
	msg := fmt.Sprintf("a %d-byte packet does not fit the MTU %d of %s, its next device in %s: dropped there (PKT_TOO_BIG)", size, limit, dev, v.Netns)
	icmp := "ICMP fragmentation needed"
	if v6 {
		msg += "; IPv6 routers never fragment"
		icmp = "ICMPv6 Packet Too Big"
	} else {
		msg += "; the sender set DF (don't fragment)"
	}
	if told != 0 {
		msg += fmt.Sprintf(", and the sender was sent an %s with MTU %d", icmp, told)
	}
	advice := fmt.Sprintf("make the pods' MTU (and the overlay's) at most %d, or raise the MTU of %s in %s to the pods' MTU; and let %s through every firewall on the way, so path MTU discovery can work", limit, dev, v.Netns, icmp)
	if fm := d.flannelMTU(v.NetnsInode); fm > int(limit) && isOverlay(d.state, v.NetnsInode, dev) {
		// flanneld's FLANNEL_MTU is the underlay's minus IPv4 VXLAN's 50
		// bytes, also on a dual-stack node whose IPv6 device takes 70
		msg += fmt.Sprintf("; flannel's subnet file gives the pods FLANNEL_MTU=%d, %d bytes more than %s carries (flanneld takes IPv4 VXLAN's 50 bytes off the underlay MTU even where its IPv6 device needs 70)", fm, fm-int(limit), dev)
		advice = fmt.Sprintf("give the pods an MTU of at most %d: set \"mtu\": %d in the delegate of flannel's CNI config (kube-flannel's cni-conf.json), which flannel's CNI plugin then uses instead of FLANNEL_MTU, and recreate the pods; raising the underlay MTU moves FLANNEL_MTU and %s's MTU together and does not close the gap", limit, limit, dev)
	}
	if v6 && limit < ipv6MinMTU {
		advice = fmt.Sprintf("raise the MTU of %s in %s to at least %d: IPv6 needs %d on every link; and let %s through every firewall on the way", dev, v.Netns, ipv6MinMTU, ipv6MinMTU, icmp)
	}
	d.add(j, journey.Finding{Code: CodeMTUExceeded, Severity: journey.SeverityError, Netns: v.Netns, Message: msg, Advice: advice})
}

// hasCode reports whether j has a finding with code.
func hasCode(j *journey.Journey, code string) bool {
	for _, f := range j.Findings {
		if f.Code == code {
			return true
		}
	}
	return false
}

// ipv6MinMTU is the smallest MTU an IPv6 link may have (RFC 8200): the
// kernel disables IPv6 on a device set below it.
const ipv6MinMTU = 1280

// mtuAdvice is the fix for a size-byte packet over a path whose smallest
// MTU is limit, overhead the bytes of encapsulation (0: none). An IPv6
// packet (src) over an overlay that would have to go below 1280 cannot be
// fixed on the overlay side: only the underlay can.
func mtuAdvice(limit, size, overhead uint32, src, overlayDev string) string {
	if a, err := netip.ParseAddr(src); err == nil && a.Unmap().Is6() && limit < ipv6MinMTU+overhead {
		return fmt.Sprintf("raise the underlay MTU to at least %d on every hop: IPv6 needs an MTU of at least %d on every link, so the overlay (pod and %s MTU) cannot go below %d and the underlay must carry %d + %d bytes",
			max(size, ipv6MinMTU+overhead), ipv6MinMTU, orNone(overlayDev), ipv6MinMTU, ipv6MinMTU, overhead)
	}
	return fmt.Sprintf("make the overlay MTU at most %d (pod and %s MTU), or raise the underlay MTU to at least %d on every hop", limit-overhead, orNone(overlayDev), size)
}

func lastEncap(j *journey.Journey) *journey.Event {
	for i := len(j.Events) - 1; i >= 0; i-- {
		if j.Events[i].Encap {
			return &j.Events[i]
		}
	}
	return nil
}

// overlayFor is the VXLAN device of ns that carries dst's IP version: the
// one with an address of that version (flannel gives flannel.1 the IPv4
// one and flannel-v6.1 the IPv6 one on a node with an IPv6 underlay, and
// flannel.1 both over an IPv4 underlay), else the first; "" without one.
func overlayFor(ns *nodestate.Netns, dst netip.Addr) string {
	first := ""
	for _, l := range ns.Links {
		if l.VXLAN == nil {
			continue
		}
		if first == "" {
			first = l.Name
		}
		for _, p := range l.Addrs {
			if sameFamily(p.Addr(), dst) {
				return l.Name
			}
		}
	}
	return first
}

func isOverlay(st *nodestate.State, ino uint32, dev string) bool {
	ns := st.Namespaces[ino]
	if ns == nil {
		return false
	}
	l, ok := ns.Link(dev)
	return ok && l.VXLAN != nil
}

// routeDevice is the device of the longest-prefix route for dst.
func routeDevice(ns *nodestate.Netns, dst netip.Addr) *nodestate.Link {
	r, ok := ns.RouteTo(dst)
	if !ok {
		return nil
	}
	if l, ok := ns.Link(r.Dev); ok {
		return l
	}
	return nil
}
