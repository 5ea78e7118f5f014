package diagnose

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
)

// neighHop is where a namespace sends a destination: the gateway (the
// destination itself when on-link), the device, and the gateway's
// neighbour entry state ("" when there is none).
type neighHop struct {
	Addr  netip.Addr
	Dev   string
	State string
}

// neighReasons are the drop reasons of a next hop that could not be
// resolved, and what happened.
var neighReasons = map[string]string{
	"NEIGH_FAILED":     "its address resolution failed",
	"NEIGH_QUEUEFULL":  "too many packets waited for its address resolution",
	"NEIGH_DEAD":       "its neighbour entry was being removed",
	"NEIGH_CREATEFAIL": "no neighbour entry could be created for it",
}

// vxlanOwner is the CNI that writes a VXLAN device's neighbour and FDB
// entries: its name, what to restart, and where the peer's VTEP MAC shows.
type vxlanOwner struct {
	name, restart, peerMAC string
}

// vxlanOwners maps the VXLAN device names CNIs create to their owner.
var vxlanOwners = map[string]vxlanOwner{
	"flannel.1":    {"flannel", "flanneld (the kube-flannel pod of this node)", "the peer node's annotation flannel.alpha.coreos.com/backend-data (VtepMAC)"},
	"vxlan.calico": {"Calico (Felix)", "calico-node on this node", "the peer's vxlan.calico MAC (its Calico node resource, spec.ipv4VXLANTunnelMACAddr)"},
	"cilium_vxlan": {"Cilium", "the cilium agent on this node", "the peer's cilium_vxlan MAC"},
}

// neighFailure explains a packet dropped because the next hop's
// link-layer address could not be resolved: it names the next hop, its
// neighbour entry, and for a CNI's VXLAN device the CNI that should have
// written the entry.
func (d *Diagnoser) neighFailure(j *journey.Journey) {
	v := j.Verdict
	why, ok := neighReasons[v.Reason]
	if v.Reason == "NOT_SPECIFIED" && len(j.Events) > 0 && j.Events[len(j.Events)-1].Pkt.Dst.Is6() {
		why, ok = "its neighbour discovery failed", true // confirmed by the entry's state below
	}
	if !ok || v.Kind != journey.Dropped || len(j.Events) == 0 {
		return
	}
	dst := j.Events[len(j.Events)-1].Pkt.Dst
	hop := neighHop{Addr: dst, Dev: v.Device}
	if d.lookupHop != nil {
		if h, ok := d.lookupHop(v.NetnsInode, dst); ok {
			hop = h
		}
	}
	if v.Reason == "NOT_SPECIFIED" {
		// IPv6 frees the packets that waited for a failed neighbour
		// without a reason (ndisc_error_report): only the entry, still
		// FAILED or INCOMPLETE, tells
		if hop.State != "FAILED" && hop.State != "INCOMPLETE" {
			return
		}
		why += " (the kernel gives packets dropped by a failed IPv6 neighbour no drop reason: NOT_SPECIFIED)"
	}
	entry := "it has no neighbour entry"
	if hop.State != "" {
		entry = "its neighbour entry is " + hop.State
	}
	kind := ""
	if d.linkType(v.NetnsInode, hop.Dev) == "vxlan" {
		kind = " (a VXLAN device)"
	}
	f := journey.Finding{Code: CodeNeighFailed, Severity: journey.SeverityError, Netns: v.Netns,
		Message: fmt.Sprintf("%s could not resolve the link-layer address of the next hop %s on %s%s: %s (%s); %s waited and was dropped (%s)",
			v.Netns, hop.Addr, hop.Dev, kind, why, entry, atDrop(j), v.Reason)}
	switch owner, ok := vxlanOwners[hop.Dev]; {
	case ok:
		f.Advice = fmt.Sprintf("%s writes a permanent neighbour entry for every peer node's VTEP address on %s (%s -> that node's VTEP MAC, plus an FDB entry to its node address) and this one is missing: "+
			"restart %s so that it writes them again, and read its logs; compare ip neigh show dev %s with %s",
			owner.name, hop.Dev, hop.Addr, owner.restart, hop.Dev, owner.peerMAC)
	case kind != "":
		f.Advice = fmt.Sprintf("the VXLAN control plane (the CNI) must write a neighbour entry for %s on %s (ip neigh replace %s lladdr <peer VTEP MAC> dev %s nud permanent) and an FDB entry for that MAC: check the CNI on this node",
			hop.Addr, hop.Dev, hop.Addr, hop.Dev)
	case hop.Addr.Is6():
		f.Advice = fmt.Sprintf("%s does not answer neighbour solicitations on %s: check that it is up, holds that address and is on that link (ip -6 neigh show dev %s; ndisc6 %s %s in %s), and that nothing drops ICMPv6 neighbour discovery; or fix the route that sends traffic through it",
			hop.Addr, hop.Dev, hop.Dev, hop.Addr, hop.Dev, v.Netns)
	default:
		f.Advice = fmt.Sprintf("%s does not answer ARP on %s: check that it is up, holds that address and is on that link (ip neigh show dev %s; arping -I %s %s in %s), or fix the route that sends traffic through it",
			hop.Addr, hop.Dev, hop.Dev, hop.Dev, hop.Addr, v.Netns)
	}
	j.AddFinding(f)
}

// linkType is the kind of device dev in namespace ns, from the node
// state read before the trace ("" when unknown).
func (d *Diagnoser) linkType(ns uint32, dev string) string {
	if d.state == nil || d.state.Namespaces[ns] == nil {
		return ""
	}
	for _, l := range d.state.Namespaces[ns].Links {
		if l.Name == dev {
			return l.Type
		}
	}
	return ""
}

// readNextHop asks the namespace at nsPath for its route to dst and the
// state of the next hop's neighbour entry.
func readNextHop(nsPath string, dst netip.Addr) (neighHop, bool) {
	h, err := netnsutil.NewHandle(nsPath)
	if err != nil {
		return neighHop{}, false
	}
	defer h.Close()
	routes, err := h.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return neighHop{}, false
	}
	hop := neighHop{Addr: dst}
	if gw, ok := netip.AddrFromSlice(routes[0].Gw); ok {
		hop.Addr = gw.Unmap()
	}
	link, err := h.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return neighHop{}, false
	}
	hop.Dev = link.Attrs().Name
	family := unix.AF_INET
	if hop.Addr.Is6() {
		family = unix.AF_INET6
	}
	neighs, err := h.NeighList(routes[0].LinkIndex, family)
	if err != nil {
		return hop, true
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == hop.Addr {
			hop.State = neighState(n.State)
		}
	}
	return hop, true
}

func neighState(s int) string {
	for _, st := range []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_REACHABLE, "REACHABLE"}, {netlink.NUD_STALE, "STALE"},
		{netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"}, {netlink.NUD_FAILED, "FAILED"},
		{netlink.NUD_NOARP, "NOARP"}, {netlink.NUD_PERMANENT, "PERMANENT"},
	} {
		if s&st.bit != 0 {
			return st.name
		}
	}
	return "NONE"
}
